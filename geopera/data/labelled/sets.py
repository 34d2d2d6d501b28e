"""Labelled image sets for probes: class folders, chip tables, rasters + labels, TorchGeo.

Every loader returns a :class:`LabelledSet`: raw images of one size, a class per image, the
images' band names, and a spatial *group* per image. Images of one group always go to the same
split, so that train and test never share ground:

* georeferenced images are grouped by square blocks of map coordinates (two chip sides wide);
* chip tables (``labels.csv``) by their source chip and block (``source_chip``/``group``,
  ``row``/``col`` columns) when given;
* chips cut from rasters by the block splits of fine-tuning (:mod:`geopera.data.labelled`);
* anything else (not georeferenced, no table) image by image.
"""

import csv
import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.windows
import torch
from rasterio.errors import NotGeoreferencedWarning

from geopera.data.labelled.chips import chip_blocks
from geopera.data.labelled.imageset import (
    EvaluationDataError,
    LabelledSet,
    assemble,
    check_classes,
    drop_rare,
)
from geopera.data.labelled.labels import IGNORE, LabelError
from geopera.data.labelled.scenes import RASTER_SUFFIXES, image_band_names, segmentation_scenes

#: Image files of a class folder.
IMAGE_SUFFIXES = (*RASTER_SUFFIXES, ".jpg", ".jpeg")
#: Columns of a chip table: file, label, and (optional) spatial group.
FILE_COLUMNS = ("file", "path", "tile")
LABEL_COLUMNS = ("label", "class", "class_name", "landcover", "name")
GROUP_COLUMNS = ("group", "source_chip", "source", "scene")


def _read(path: Path) -> tuple[np.ndarray, Any]:
    with warnings.catch_warnings():  # class folders are often not georeferenced
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            data = ds.read().astype(np.float32)  # (C, H, W)
            geo = (ds.crs.to_string(), ds.transform) if ds.crs is not None else None
    return data, geo


def _map_block(geo: Any, size: int) -> tuple[Any, ...]:
    crs, t = geo
    x, y = t @ (0.5, 0.5)  # top-left pixel centre
    side = 2 * size
    return (crs, math.floor(x / (abs(t.a) * side)), math.floor(y / (abs(t.e) * side)))


def _band_names(path: Path | str) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return image_band_names(str(path))


def from_class_folders(root: Path) -> LabelledSet:
    """``ROOT/<class>/*.tif|png|jpg`` (the EuroSAT / ImageFolder layout).

    Args:
        root: The folder of class folders.

    Returns:
        The labelled set (images centre-cropped to the smallest side).
    """
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    arrays: list[np.ndarray] = []
    names: list[str] = []
    groups: list[Any] = []
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for path in files:
            data, geo = _read(path)
            arrays.append(data)
            names.append(folder.name)
            size = min(data.shape[-2:])
            groups.append(str(path) if geo is None else _map_block(geo, size))
    if not arrays:
        raise EvaluationDataError(
            f"{root} holds no class folders with images ({', '.join(IMAGE_SUFFIXES)}): expected "
            "ROOT/<class>/<image>"
        )
    first = next(
        p for f in folders for p in sorted(f.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES
    )
    found = assemble(arrays, names, groups, _band_names(first), f"class folders {root}")
    return dataclasses.replace(found, stem=first.stem)


def from_chip_table(folder: Path) -> LabelledSet:
    """A folder with ``labels.csv`` (file and label columns; optional group and row/col).

    Args:
        folder: The folder; files are looked up beside the table or in ``tiles/``.

    Returns:
        The labelled set.
    """
    table = folder / "labels.csv"
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise EvaluationDataError(f"{table} has no rows")
    columns = list(rows[0])
    file_col = next((c for c in FILE_COLUMNS if c in columns), None)
    label_col = next((c for c in LABEL_COLUMNS if c in columns), None)
    if file_col is None or label_col is None:
        raise EvaluationDataError(
            f"{table} needs a file column ({'/'.join(FILE_COLUMNS)}) and a label column "
            f"({'/'.join(LABEL_COLUMNS)}); it has {columns}"
        )
    group_col = next((c for c in GROUP_COLUMNS if c in columns), None)
    arrays: list[np.ndarray] = []
    names: list[str] = []
    groups: list[Any] = []
    for row in rows:
        name = row[file_col]
        path = folder / name if (folder / name).is_file() else folder / "tiles" / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{table} names {name}, which is neither beside it nor in tiles/"
            )
        data, geo = _read(path)
        arrays.append(data)
        names.append(row[label_col])
        size = min(data.shape[-2:])
        if geo is not None:
            groups.append(_map_block(geo, size))
        elif group_col is not None and "row" in columns and "col" in columns:
            side = 2 * size
            groups.append((row[group_col], int(row["row"]) // side, int(row["col"]) // side))
        else:
            groups.append(row[group_col] if group_col is not None else str(path))
    first = folder / rows[0][file_col]
    first = first if first.is_file() else folder / "tiles" / rows[0][file_col]
    found = assemble(arrays, names, groups, _band_names(first), f"chip table {table}")
    return dataclasses.replace(found, stem=Path(first).stem)


def from_rasters(
    rasters: list[str],
    labels: str,
    class_field: str | None,
    chip_size: int,
    min_labelled: float = 0.5,
) -> LabelledSet:
    """Chips on a grid over rasters, each with the majority class of its labelled pixels.

    Args:
        rasters: Raster files, folders or globs.
        labels: A label raster or a vector file of polygons (with ``class_field``).
        class_field: Integer class attribute of vector labels.
        chip_size: Chip side in pixels.
        min_labelled: Chips with a smaller labelled share are dropped.

    Returns:
        The labelled set (classes: the label values), with per-pixel masks for dense probes.
    """
    scenes = segmentation_scenes(rasters, labels, class_field)
    arrays, masks, majority, groups = [], [], [], []
    for i, r, c, key in chip_blocks(scenes, chip_size, block_chips=2):
        values = scenes[i].labels[r : r + chip_size, c : c + chip_size]  # type: ignore[index]
        known = values[values != IGNORE]
        if known.size < min_labelled * values.size:
            continue
        with rasterio.open(scenes[i].image) as ds:
            window = rasterio.windows.Window(c, r, chip_size, chip_size)
            arrays.append(np.nan_to_num(ds.read(window=window).astype(np.float32)))  # (C, S, S)
        masks.append(values)
        codes, counts = np.unique(known, return_counts=True)
        majority.append(int(codes[counts.argmax()]))
        groups.append(key)
    origin = f"{', '.join(rasters)} + {labels}"
    if not arrays:
        raise LabelError(
            f"no {chip_size} px chip of {origin} has {min_labelled:.0%} labelled pixels: do the "
            "labels overlap the rasters (same area, a CRS on both)?"
        )
    check_classes([str(v) for v in majority], origin)
    values = sorted({int(v) for m in masks for v in np.unique(m) if v != IGNORE})
    index = {v: k for k, v in enumerate(values)}
    stacked = np.stack(masks)  # N x (S, S) -> (N, S, S)
    encoded = np.vectorize(lambda v: index.get(int(v), -1), otypes=[np.int64])(stacked)
    return LabelledSet(
        images=torch.from_numpy(np.stack(arrays)),  # N x (C, S, S) -> (N, C, S, S)
        labels=torch.tensor([index[v] for v in majority], dtype=torch.int64),
        classes=[str(v) for v in values],
        band_names=_band_names(scenes[0].image),
        groups=groups,
        origin=origin,
        masks=torch.from_numpy(encoded),
        stem=Path(scenes[0].image).stem,
    )


def from_torchgeo(spec: str) -> LabelledSet:
    """``torchgeo:NAME:ROOT``: a TorchGeo classification dataset already on disk (never fetched).

    Args:
        spec: ``torchgeo:EuroSAT:/data/eurosat``.

    Returns:
        The labelled set (every split the dataset has; images grouped one by one).
    """
    import inspect

    import torchgeo.datasets as tgd
    from torchgeo.datasets import NonGeoClassificationDataset

    _, _, rest = spec.partition(":")
    name, _, root = rest.partition(":")
    valid = sorted(
        n
        for n, c in vars(tgd).items()
        if inspect.isclass(c)
        and issubclass(c, NonGeoClassificationDataset)
        and c is not NonGeoClassificationDataset
    )
    cls = getattr(tgd, name, None)
    if name not in valid or cls is None:
        raise EvaluationDataError(
            f"{name!r} is not a TorchGeo classification dataset; valid names: {', '.join(valid)}"
        )
    if not root or not Path(root).is_dir():
        raise FileNotFoundError(
            f"{spec}: give the dataset's local root folder (torchgeo:{name}:/path); geopera "
            "never downloads it: fetch it once with TorchGeo (download=True)"
        )
    params = inspect.signature(cls).parameters
    splits: list[str | None] = ["train", "val", "test"] if "split" in params else [None]
    arrays, names, groups = [], [], []
    for split in splits:
        kwargs: dict[str, Any] = {"root": root, "download": False}
        if split is not None:
            kwargs["split"] = split
        try:
            ds = cls(**kwargs)
        except Exception as err:  # DatasetNotFoundError and friends
            raise EvaluationDataError(
                f"{spec}: TorchGeo could not open {name} under {root} ({err}); geopera never "
                "downloads: fetch it once with TorchGeo (download=True)"
            ) from err
        classes = list(getattr(ds, "classes", []))
        for i in range(len(ds)):
            sample = ds[i]
            label = int(sample["label"])
            arrays.append(sample["image"].numpy().astype(np.float32))
            names.append(classes[label] if classes else str(label))
            groups.append((split, i))
    bands = list(getattr(ds, "bands", None) or getattr(cls, "all_band_names", None) or [])
    if len(bands) != arrays[0].shape[0]:
        bands = [f"band_{i + 1}" for i in range(arrays[0].shape[0])]
    return assemble(arrays, names, groups, bands, f"TorchGeo {name} ({root})")


def load_labelled(
    data: str,
    labels: str | None = None,
    class_field: str | None = None,
    chip_size: int = 64,
    min_per_class: int = 2,
) -> LabelledSet:
    """The labelled set named by ``--data`` (and ``--labels``); see the module docstring.

    Args:
        data: Class folders, a chip-table folder, rasters (with ``labels``) or
            ``torchgeo:NAME:ROOT``.
        labels: Label raster or polygons for rasters.
        class_field: Integer class attribute of vector labels.
        chip_size: Chip side for rasters + labels.
        min_per_class: Classes with fewer images are left out (:func:`drop_rare`).

    Returns:
        The labelled set.

    Raises:
        FileNotFoundError: If ``data`` does not exist.
        EvaluationDataError: If it is not one of the accepted layouts or unusable.
    """
    return drop_rare(_load(data, labels, class_field, chip_size), min_per_class)


def _load(data: str, labels: str | None, class_field: str | None, chip_size: int) -> LabelledSet:
    if data.startswith("torchgeo:"):
        return from_torchgeo(data)
    if labels is not None:
        return from_rasters([data], labels, class_field, chip_size)
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"--data {data} does not exist")
    if path.is_dir() and (path / "labels.csv").is_file():
        return from_chip_table(path)
    if path.is_dir() and any(p.is_dir() for p in path.iterdir()):
        return from_class_folders(path)
    raise EvaluationDataError(
        f"--data {data} is not class folders (DATA/<class>/<image>), a folder with labels.csv, "
        "or rasters with --labels (polygons or a label raster)"
    )
