"""Dense outputs of ``geopera predict``: class values and probabilities, block by block, as COGs."""

import json
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from geopera.core.contracts import FinetunedSpec
from geopera.core.outputs import atomic_file
from geopera.core.pipeline import GDAL_IO
from geopera.core.raster_tags import class_tags
from geopera.predict.tiled import DenseBlock


@dataclass(frozen=True)
class ClassCoding:
    """How class values are stored: uint8 with nodata 255 when they fit, else int32.

    Attributes:
        values: (K,) class values in output order.
        dtype: Raster dtype.
        nodata: Nodata value.
    """

    values: np.ndarray
    dtype: str
    nodata: float

    @classmethod
    def of(cls, classes: list[Any]) -> "ClassCoding":
        """The coding of a model's class values."""
        values = np.asarray(classes)
        small = values.min() >= 0 and values.max() <= 254
        return cls(values, *(("uint8", 255) if small else ("int32", -(2**31))))


@dataclass
class EncodedBlock:
    """A block as it is stored: class values, and probabilities scaled to uint8.

    Attributes:
        row: Top row in the raster.
        col: Left column in the raster.
        classes: (h, w) class values, nodata where nothing was predicted.
        probs: (K, h, w) probabilities x 254, 255 where nothing was predicted; or None.
        pixels: Pixels with a prediction.
    """

    row: int
    col: int
    classes: np.ndarray
    probs: np.ndarray | None
    pixels: int


def encode(block: DenseBlock, coding: ClassCoding, probabilities: bool) -> EncodedBlock:
    """The stored form of a block (the same whichever process encodes it)."""
    best = block.probs.argmax(0)  # (K, h, w) -> (h, w); numpy is 8x torch here
    classes = coding.values[best].astype(coding.dtype)
    classes[~block.valid] = coding.nodata
    scaled = None
    if probabilities:
        scaled = np.round(block.probs * 254).astype(np.uint8)
        scaled[:, ~block.valid] = 255
    return EncodedBlock(block.row, block.col, classes, scaled, int(block.valid.sum()))


def grid_profile(grid_src: Any, count: int, dtype: str, nodata: float) -> dict[str, Any]:
    """A tiled GeoTIFF's profile on ``grid_src``'s grid (CRS, transform, size)."""
    return {
        "driver": "GTiff",
        "width": grid_src.width,
        "height": grid_src.height,
        "count": count,
        "dtype": dtype,
        "nodata": nodata,
        "crs": grid_src.crs,
        "transform": grid_src.transform,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "BIGTIFF": "IF_SAFER",
    }


class DenseOutputs:
    """The class raster (and the probability raster) being written, on the input's grid.

    Args:
        classes: Scratch path of the class raster.
        probabilities: Scratch path of the probability raster, or None.
        grid_src: The input dataset whose grid the outputs take.
        coding: How class values are stored.
    """

    def __init__(
        self, classes: Path, probabilities: Path | None, grid_src: Any, coding: ClassCoding
    ) -> None:
        self.coding = coding
        self.pixels = 0
        k = len(coding.values)
        self.dst = rasterio.open(
            classes, "w", **grid_profile(grid_src, 1, coding.dtype, coding.nodata)
        )
        try:
            self.probs_dst = (
                rasterio.open(probabilities, "w", **grid_profile(grid_src, k, "uint8", 255))
                if probabilities is not None
                else None
            )
        except BaseException:  # the class raster is not left open
            self.dst.close()
            raise

    def __enter__(self) -> "DenseOutputs":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.dst.close()
        if self.probs_dst is not None:
            self.probs_dst.close()

    def write(self, block: DenseBlock) -> None:
        """Write one block's classes (and probabilities); count its predicted pixels."""
        self.write_encoded(encode(block, self.coding, self.probs_dst is not None))

    def write_encoded(self, block: EncodedBlock) -> None:
        """Write one encoded block; count its predicted pixels."""
        h, w = block.classes.shape
        win = Window(block.col, block.row, w, h)
        with GDAL_IO:  # not while a reader thread reads (see GDAL_IO)
            self.dst.write(block.classes[None], window=win)
            if self.probs_dst is not None and block.probs is not None:
                self.probs_dst.write(block.probs, window=win)
        self.pixels += block.pixels

    def finish(self, spec: FinetunedSpec, names: list[str]) -> None:
        """Tag the rasters with their model and classes; scale and name the probability bands.

        Args:
            spec: The model's spec.
            names: One name per class (``geopera view`` and the STAC items show them).
        """
        values = self.coding.values.tolist()
        self.dst.update_tags(geopera_model=str(spec.weights), task=spec.task,
                             **class_tags(values, names))  # fmt: skip
        if self.probs_dst is not None:
            self.probs_dst.update_tags(
                geopera_kind="probabilities", task=spec.task, band_classes=json.dumps(values)
            )
            self.probs_dst.scales = [1 / 254] * len(self.coding.values)
            self.probs_dst.descriptions = [f"class {v}" for v in self.coding.values.tolist()]


def to_cog(tmp: Path, output: Path) -> None:
    """Copy a finished scratch GeoTIFF to ``output`` as a COG (atomically)."""
    # single-threaded compression: NUM_THREADS=ALL_CPUS costs ~70 MB of buffers
    with atomic_file(output) as cog:
        rasterio.shutil.copy(tmp, cog, driver="COG", compress="DEFLATE", BIGTIFF="IF_SAFER")
