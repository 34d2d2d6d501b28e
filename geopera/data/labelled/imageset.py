"""What a labelled image set is, and the checks every loader of :mod:`.sets` shares.

A :class:`LabelledSet` holds raw images of one size, a class per image, the images' band
names and a spatial group per image; :func:`assemble` builds one from a loader's images, and
:func:`drop_rare` leaves out the classes with too few images (``--min-per-class``).
"""

import dataclasses
import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from geopera.core.errors import GeoperaError, note
from geopera.core.identity import BandIdentity
from geopera.data.identity import identify
from geopera.data.labelled.chips import assign_splits
from geopera.data.sensors import stem_family


class EvaluationDataError(GeoperaError):
    """The labelled data cannot be evaluated on."""


@dataclass
class LabelledSet:
    """Labelled images of one size.

    Attributes:
        images: (N, C, S, S) float32 raw pixel values.
        labels: (N,) int64 class indices.
        classes: Class names, indexed by label.
        band_names: The images' band names, in file order.
        stem: The first image's file name without extension (its sensor and colour run name
            the bands' identities), or "".
        groups: Spatial group of each image (equal groups share a split).
        origin: What the data is, for the outputs.
        masks: (N, S, S) int64 per-pixel class indices (-1 unlabelled), for dense probes; None
            for image-level labels.
    """

    images: Tensor
    labels: Tensor
    classes: list[str]
    band_names: list[str]
    groups: list[Any]
    origin: str
    masks: Tensor | None = None
    stem: str = ""

    def band_identities(self) -> list[BandIdentity | None]:
        """What each band measures (see :mod:`geopera.data.identity`)."""
        return identify(self.band_names, stem_family(self.stem), self.stem)

    def fingerprint(self) -> str:
        """SHA-256 of the pixels, labels and classes (a feature-cache key)."""
        h = hashlib.sha256()
        h.update(self.images.numpy().tobytes())
        h.update(self.labels.numpy().tobytes())
        h.update("\0".join(self.classes + self.band_names).encode())
        return h.hexdigest()

    def splits(self, seed: int) -> np.ndarray:
        """(N,) ``"train"``/``"val"``/``"test"`` of every image, whole groups per split."""
        split_of = assign_splits(self.groups, seed)
        return np.array([split_of[g] for g in self.groups])


def check_classes(names: list[str], origin: str) -> list[str]:
    """The sorted class names of a set's images.

    Raises:
        EvaluationDataError: If the images hold one class only.
    """
    counts = Counter(names)
    if len(counts) < 2:
        raise EvaluationDataError(
            f"{origin} has one class only ({next(iter(counts), 'none')!r}); a probe needs at "
            "least 2 classes"
        )
    return sorted(counts)


def drop_rare(data: LabelledSet, min_per_class: int) -> LabelledSet:
    """Leave out the classes with fewer than ``min_per_class`` images (``--min-per-class``).

    Args:
        data: The labelled set.
        min_per_class: The fewest images a class needs (a split needs 2).

    Returns:
        The set without those classes' images (a note names them).

    Raises:
        EvaluationDataError: If fewer than two classes would remain.
    """
    counts = torch.bincount(data.labels, minlength=len(data.classes))  # (K,)
    rare = [k for k in range(len(data.classes)) if 0 < counts[k] < min_per_class]
    if not rare:
        return data
    kept = [k for k in range(len(data.classes)) if counts[k] >= min_per_class]
    names = [data.classes[k] for k in rare]
    if len(kept) < 2:
        raise EvaluationDataError(
            f"{data.origin}: only {len(kept)} class(es) have at least {min_per_class} images "
            f"(too few: {names}); a probe needs 2 classes: add images or lower --min-per-class"
        )
    note(f"{data.origin}: class(es) {names} have fewer than {min_per_class} images: left out")
    keep = ~torch.isin(data.labels, torch.tensor(rare))  # (N,)
    left = [k for k in range(len(data.classes)) if k not in rare]  # classes kept, in order
    renumber = torch.full((len(data.classes) + 1,), -1, dtype=torch.int64)  # old + 1 -> new
    renumber[torch.tensor(left) + 1] = torch.arange(len(left))
    labels = renumber[data.labels[keep] + 1]
    classes = [data.classes[k] for k in left]
    masks = renumber[data.masks[keep] + 1] if data.masks is not None else None  # -1 stays -1
    return dataclasses.replace(
        data,
        images=data.images[keep],
        labels=labels,
        classes=classes,
        groups=[g for g, k in zip(data.groups, keep.tolist(), strict=True) if k],
        masks=masks,
    )


def assemble(
    arrays: list[np.ndarray],
    names: list[str],
    groups: list[Any],
    band_names: list[str],
    origin: str,
) -> LabelledSet:
    """A labelled set from a loader's images (centre-cropped to the smallest side).

    Args:
        arrays: Per image, (C, H, W) float32.
        names: Per image, its class name.
        groups: Per image, its spatial group.
        band_names: The images' band names.
        origin: What was loaded, for messages.

    Raises:
        EvaluationDataError: On one class only, or images of different band counts.
    """
    classes = check_classes(names, origin)
    bands = {a.shape[0] for a in arrays}
    if len(bands) > 1:
        raise EvaluationDataError(
            f"{origin}: images have different band counts {sorted(bands)}; give images of one "
            "sensor"
        )
    size = min(min(a.shape[-2:]) for a in arrays)

    def centre(a: np.ndarray) -> np.ndarray:
        top, left = (a.shape[-2] - size) // 2, (a.shape[-1] - size) // 2
        return a[:, top : top + size, left : left + size]

    images = torch.from_numpy(np.stack([centre(a) for a in arrays]))  # N x (C, S, S)
    labels = torch.tensor([classes.index(n) for n in names], dtype=torch.int64)
    return LabelledSet(images, labels, classes, band_names, groups, origin)
