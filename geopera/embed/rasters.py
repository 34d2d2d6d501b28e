"""The input rasters of embed, checked before anything is written: grid, ROI, bands, chips."""

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rasterio
import rasterio.shutil
import torch
from rasterio.windows import Window
from timm.models.vision_transformer import VisionTransformer

from geopera.core.errors import ROIError, note
from geopera.core.names import NameBook
from geopera.data.labelled.labels import Grid
from geopera.data.labelled.windows import roi_window
from geopera.data.roi import load_roi
from geopera.embed.backbone import (
    DEFAULT_MODEL,
    Embedder,
    EmbedderInfo,
    build_frozen_vit,
    plan_raster,
    raster_normalisation,
    token_grid,
)
from geopera.embed.errors import EmbedError
from geopera.models.loading import resolve_weights


@dataclass
class EmbedRaster:
    """One input raster, checked and ready."""

    name: str
    path: str
    grid: Grid
    nodata: float | None
    window: Window
    geom: Any
    embedder: Embedder
    info: EmbedderInfo
    rows: int = 0
    cols: int = 0
    chip_rows: list[int] = field(default_factory=list)
    chip_cols: list[int] = field(default_factory=list)


def _names(paths: list[str]) -> list[str]:
    """Output names: the inputs' file stems (or URL's last part) as safe, unique components."""
    book = NameBook()
    return [book.claim(Path(path).stem) for path in paths]


def raster_datetime(path: str) -> str | None:
    """ISO date of a raster: a ``YYYYMMDD`` run in its name, else its TIFF date tag."""
    match = re.search(
        r"(?<!\d)((?:19|20)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d)", Path(path).stem
    )
    if match:
        return "-".join(match.groups())
    with rasterio.open(path) as ds:
        tag = ds.tags().get("TIFFTAG_DATETIME")
    if tag and re.fullmatch(r"\d{4}:\d{2}:\d{2} \d{2}:\d{2}:\d{2}", tag.strip()):
        day, clock = tag.strip().split(" ")
        return f"{day.replace(':', '-')}T{clock}"
    return None


#: Seed of a randomly initialised backbone (``--weights`` a timm name, or none).
RANDOM_INIT_SEED = 0


def prepare_rasters(
    paths: list[str],
    weights: str | None,
    roi: str | None,
    chip_size: int,
    device: torch.device,
    skip_outside_roi: bool,
    nodata: float | None,
    band_map: dict[str, str] | None = None,
) -> list[EmbedRaster]:
    """Check every input before anything is written."""
    region = load_roi(roi) if roi else None
    source = resolve_weights(weights, DEFAULT_MODEL)
    # one backbone per band plan (count and inputs), shared by rasters
    vits: dict[tuple[int, tuple[int, ...] | None], VisionTransformer] = {}
    rasters = []
    for name, path in zip(_names(paths), paths, strict=True):
        if not Path(path).is_file() and not path.startswith("/vsi"):
            raise FileNotFoundError(f"input raster {path} does not exist")
        grid = Grid.of(path)
        try:
            window, geom = roi_window(grid, region)
        except ROIError:
            if skip_outside_roi:
                continue
            raise
        info = plan_raster(source, path, band_map)
        n = len(info.bands)
        key = (n, tuple(info.channels) if info.channels is not None else None)
        if key not in vits:
            # a random backbone is seeded: the same on every call and on every rank
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_INIT_SEED)
                vits[key] = build_frozen_vit(source, n, chip_size, info.channels)
        for text in info.notes:  # once the plan is usable
            note(text)
        with rasterio.open(path) as ds:
            value = ds.nodata if ds.nodata is not None else nodata  # the file's own comes first
        embedder = Embedder(vits[key], raster_normalisation(path, info.bands, value), device)
        p = embedder.token_size
        rows, cols = token_grid(grid.height, grid.width, p)
        if rows == 0 or cols == 0:
            raise EmbedError(f"{path} is smaller than one token ({p} px)")
        t = chip_size // p
        r0 = int(window.row_off) // chip_size
        r1 = min(math.ceil((window.row_off + window.height) / chip_size), math.ceil(rows / t))
        c0 = int(window.col_off) // chip_size
        c1 = min(math.ceil((window.col_off + window.width) / chip_size), math.ceil(cols / t))
        if r1 <= r0 or c1 <= c0:
            raise EmbedError(f"the ROI covers no whole token of {path}")
        rasters.append(
            EmbedRaster(
                name,
                path,
                grid,
                value,
                window,
                geom,
                embedder,
                info,
                rows,
                cols,
                list(range(r0, r1)),
                list(range(c0, c1)),
            )
        )
    if not rasters:
        raise ROIError(f"the ROI ({roi}) overlaps none of the {len(paths)} input rasters")
    return rasters
