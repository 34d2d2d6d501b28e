"""Tiled inference: exact blending across tiles and column bands, nodata, ROI, bounded buffers."""

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from shapely.geometry import box

from geopera.core.contracts import FinetunedSpec
from geopera.core.normalisation import BandStats
from geopera.data.labelled.labels import Grid
from geopera.data.labelled.windows import roi_window
from geopera.data.roi import load_roi
from geopera.finetune.segmentation import DenseHead
from geopera.predict.tiled import (
    balanced_chunks,
    blend_window,
    column_bands,
    dense_blocks,
    open_inputs,
    tile_origins,
)
from tests.fakes.archive import write_raster

SPEC = FinetunedSpec(
    task="segmentation", model="vit_small_patch16_224", in_chans=2, bands=["1", "2"],
    data_bands=[0, 1], chip_size=32, head=DenseHead("upernet", 32),
    classes=[0, 1], norm=BandStats((0.0,) * 2, (1.0,) * 2, (0.5,) * 2, (0.2,) * 2),
)  # fmt: skip


def _pixelwise(batch: torch.Tensor) -> torch.Tensor:
    """A 'model' whose output at a pixel depends on that pixel only.

    (B, 1, C, T, T) -> (B, 2, T, T).
    """
    x = batch[:, 0, 0] / 100.0
    return torch.stack([torch.sigmoid(x), 1 - torch.sigmoid(x)], 1)


def _raster(tmp_path: Path, h: int = 70, w: int = 90, nodata: float | None = None) -> Path:
    data = np.random.default_rng(0).normal(0, 100, (2, h, w)).astype(np.float32)
    if nodata is not None:
        data[:, 10:20, 30:50] = nodata
    path = tmp_path / "in.tif"
    write_raster(path, data, "EPSG:32633", (500000.0, 4000000.0), 10.0, nodata=nodata)
    return path


def _assemble(
    path: Path, band_width: int, tile: int = 32, overlap: int = 8, roi: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    grid, inputs = open_inputs([str(path)], SPEC)
    window, geom = roi_window(grid, load_roi(roi) if roi else None)
    probs = np.full((2, grid.height, grid.width), np.nan, np.float32)
    valid = np.zeros((grid.height, grid.width), bool)
    rows_seen = np.zeros((grid.height, grid.width), int)
    for b in dense_blocks(
        _pixelwise, inputs, window, geom, grid.transform, tile, overlap, 2, 4, band_width
    ):
        h, w = b.valid.shape
        probs[:, b.row : b.row + h, b.col : b.col + w] = b.probs
        valid[b.row : b.row + h, b.col : b.col + w] = b.valid
        rows_seen[b.row : b.row + h, b.col : b.col + w] += 1
    assert rows_seen[valid].max() == 1  # every pixel written once
    return probs, valid


def test_tiles_cover_the_span_flush_with_the_edge() -> None:
    assert tile_origins(0, 100, 32, 24) == [0, 24, 48, 68]
    assert tile_origins(0, 20, 32, 24) == [0]
    assert column_bands(0, 100, 40) == [(0, 33), (33, 67), (67, 100)]
    assert [len(c) for c in balanced_chunks(list(range(37)), 16)] == [13, 12, 12]
    assert [i for c in balanced_chunks(list(range(37)), 16) for i in c] == list(range(37))
    w = blend_window(32, 8)
    assert w.min() > 0
    assert w[16, 16] == 1
    assert w[0, 0] < w[4, 4] < w[16, 16]


@pytest.mark.parametrize("band_width", [1000, 40, 17])
def test_blending_equals_the_whole_raster_at_once(tmp_path: Path, band_width: int) -> None:
    path = _raster(tmp_path)
    probs, valid = _assemble(path, band_width)
    with rasterio.open(path) as ds:
        whole = _pixelwise(torch.from_numpy(ds.read().astype(np.float32))[None, None]).numpy()[0]
    assert valid.all()
    assert np.allclose(probs, whole, atol=1e-5)  # same result with any band width


def test_nodata_and_outside_roi_stay_empty(tmp_path: Path) -> None:
    path = _raster(tmp_path, nodata=-9999)
    grid = Grid.of(path)
    _, valid = _assemble(path, 1000)
    assert not valid[10:20, 30:50].any()
    assert valid[30:, :].all()
    x0, y0 = grid.transform.c, grid.transform.f
    roi = f"EPSG:32633;{box(x0 + 100, y0 - 500, x0 + 400, y0 - 300).wkt}"  # rows 30-49, cols 10-39
    _probs, valid = _assemble(path, 1000, roi=roi)
    assert valid[30:50, 10:40].all()
    assert valid.sum() == 20 * 30


def test_raster_smaller_than_a_tile(tmp_path: Path) -> None:
    path = _raster(tmp_path, h=20, w=25)
    probs, valid = _assemble(path, 1000, tile=32)
    assert valid.all()
    assert probs.shape == (2, 20, 25)


def test_strips_are_read_while_the_model_computes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geopera.predict.tiled as tiled

    model_running = threading.Event()
    read_during_model = threading.Event()
    real_read = tiled.read_strip

    def watched_read(*args: Any, **kwargs: Any) -> Any:  # the real read, observed
        if model_running.is_set() and threading.current_thread() is not threading.main_thread():
            read_during_model.set()
        return real_read(*args, **kwargs)

    def slow_model(batch: torch.Tensor) -> torch.Tensor:
        model_running.set()
        read_during_model.wait(timeout=10)  # returns at once when the reader is ahead
        model_running.clear()
        return _pixelwise(batch)

    monkeypatch.setattr(tiled, "read_strip", watched_read)
    grid, inputs = open_inputs([str(_raster(tmp_path, h=200, w=60))], SPEC)
    window, _ = roi_window(grid, None)
    blocks = list(
        dense_blocks(slow_model, inputs, window, None, grid.transform, 32, 8, 2, 4, pipeline=True)
    )
    assert read_during_model.is_set()
    assert sum(b.valid.sum() for b in blocks) == 200 * 60  # and the result is whole
