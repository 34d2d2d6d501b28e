"""Labelled scenes cut into chips, with spatially disjoint train/val/test splits.

A *scene* is one image (two for change detection) with its labels on the image's pixel grid.
Scenes are cut into non-overlapping square chips; chips are grouped into square *blocks* of
``block_chips x block_chips`` chips, and whole blocks go to one split. Blocks are keyed by map
coordinates for georeferenced images (so co-located scenes, e.g. several dates on one grid, share
their split) and by file and pixel position otherwise. A chip never mixes pixels of two splits,
and no block is in two splits: the test area is never seen in training.
"""

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from torch import Tensor
from torch.utils.data import Dataset

from geopera.core.normalisation import BandStats
from geopera.data.labelled.labels import (
    IGNORE,
    Boxes,
    Grid,
    LabelError,
    open_on_grid,
)
from geopera.data.labelled.scenes import Chip, Scene

SPLITS = ("train", "val", "test")
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".png")


def _block_key(
    scene: Scene,
    index: int,
    row: int,
    col: int,
    block_px: int,
    origins: dict[str, tuple[float, float]],
) -> tuple[Any, ...]:
    if scene.grid.crs is None:
        return (index, row // block_px, col // block_px)
    t = scene.grid.transform
    crs = scene.grid.crs.to_string()
    ox, oy = origins.setdefault(crs, (t.c, t.f))  # blocks of a CRS start at its first scene
    x, y = t @ (col + 0.5, row + 0.5)  # chip's top-left pixel centre, map coordinates
    bx = math.floor((x - ox) / (abs(t.a) * block_px))
    by = math.floor((oy - y) / (abs(t.e) * block_px))
    return (crs, by, bx)


def make_chips(
    scenes: Sequence[Scene],
    chip_size: int,
    block_chips: int = 2,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> list[Chip]:
    """Cut scenes into chips and give whole blocks to train, val or test.

    Args:
        scenes: The scenes.
        chip_size: Chip side (pixels).
        block_chips: Block side, in chips.
        val_fraction: Share of blocks for validation (at least one block).
        test_fraction: Share of blocks for testing (at least one block).
        seed: Seed of the block shuffle.

    Returns:
        Chips with their split.

    Raises:
        LabelError: If the scenes are too small for the chip size or give fewer than 3 blocks.
    """
    placed = chip_blocks(scenes, chip_size, block_chips)
    split_of = assign_splits([key for *_, key in placed], seed, val_fraction, test_fraction)
    return [Chip(i, r, c, chip_size, split_of[key]) for i, r, c, key in placed]


def assign_splits(
    keys: Sequence[Any], seed: int, val_fraction: float = 0.2, test_fraction: float = 0.2
) -> dict[Any, str]:
    """Give whole spatial blocks to train, val or test (at least one block each).

    Args:
        keys: Block key of every chip or image (repeats allowed; equal keys share a split).
        seed: Seed of the block shuffle.
        val_fraction: Share of blocks for validation.
        test_fraction: Share of blocks for testing.

    Returns:
        ``{block key: split}``.

    Raises:
        LabelError: If there are fewer than 3 blocks.
    """
    blocks = sorted(set(keys), key=repr)
    if len(blocks) < 3:
        raise LabelError(
            f"only {len(blocks)} spatial block(s): a train/val/test split needs at least 3; "
            "use smaller chips or blocks, or add images"
        )
    order = np.random.default_rng(seed).permutation(len(blocks))
    n_test = max(1, round(len(blocks) * test_fraction))
    n_val = max(1, round(len(blocks) * val_fraction))
    if n_test + n_val >= len(blocks):
        n_test, n_val = 1, 1
    split_of = {}
    for rank, b in enumerate(order):
        split_of[blocks[b]] = (
            "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
        )
    return split_of


def chip_blocks(
    scenes: Sequence[Scene], chip_size: int, block_chips: int = 2
) -> list[tuple[int, int, int, tuple[Any, ...]]]:
    """Every labelled chip position of the scenes, with its spatial block key.

    Args:
        scenes: The scenes.
        chip_size: Chip side (pixels).
        block_chips: Block side, in chips.

    Returns:
        ``(scene index, row, col, block key)`` per chip.

    Raises:
        LabelError: If no labelled chip fits.
    """
    if chip_size < 1 or block_chips < 1:
        raise ValueError(f"chip size ({chip_size}) and block size ({block_chips}) must be >= 1")
    block_px = chip_size * block_chips
    placed: list[tuple[int, int, int, tuple[Any, ...]]] = []
    origins: dict[str, tuple[float, float]] = {}
    for i, scene in enumerate(scenes):
        rows = range(0, scene.grid.height - chip_size + 1, chip_size)
        cols = range(0, scene.grid.width - chip_size + 1, chip_size)
        for r in rows:
            for c in cols:
                if _chip_has_labels(scene, r, c, chip_size):
                    placed.append((i, r, c, _block_key(scene, i, r, c, block_px, origins)))
    if not placed:
        smallest = min(min(s.grid.width, s.grid.height) for s in scenes)
        raise LabelError(
            f"no labelled {chip_size}x{chip_size} chip fits the scenes (smallest side "
            f"{smallest} px); lower data.chip_size (finetune) or --chip-size (evaluate)"
        )
    return placed


def _chip_has_labels(scene: Scene, row: int, col: int, size: int) -> bool:
    if scene.labels is not None:
        return bool((scene.labels[row : row + size, col : col + size] != IGNORE).any())
    if scene.boxes is not None:
        b = scene.boxes.xyxy
        inside = (b[:, 0] < col + size) & (b[:, 2] > col) & (b[:, 1] < row + size) & (b[:, 3] > row)
        return bool(inside.any())
    return True


@dataclass
class ClassMap:
    """Label values (or box class names) <-> contiguous class indices.

    Attributes:
        values: Label values in index order (segmentation/change), or class names (detection).
    """

    values: list[Any] = field(default_factory=list)

    @classmethod
    def from_scenes(cls, scenes: Sequence[Scene]) -> "ClassMap":
        """All label values (or box names) of the scenes, sorted."""
        found: set[Any] = set()
        for s in scenes:
            if s.labels is not None:
                found.update(int(v) for v in np.unique(s.labels) if v != IGNORE)
            if s.boxes is not None:
                found.update(s.boxes.names)
        return cls(sorted(found))

    def encode(self, labels: np.ndarray) -> np.ndarray:
        """(H, W) values -> (H, W) int64 indices, -1 for unlabelled or unknown values."""
        values = np.asarray(self.values, dtype=np.int64)
        idx = np.searchsorted(values, labels).clip(0, len(values) - 1)
        known = (values[idx] == labels) & (labels != IGNORE)
        return np.where(known, idx, -1).astype(np.int64)


def drop_rare_classes(
    classes: ClassMap, scenes: Sequence[Scene], chips: Sequence[Chip], min_per_class: int
) -> tuple[ClassMap, list[Any]]:
    """Leave out label values found in fewer than ``min_per_class`` chips (segmentation).

    Their pixels are then unlabelled.

    Args:
        classes: The class map.
        scenes: The scenes (with label rasters).
        chips: Every chip of every split.
        min_per_class: The fewest chips a class needs.

    Returns:
        The class map without the rare values, and those values.
    """
    counts: dict[Any, int] = dict.fromkeys(classes.values, 0)
    for chip in chips:
        labels = scenes[chip.scene].labels
        if labels is None:
            continue
        window = labels[chip.row : chip.row + chip.size, chip.col : chip.col + chip.size]
        for value in np.unique(window):
            if int(value) in counts:
                counts[int(value)] += 1
    rare = [v for v in classes.values if counts[v] < min_per_class]
    return ClassMap([v for v in classes.values if v not in rare]), rare


class ChipDataset(Dataset[dict[str, Any]]):
    """Chips read on demand with rasterio (one open handle per file and worker).

    Samples are ``{"image": (C, S, S) float32}`` plus ``"after"`` (change), ``"mask"``
    ((S, S) int64 class indices, -1 ignored) or ``"boxes"`` ((N, 4) float32 xyxy in chip
    pixels) and ``"labels"`` ((N,) int64, 1-based; 0 is background).

    Args:
        scenes: The scenes.
        chips: The chips to serve.
        bands: 0-based band indices to read, in model order.
        classes: The class map.
        min_box_fraction: Detection: keep boxes with at least this share of their area inside
            the chip.
    """

    def __init__(
        self,
        scenes: Sequence[Scene],
        chips: Sequence[Chip],
        bands: Sequence[int],
        classes: ClassMap,
        min_box_fraction: float = 0.5,
    ) -> None:
        self.scenes = list(scenes)
        self.chips = list(chips)
        self.bands = [b + 1 for b in bands]
        self.classes = classes
        self.min_box_fraction = min_box_fraction
        self._handles: dict[tuple[str, Grid, int], Any] = {}

    def __len__(self) -> int:
        return len(self.chips)

    def reader(self, path: str, grid: Grid) -> Any:
        """``path`` opened on ``grid`` (warped when needed), once per file, grid and process."""
        key = (path, grid, os.getpid())
        if key not in self._handles:
            ds = open_on_grid(path, grid)
            self._handles[key] = ds
        return self._handles[key]

    def read(self, path: str, grid: Grid, chip: Chip) -> tuple[np.ndarray, np.ndarray]:
        """(C, S, S) float32 pixels of a chip and its (S, S) nodata mask."""
        ds = self.reader(path, grid)
        window = Window(chip.col, chip.row, chip.size, chip.size)
        data = ds.read(self.bands, window=window).astype(np.float32)
        invalid = ~np.isfinite(data).all(0)
        if ds.nodata is not None:
            invalid |= (data == ds.nodata).all(0)
        return np.nan_to_num(data), invalid

    def __getitem__(self, index: int) -> dict[str, Any]:
        chip = self.chips[index]
        scene = self.scenes[chip.scene]
        image, invalid = self.read(scene.image, scene.grid, chip)
        sample: dict[str, Any] = {"image": torch.from_numpy(image)}
        if scene.after is not None:
            after, invalid_after = self.read(scene.after, scene.grid, chip)
            sample["after"] = torch.from_numpy(after)
            invalid |= invalid_after
        r, c, s = chip.row, chip.col, chip.size
        if scene.labels is not None:
            mask = self.classes.encode(scene.labels[r : r + s, c : c + s])
            mask[invalid] = -1
            sample["mask"] = torch.from_numpy(mask)
        if scene.boxes is not None:
            sample.update(self._boxes(scene.boxes, chip))
        return sample

    def _boxes(self, boxes: Boxes, chip: Chip) -> dict[str, Tensor]:
        b = boxes.xyxy - np.array([chip.col, chip.row, chip.col, chip.row], dtype=np.float32)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        clipped = b.clip(0, chip.size)
        inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
        keep = inside >= self.min_box_fraction * np.maximum(area, 1e-6)
        labels = [
            self.classes.values.index(n) + 1 for n, k in zip(boxes.names, keep, strict=True) if k
        ]
        return {
            "boxes": torch.from_numpy(clipped[keep].reshape(-1, 4)),
            "labels": torch.tensor(labels, dtype=torch.int64),
        }


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images and masks; keep boxes and labels as lists (one tensor per chip)."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        out[key] = values if key in ("boxes", "labels") else torch.stack(values)
    return out


def chip_statistics(dataset: ChipDataset, max_chips: int = 64, seed: int = 0) -> BandStats:
    """The band statistics of the training chips (the same statistic as pretraining's).

    Args:
        dataset: Training chips.
        max_chips: Chips sampled.
        seed: Sampling seed.

    Returns:
        Per-band percentiles and the moments of the scaled values.
    """
    rng = np.random.default_rng(seed)
    picks = rng.permutation(len(dataset))[:max_chips]
    pixels = []
    for i in picks:
        sample = dataset[int(i)]
        for key in ("image", "after"):
            if key in sample:
                x = sample[key].numpy().reshape(sample[key].shape[0], -1)  # (C, S*S)
                pixels.append(x[:, :: max(1, x.shape[1] // 4096)])
    return BandStats.of_pixels(np.concatenate(pixels, axis=1))  # (C, N)
