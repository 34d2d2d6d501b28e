"""Labelled scenes: images (two for change detection) with their labels on the image grid."""

import glob
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from geopera.data.bands import default_band_names, resolve_bands
from geopera.data.labelled.labels import (
    IGNORE,
    Boxes,
    Grid,
    LabelError,
    is_vector,
    read_boxes,
    read_label_raster,
    read_label_vector,
)
from geopera.data.sensors import stem_family

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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a chip: its grid is pixels
        ds = rasterio.open(path)
    with ds:
        stem = Path(path).stem
        return default_band_names(stem_family(stem), ds.count, ds.descriptions, stem)


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
        requested, available, stem_family(Path(paths[0]).stem), Path(paths[0]).name
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
