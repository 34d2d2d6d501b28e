"""``geopera evaluate``: frozen-feature probes of several backbones on one labelled set.

For every backbone: features of every image (cached), label-free health on all of them, then
per seed a spatially disjoint train/val/test split (whole groups, :mod:`geopera.data.labelled.sets`)
and every protocol's test predictions. A row's value is the mean over seeds; its interval a
percentile bootstrap over test samples. Outputs are written into a staged folder that becomes
``--out`` only when complete; an existing ``--out`` is never overwritten.
"""

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geopera import __version__
from geopera.core.errors import GeoperaError
from geopera.core.outputs import require_new_folder, staged_folder
from geopera.core.ranks import launch_rank
from geopera.data.labelled.sets import LabelledSet
from geopera.evaluate.features import Features, extract
from geopera.evaluate.protocols import PROTOCOLS, run_row
from geopera.evaluate.report import write
from geopera.evaluate.scoring import (
    ClassDetail,
    Difference,
    Headline,
    ScoredRow,
    chance_rows,
    class_detail,
    differences,
    headline_of,
    majority_outcomes,
    metrics_of,
    score_rows,
)
from geopera.metrics.health import Health, health


@dataclass
class Evaluation:
    """What ``evaluate`` wrote.

    Attributes:
        out: The output folder.
        results: The content of ``results.json``.
        n_images: Images evaluated on.
        classes: Their class names.
        seeds: Splits (seeds) each row is averaged over.
        rows: Every scored row (backbones and baselines).
        differences: The paired differences between backbones.
        health: Each backbone's feature health, by weights.
    """

    out: Path
    results: dict[str, Any]
    n_images: int
    classes: list[str]
    seeds: int
    rows: list[ScoredRow]
    differences: list[Difference]
    health: dict[str, Health]


def check_protocols(protocols: Sequence[str], data: LabelledSet) -> list[str]:
    """The result rows of the protocols (``all``: every one the data allows).

    Raises:
        ValueError: If a protocol is unknown or ``dense`` is asked of image-level labels.
    """
    names = list(protocols)
    if "all" in names:
        names = [p for p in PROTOCOLS if p != "dense" or data.masks is not None]
    unknown = [p for p in names if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocol(s) {unknown}; choose from {', '.join(PROTOCOLS)}, all")
    if "dense" in names and data.masks is None:
        raise ValueError(
            "the dense protocol needs per-pixel labels: give rasters with --labels (a label "
            "raster or polygons), not image-level classes"
        )
    return [row for p in dict.fromkeys(names) for row in PROTOCOLS[p]]


def evaluate(
    protocols: Sequence[str],
    weights: Sequence[str],
    data: LabelledSet,
    out: Path,
    seeds: int = 3,
    cache: Path | None = None,
    device: torch.device | None = None,
    batch_size: int = 64,
    progress: Callable[[str, int, int], None] | None = None,
    mapping: dict[str, str] | None = None,
    devices: int = 1,
    num_nodes: int = 1,
) -> Evaluation | None:
    """Judge backbones on a labelled set (see the module docstring).

    Args:
        protocols: ``knn``, ``linear``, ``dense`` or ``all``.
        weights: Backbones, anything ``--weights`` accepts (each at most once).
        data: The labelled set.
        out: New output folder.
        seeds: Number of splits (seeds 0 .. seeds - 1).
        cache: Feature cache folder (None: no cache).
        device: Where the forward passes run.
        batch_size: Images per forward pass.
        progress: Called with (weights, images done, total) while extracting.
        mapping: ``--bands`` pairs (backbone band or common name -> data band), or None.
        devices: Processes per node sharing the feature extraction; the probes run once.
        num_nodes: Nodes (started by torchrun or srun).

    Returns:
        The output folder and the results.
    """
    _check(weights, seeds, out)
    rows = check_protocols(protocols, data)
    splits = [data.splits(seed) for seed in range(seeds)]
    _warn_unseen_classes(data, splits)
    features: dict[str, Features] = {}
    for w in weights:
        hook = (lambda d, t, w=w: progress(w, d, t)) if progress is not None else None
        ranks = {"devices": devices, "num_nodes": num_nodes}
        features[w] = extract(w, data, cache, device, batch_size, hook, mapping, **ranks)
    if launch_rank() != 0:  # one of several processes torchrun or srun started
        return None  # rank 0 scores, writes and reports
    scores = _scores(features, rows, data, splits)
    healths = {w: health(f.pooled) for w, f in features.items()}
    results = _results(data, seeds, features, scores, healths)
    try:
        with staged_folder(out) as work:
            write(results, work)
    except FileExistsError as err:  # created by someone else meanwhile
        raise GeoperaError(str(err)) from err
    n = int(data.images.shape[0])
    return Evaluation(
        out, results, n, data.classes, seeds, scores.rows, scores.differences, healths
    )


def _check(weights: Sequence[str], seeds: int, out: Path) -> None:
    """Refuse an existing output, no or repeated backbones, and fewer than one seed."""
    require_new_folder(out)
    if not weights:
        raise ValueError("give at least one backbone with --weights")
    duplicates = sorted({w for w in weights if list(weights).count(w) > 1})
    if duplicates:
        raise ValueError(f"--weights names {duplicates} more than once")
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")


def _warn_unseen_classes(data: LabelledSet, splits: list[np.ndarray]) -> None:
    """Warn about test classes that have no training image in a split."""
    for seed, split in enumerate(splits):
        seen = set(data.labels[split != "test"].tolist())
        missing = sorted(set(data.labels[split == "test"].tolist()) - seen)
        if missing:
            warnings.warn(
                f"seed {seed}: class(es) {[data.classes[m] for m in missing]} of the test split "
                "have no training image (too few spatial groups)",
                stacklevel=3,
            )


@dataclass
class _Scores:
    """Everything scored: rows (baselines included), per-class detail, paired differences."""

    headline: Headline
    rows: list[ScoredRow]
    details: list[ClassDetail]
    differences: list[Difference]


def _scores(
    features: dict[str, Features], rows: list[str], data: LabelledSet, splits: list[np.ndarray]
) -> _Scores:
    """Every backbone's rows, the baselines' and the differences between backbones."""
    k, headline = len(data.classes), headline_of(data)
    outcomes = {
        (w, row): [run_row(row, f, data, split, seed) for seed, split in enumerate(splits)]
        for w, f in features.items()
        for row in rows
    }
    scored = [
        r
        for (w, row), outs in outcomes.items()
        for r in score_rows(w, row, outs, metrics_of(row, k, headline), features[w].band_rule)
    ]
    for kind in dict.fromkeys("pixel" if row == "dense" else "image" for row in rows):
        row = "dense" if kind == "pixel" else "image"  # the majority is the same for every probe
        majority = majority_outcomes(row, data, splits)
        scored += score_rows("majority", kind, majority, metrics_of(row, k, headline))
    if any(row != "dense" for row in rows):
        scored += chance_rows(data, splits, headline)
    details = [class_detail(w, row, outs, k) for (w, row), outs in outcomes.items()]
    return _Scores(headline, scored, details, differences(outcomes, rows, headline, k))


def _results(
    data: LabelledSet,
    seeds: int,
    features: dict[str, Features],
    scores: _Scores,
    healths: dict[str, Health],
) -> dict[str, Any]:
    """What results.json holds: the set, the backbones, every row and the feature health."""
    return {
        "geopera": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": data.origin,
        "classes": data.classes,
        "n_images": int(data.images.shape[0]),
        "image_size": int(data.images.shape[-1]),
        "seeds": seeds,
        "backbones": {
            w: {
                "model": f.model,
                "origin": f.origin,
                "bands": f.band_names,
                "band_rule": f.band_rule,
            }
            for w, f in features.items()
        },
        "headline": {"image": scores.headline.classification, "dense": "mIoU"},
        "imbalance": scores.headline.imbalance,
        "rows": [asdict(r) for r in scores.rows],
        "classes_detail": [asdict(d) for d in scores.details],
        "differences": [asdict(d) | {"sentence": d.sentence()} for d in scores.differences],
        "health": [{"weights": w, **asdict(h)} for w, h in healths.items()],
    }
