"""kNN probe: how well frozen teacher features separate labelled samples, during pretraining.

A probe set is either

* a labelled **vector file** (points or polygons with a class column): a patch of the training
  archive is read around each feature's centroid, from the first source that contains it; or
* a **chip folder** with ``labels.csv`` (columns ``file`` or ``path``/``tile``, and ``label`` or
  ``class``) and rasters with the same band count as the training bands.

The score is leave-one-out k-nearest-neighbour accuracy (cosine similarity, majority vote) on
the teacher's class token of each sample's centre crop, normalised like the training data.
"""

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
import torch
import torch.nn.functional as F
from torch import Tensor

from geopera.core.errors import GeoperaError
from geopera.data.labelled.sets import LABEL_COLUMNS, from_chip_table
from geopera.data.sampling.sampler import SourceSampling
from geopera.metrics.probes import knn_predict
from geopera.models.vit import encode_visible
from geopera.transforms.normalise import scale_unit


@dataclass
class ProbeSet:
    """Labelled samples for the kNN probe.

    Attributes:
        images: (N, C, S, S) raw pixel values.
        sources: (N,) source index used for scaling (0 for chip folders).
        labels: (N,) integer labels.
        classes: Class names, indexed by label.
        p2: (C,) own scaling for chip folders (other sensors); None: the training sources'.
        p98: (C,) upper percentiles to go with ``p2``.
    """

    images: Tensor
    sources: Tensor
    labels: Tensor
    classes: list[str]
    p2: Tensor | None = None
    p98: Tensor | None = None


def _label_column(frame: gpd.GeoDataFrame, path: Path) -> str:
    for name in LABEL_COLUMNS:
        if name in frame.columns:
            return name
    raise GeoperaError(
        f"probe file {path} has no label column; name one of {', '.join(LABEL_COLUMNS)} "
        f"(columns: {', '.join(c for c in frame.columns if c != 'geometry')})"
    )


def _from_vector(path: Path, sources: list[SourceSampling], size: int) -> ProbeSet:
    frame = gpd.read_file(path)
    if frame.crs is None:
        frame = frame.set_crs(4326)
    column = _label_column(frame, path)
    images, source_ids, names = [], [], []
    for i, s in enumerate(sources):
        local = frame.to_crs(s.source.crs.to_wkt())
        rx, ry = s.source.res
        origin_x, origin_y = s.source.items[0].bounds[0], s.source.items[0].bounds[3]
        for geom, label in zip(local.geometry, local[column], strict=True):
            c = geom.centroid
            # the patch around the centroid, snapped to the source grid
            x0 = origin_x + round((c.x - size * rx / 2 - origin_x) / rx) * rx
            y1 = origin_y - round((origin_y - c.y - size * ry / 2) / ry) * ry
            box = (x0, y1 - size * ry, x0 + size * rx, y1)
            if not s.source.footprint.contains(shapely.box(*box)):
                continue
            image = s.reader.read(*box)
            images.append(torch.from_numpy(image.astype(np.float32)))
            source_ids.append(i)
            names.append(str(label))
        if images:
            break
    return _finish(images, source_ids, names, path)


def _from_chips(folder: Path, in_chans: int) -> ProbeSet:
    if not (folder / "labels.csv").is_file():
        raise GeoperaError(f"probe folder {folder} has no labels.csv (columns: file, label)")
    data = from_chip_table(folder)  # the loader of `geopera evaluate`
    if data.images.shape[1] < in_chans:
        raise GeoperaError(
            f"probe chips in {folder} have {data.images.shape[1]} bands; training uses {in_chans}"
        )
    images = data.images[:, :in_chans]  # (N, C, S, S)
    probe = ProbeSet(images, torch.zeros(len(images), dtype=torch.long), data.labels, data.classes)
    flat = images.transpose(0, 1).reshape(in_chans, -1)  # (N, C, S, S) -> (C, N*S*S)
    probe.p2 = torch.quantile(flat[:, :: max(flat.shape[1] // 100_000, 1)], 0.02, dim=1)
    probe.p98 = torch.quantile(flat[:, :: max(flat.shape[1] // 100_000, 1)], 0.98, dim=1)
    return probe


def _finish(images: list[Tensor], sources: list[int], names: list[str], origin: Path) -> ProbeSet:
    counts = Counter(names)
    if len(images) < 4 or len(counts) < 2:
        raise GeoperaError(
            f"probe {origin} gave {len(images)} samples in {len(counts)} classes inside the "
            "archive; a kNN probe needs at least 4 samples and 2 classes"
        )
    classes = sorted(counts)
    size = min(min(i.shape[-2], i.shape[-1]) for i in images)
    stacked = torch.stack([i[:, :size, :size] for i in images])  # N x (C, S, S) -> (N, C, S, S)
    return ProbeSet(
        stacked,
        torch.tensor(sources),
        torch.tensor([classes.index(n) for n in names]),
        classes,
    )


def load_probe(
    spec: str | Path, sources: list[SourceSampling], in_chans: int, size: int
) -> ProbeSet:
    """Load a probe set from a vector file or a chip folder.

    Args:
        spec: Vector file or folder.
        sources: The training sources (for vector probes).
        in_chans: Training band count (for chip folders).
        size: Patch size in pixels (for vector probes).

    Returns:
        The probe set.

    Raises:
        FileNotFoundError: If ``spec`` does not exist.
        GeoperaError: If it has no labels or too few usable samples.
    """
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(
            f"probe {path} does not exist (a labelled vector file or chip folder)"
        )
    if path.is_dir():
        return _from_chips(path, in_chans)
    return _from_vector(path, sources, size)


@torch.no_grad()
def knn_accuracy(task: Any, probe: ProbeSet, k: int = 5) -> float:
    """Leave-one-out kNN accuracy of the teacher's class tokens.

    Args:
        task: The pretraining task (its teacher, scaling and normalisation are used).
        probe: The labelled samples.
        k: Neighbours (capped at N - 1).

    Returns:
        Accuracy in [0, 1].
    """
    device = task.p2.device
    size = min(task.config.views.global_size, probe.images.shape[-1])
    size -= size % task.model.token_size
    src = probe.sources.to(device)
    if probe.p2 is not None and probe.p98 is not None:
        unit = scale_unit(probe.images.to(device), probe.p2.to(device), probe.p98.to(device))
    else:
        unit = scale_unit(probe.images.to(device), task.p2[src], task.p98[src])
    top = (unit.shape[-2] - size) // 2
    x = (unit[..., top : top + size, top : top + size] - task.views.mean) / task.views.std
    grid = (size // task.model.token_size) ** 2
    every = torch.arange(grid, device=device).expand(x.shape[0], -1)
    features = F.normalize(
        encode_visible(task.model.teacher_backbone, x, every)[:, 0].float(), dim=-1
    )
    labels = probe.labels.to(device)
    predicted = knn_predict(  # the kNN of `geopera evaluate`, leave-one-out, majority vote
        features, labels, features, len(probe.classes), k, temperature=None, exclude_self=True
    )
    return float((predicted == labels).float().mean())
