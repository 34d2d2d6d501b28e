"""A fine-tuned model from its ``model.ckpt``: the task classes and :func:`load_finetuned`.

This is what other stages (``geopera predict``, ``geopera evaluate``) import from fine-tuning:
the model, never the fine-tuning orchestration. The checkpoint is read with
``torch.load(weights_only=True)`` (no code in it runs), and the model is rebuilt from its
:class:`~geopera.core.contracts.FinetunedSpec`.
"""

import os
from pathlib import Path
from typing import Any

import torch

from geopera.core.contracts import ContractError, FinetunedSpec
from geopera.finetune.base import FinetuneTask
from geopera.finetune.registry import TASKS


def task_class(name: Any, origin: str = "") -> type[FinetuneTask]:
    """The class of the task a spec names.

    Raises:
        ContractError: If no task has that name.
    """
    if not isinstance(name, str) or name not in TASKS:
        where = f" in {origin}" if origin else ""
        raise ContractError(f"unknown task {name!r}{where}; tasks are {', '.join(TASKS)}")
    return TASKS[name].load()


def read_spec(raw: dict[str, Any], origin: str = "") -> FinetunedSpec:
    """A stored spec, its task section read by the class of the task it names.

    Args:
        raw: The stored mapping (``format_version`` included).
        origin: Where it came from, for messages.

    Returns:
        The spec.

    Raises:
        ContractError: On an unknown task, format or field.
    """
    section = task_class(raw.get("task"), origin).Head
    head = raw.get("head")
    if isinstance(head, dict):  # else the spec's own checks say what is wrong (format, fields)
        raw = {**raw, "head": section.from_dict(head, origin)}
    return FinetunedSpec.from_dict(raw, origin)


def build_task(spec: FinetunedSpec) -> FinetuneTask:
    """A freshly initialised task for a spec.

    Args:
        spec: The spec.

    Returns:
        The task.

    Raises:
        ContractError: If the spec names an unknown task.
    """
    return task_class(spec.task)(spec)


def load_finetuned(path: str | os.PathLike[str], map_location: str = "cpu") -> FinetuneTask:
    """Rebuild a fine-tuned task from ``model.ckpt`` (no training data or weights needed).

    Args:
        path: ``model.ckpt`` of a fine-tuning run (or its folder).
        map_location: Device to load onto.

    Returns:
        The task in eval mode.

    Raises:
        FileNotFoundError: If the checkpoint does not exist.
        ContractError: If it is not a geopera fine-tuning checkpoint, or its spec has a format
            this geopera does not know.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give DIR/model.ckpt of `geopera finetune`")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling refused or a damaged file
        raise ContractError(
            f"{path} cannot be read as a checkpoint ({type(err).__name__}): is it a "
            "`geopera finetune` model.ckpt?"
        ) from err
    raw = ckpt.get("hyper_parameters", {}).get("spec") if isinstance(ckpt, dict) else None
    if not isinstance(raw, dict):
        raise ContractError(f"{path} is not a `geopera finetune` checkpoint (no task spec inside)")
    task = build_task(read_spec(raw, str(path)))
    task.load_state_dict(ckpt["state_dict"])
    return task.eval()
