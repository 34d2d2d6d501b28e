"""What every predict writer checks and shares: the model, its task's writer, inputs, tiling."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geopera.core.contracts import FinetunedSpec
from geopera.data.labelled.windows import RasterInput
from geopera.finetune.base import FinetuneTask
from geopera.finetune.checkpoint import load_finetuned
from geopera.finetune.registry import TASKS
from geopera.predict.tiled import PredictError


def tiling(spec: FinetunedSpec, overlap: int | None) -> tuple[int, int]:
    """Tile size (the chip size) and overlap (default: a quarter of it)."""
    tile = int(spec.chip_size)
    overlap = tile // 4 if overlap is None else overlap
    if not 0 <= overlap < tile:
        raise PredictError(
            f"--overlap must be in [0, {tile - 1}] for {tile} px tiles, got {overlap}"
        )
    return tile, overlap


def written_by(spec: FinetunedSpec, writer: Callable[..., Any]) -> None:
    """Refuse a model whose task has another predict writer (its command is named).

    Raises:
        PredictError: If the spec's task does not predict with ``writer``.
    """
    if TASKS[spec.task].predict() is not writer:
        raise PredictError(f"the model is a {spec.task} model; run `geopera predict {spec.task}`")


def check_inputs(spec: FinetunedSpec, inputs: list[str]) -> None:
    """As many rasters as the task reads: one, or two dates for change.

    Raises:
        PredictError: If the count differs.
    """
    info = TASKS[spec.task]
    if len(inputs) != info.inputs:
        raise PredictError(
            f"the model is a {spec.task} model; it needs "
            + ("--input and --after" if info.inputs == 2 else "one --input")
        )


def load_task(model: str | os.PathLike[str] | FinetuneTask) -> FinetuneTask:
    """The model itself, or the one its ``model.ckpt`` rebuilds."""
    return model if isinstance(model, FinetuneTask) else load_finetuned(model)


def close_inputs(opened: list[RasterInput], *scratch: Path | None) -> None:
    """Close the inputs and remove scratch files left by a failure."""
    for inp in opened:
        inp.dataset.close()
    for path in scratch:
        if path is not None and path.exists():
            path.unlink()
