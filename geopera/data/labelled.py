"""Labelled scenes cut into chips, with spatially disjoint train/val/test splits.

A *scene* is one image (two for change detection) with its labels on the image's pixel grid.
Scenes are cut into non-overlapping square chips; chips are grouped into square *blocks* of
``block_chips x block_chips`` chips, and whole blocks go to one split. Blocks are keyed by map
coordinates for georeferenced images (so co-located scenes, e.g. several dates on one grid, share
their split) and by file and pixel position otherwise. A chip never mixes pixels of two splits,
and no block is in two splits: the test area is never seen in training.
"""

import glob
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from torch import Tensor
from torch.utils.data import Dataset

from geopera.data.bands import default_band_names, resolve_bands, sensor_family
from geopera.data.labels import (
    IGNORE,
    Boxes,
    Grid,
    LabelError,
    is_vector,
    open_on_grid,
    read_boxes,
    read_label_raster,
    read_label_vector,
)

SPLITS = ("train", "val", "test")
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".png")


@dataclass
class Scene:
    """One labelled image (or image pair).

    Attributes:
        image: Image path (the *before* date for change detection).
        grid: Its pixel grid.
        labels: (H, W) int32 label values (:data:`IGNORE` unlabelled), or None (detection).
        boxes: Boxes in pixel coordinates (detection), or None.
        after: Second-date image (change detection), read on ``grid``.
    """

    image: str
    grid: Grid
    labels: np.ndarray | None = None
    boxes: Boxes | None = None
    after: str | None = None

    @property
    def name(self) -> str:
        """File name of the image."""
        return Path(self.image).name


@dataclass(frozen=True)
class Chip:
    """A square window of a scene.

    Attributes:
        scene: Scene index.
        row: Top row (pixels).
        col: Left column (pixels).
        size: Side (pixels).
        split: ``"train"``, ``"val"`` or ``"test"``.
    """

    scene: int
    row: int
    col: int
    size: int
    split: str


def expand_paths(specs: Sequence[str | os.PathLike[str]]) -> dict[str, str]:
    """Expand files, folders and glob patterns to ``{key: path}``.

    The key pairs images with labels: for a glob it is the part matched by ``*``
    (``chips/*_naip.tif`` and ``chips/*_mask.tif`` pair ``a_naip.tif`` with ``a_mask.tif``);
    for a file or a folder's files it is the file stem.

    Args:
        specs: Paths, folders or glob patterns.

    Returns:
        Paths by key, sorted.

    Raises:
        FileNotFoundError: If a spec matches nothing.
    """
    out: dict[str, str] = {}
    for spec in map(str, specs):
        if any(c in spec for c in "*?["):
            matches = sorted(glob.glob(spec))
            if not matches:
                raise FileNotFoundError(f"pattern {spec!r} matches no file")
            head, _, tail = Path(spec).name.partition("*")
            for m in matches:
                name = Path(m).name
                key = name[len(head) : len(name) - len(tail)] if tail else name[len(head) :]
                out[key or Path(m).stem] = m
        elif Path(spec).is_dir():
            files = sorted(p for p in Path(spec).iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
            if not files:
                raise FileNotFoundError(
                    f"folder {spec} holds no raster ({', '.join(RASTER_SUFFIXES)})"
                )
            out.update({p.stem: str(p) for p in files})
        elif Path(spec).is_file() or spec.startswith("/vsi"):
            out[Path(spec).stem] = spec
        else:
            raise FileNotFoundError(f"{spec} does not exist")
    return dict(sorted(out.items()))


def image_band_names(path: str) -> list[str]:
    """Band names of an image (descriptions, ``B2B3B4`` in the name, sensor layout, or 1..n)."""
    with rasterio.open(path) as ds:
        stem = Path(path).stem
        return default_band_names(sensor_family(stem), ds.count, ds.descriptions, stem)


def select_bands(
    paths: Sequence[str], requested: Sequence[str] | str | None
) -> tuple[list[int], list[str]]:
    """Band indices (0-based) and names chosen by ``data.bands``, the same for every image.

    Args:
        paths: Image files.
        requested: Band names / 1-based indices / preset, or None for all.

    Returns:
        Indices and names.

    Raises:
        LabelError: If the images do not share one band layout.
    """
    layouts = {tuple(image_band_names(p)) for p in paths}
    if len(layouts) != 1:
        raise LabelError(
            f"the images have different band layouts {sorted(layouts)}; fine-tune on images of "
            "one sensor layout (or select common bands with data.bands)"
        )
    available = list(next(iter(layouts)))
    names = resolve_bands(
        requested, available, sensor_family(Path(paths[0]).stem), Path(paths[0]).name
    )
    return [available.index(n) for n in names], names


def segmentation_scenes(
    images: Sequence[str | os.PathLike[str]],
    labels: str | os.PathLike[str],
    class_field: str | None,
) -> list[Scene]:
    """Scenes for segmentation from images and one label file, or paired chip files.

    Args:
        images: Image files, folders or globs.
        labels: A label raster or vector file for all images, or a folder/glob of label chips
            paired with the images by key (see :func:`expand_paths`).
        class_field: Vector labels: integer class attribute.

    Returns:
        Scenes with at least one labelled pixel.

    Raises:
        LabelError: If no image has labels, or chips do not pair.
    """
    image_paths = expand_paths(images)
    label_text = str(labels)
    paired = any(c in label_text for c in "*?[") or Path(label_text).is_dir()
    scenes = []
    if paired:
        label_paths = expand_paths([labels])
        missing = sorted(set(image_paths) - set(label_paths))
        if missing or not image_paths:
            raise LabelError(
                f"label chips {labels} do not pair with images {list(map(str, images))}: no label "
                f"for keys {missing[:5]}; name them so that the part matched by * is the same"
            )
        for key, path in image_paths.items():
            grid = Grid.of(path)
            scenes.append(Scene(path, grid, read_label_raster(label_paths[key], grid)))
    else:
        if not Path(label_text).is_file():
            raise FileNotFoundError(f"labels {labels} do not exist")
        for path in image_paths.values():
            grid = Grid.of(path)
            if is_vector(labels):
                values = read_label_vector(labels, grid, class_field)
            else:
                values = read_label_raster(labels, grid)
            scenes.append(Scene(path, grid, values))
    return _labelled_only(scenes, labels)


def change_scenes(
    before: str | os.PathLike[str],
    after: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    class_field: str | None = None,
) -> list[Scene]:
    """One change scene: two dates and a change mask (raster, or polygons of change).

    Labels are binarised: 0 stays "no change", any other labelled value is "change".

    Args:
        before: First-date image.
        after: Second-date image (reprojected onto the first's grid when needed).
        labels: Change raster, or vector polygons of change areas.
        class_field: Vector labels: class attribute (default: inside = change).

    Returns:
        A one-element list.
    """
    for p in (before, after, labels):
        if not Path(p).exists():
            raise FileNotFoundError(f"{p} does not exist")
    grid = Grid.of(before)
    with rasterio.open(before) as a, rasterio.open(after) as b:
        if a.count != b.count:
            raise LabelError(
                f"{before} has {a.count} bands but {after} has {b.count}; both dates need the "
                "same bands"
            )
        if grid.crs is None and (a.width, a.height) != (b.width, b.height):
            raise LabelError(f"{before} and {after} have no georeference and different sizes")
    if is_vector(labels):
        values = read_label_vector(labels, grid, class_field)
    else:
        values = read_label_raster(labels, grid)
    values = np.where(values > 0, 1, values).astype(np.int32)  # keep IGNORE, binarise the rest
    return _labelled_only([Scene(str(before), grid, values, after=str(after))], labels)


def detection_scenes(
    images: Sequence[str | os.PathLike[str]],
    boxes: str | os.PathLike[str],
    coords: str = "pixel",
    class_field: str | None = None,
) -> list[Scene]:
    """Scenes for detection: images and a box file.

    Args:
        images: Image files, folders or globs.
        boxes: CSV, Pascal VOC or vector file.
        coords: CSV coordinates, ``"pixel"`` or ``"map"``.
        class_field: Vector files: class-name attribute.

    Returns:
        Scenes with at least one box.

    Raises:
        LabelError: If no image has a box.
    """
    if not Path(boxes).is_file():
        raise FileNotFoundError(f"box file {boxes} does not exist")
    scenes = []
    for path in expand_paths(images).values():
        grid = Grid.of(path)
        found = read_boxes(boxes, path, grid, coords, class_field)
        if len(found.names):
            scenes.append(Scene(path, grid, boxes=found))
    if not scenes:
        raise LabelError(
            f"no box of {boxes} falls on the images {[str(i) for i in images]}; check the "
            "image_path column (file names must match) and --box-coords (pixel or map)"
        )
    return scenes


def _labelled_only(scenes: list[Scene], labels: str | os.PathLike[str]) -> list[Scene]:
    kept = [s for s in scenes if s.labels is not None and (s.labels != IGNORE).any()]
    for s in scenes:
        if s not in kept:
            warnings.warn(f"{s.image}: no labelled pixel from {labels}; skipped", stacklevel=3)
    if not kept:
        raise LabelError(
            f"no image has a labelled pixel from {labels}: do the labels overlap the images "
            "(same area, a CRS on both)?"
        )
    return kept


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
    x, y = t * (col + 0.5, row + 0.5)  # chip's top-left pixel centre, map coordinates
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
        self._handles: dict[tuple[str, int], Any] = {}

    def __len__(self) -> int:
        return len(self.chips)

    def _reader(self, path: str, grid: Grid) -> Any:
        key = (path, os.getpid())
        if key not in self._handles:
            ds = open_on_grid(path, grid)
            self._handles[key] = ds
        return self._handles[key]

    def read(self, path: str, grid: Grid, chip: Chip) -> tuple[np.ndarray, np.ndarray]:
        """(C, S, S) float32 pixels of a chip and its (S, S) nodata mask."""
        ds = self._reader(path, grid)
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


def chip_statistics(
    dataset: ChipDataset, max_chips: int = 64, seed: int = 0
) -> dict[str, list[float]]:
    """Per-band 2nd/98th percentiles and the mean/std of the [0, 1]-scaled values.

    The same preprocessing as pretraining (:mod:`geopera.transforms.normalise`), with statistics
    of the labelled images' training chips.

    Args:
        dataset: Training chips.
        max_chips: Chips sampled.
        seed: Sampling seed.

    Returns:
        ``{"p2", "p98", "mean", "std"}``, each C floats.
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
    stack = np.concatenate(pixels, axis=1)  # (C, N)
    p2, p98 = np.percentile(stack, 2, axis=1), np.percentile(stack, 98, axis=1)
    scaled = ((stack - p2[:, None]) / np.maximum(p98 - p2, 1e-6)[:, None]).clip(0, 1)
    return {
        "p2": p2.tolist(),
        "p98": p98.tolist(),
        "mean": scaled.mean(1).tolist(),
        "std": np.maximum(scaled.std(1), 1e-3).tolist(),
    }
