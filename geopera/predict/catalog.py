"""STAC Items for what ``geopera predict`` wrote, and the output folder's ``catalog.json``."""

from pathlib import Path

import pystac

from geopera.core.stac import write_items
from geopera.finetune.base import FinetuneTask
from geopera.predict.request import PredictRequest, PredictSummary


def describe_outputs(
    task: FinetuneTask, request: PredictRequest, summary: PredictSummary
) -> list[Path]:
    """Write an item beside each output file (see :mod:`geopera.core.stac`).

    Returns:
        The item files.
    """
    spec = task.spec
    properties = {
        "geopera:task": spec.task,
        "geopera:model": str(request.model),
        "geopera:weights": str(spec.weights),
        "geopera:inputs": [str(p) for p in request.inputs],
    }
    model = request.model / "model.ckpt" if request.model.is_dir() else request.model
    links = [
        pystac.Link("via", str(model.resolve()), "application/octet-stream", "fine-tuned model")
    ]
    files = [summary.output] + ([summary.probabilities] if summary.probabilities else [])
    by_folder: dict[Path, list[Path]] = {}
    for file in files:
        by_folder.setdefault(file.parent, []).append(file)
    return [
        item
        for group in by_folder.values()
        for item in write_items(group, properties, f"geopera predict {spec.task} outputs", links)
    ]
