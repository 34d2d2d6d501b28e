import json
from pathlib import Path

import numpy as np
import pytest

from geopera.data.roi import load_roi
from geopera.data.sampling.sampler import prepare_sources
from geopera.data.sampling.stats import ArchiveStats, estimate_stats
from geopera.data.sources.discover import discover
from tests.fakes.archive import write_raster


def test_stats_equal_numpy_and_are_cached(tmp_path: Path) -> None:
    # (x + y) mod 8 is uniform over any 16 x 16 window, so every patch has the histogram of
    # the whole raster: numpy on the whole file is an independent expected value.
    yy, xx = np.mgrid[0:80, 0:80]
    data = np.stack([(xx + yy) % 8 * 100 + 50, (3 * xx + yy) % 8 * 7 + 1]).astype(np.uint16)
    write_raster(tmp_path / "data" / "grid.tif", data, "EPSG:32633", (500000, 5000000), 10)
    archive = discover([tmp_path / "data"])
    roi = load_roi("EPSG:32633;" + archive.sources[0].footprint.wkt)
    prepared = prepare_sources(archive.select(["2", "1"]), roi, 16)
    cache = tmp_path / "cache"
    stats = estimate_stats(prepared, 16, patches=5, cache_dir=cache)
    entry = stats.sources["grid_10m"]
    assert entry.bands == ("2", "1")
    assert entry.pixels == (5 * 256, 5 * 256)
    for i, band in enumerate((1, 0)):
        values = data[band].astype(np.float64)
        lo, hi = np.percentile(values, [2, 98])
        scaled = np.clip((values - lo) / (hi - lo), 0, 1)  # what the views see
        assert entry.stats.p2[i] == pytest.approx(lo)
        assert entry.stats.p98[i] == pytest.approx(hi)
        assert entry.stats.mean[i] == pytest.approx(scaled.mean(), rel=1e-9)
        assert entry.stats.std[i] == pytest.approx(scaled.std(), rel=1e-6)
    cached = list(cache.glob("*.json"))
    assert len(cached) == 1
    assert json.loads(cached[0].read_text()) == stats.to_dict()
    assert ArchiveStats.from_dict(stats.to_dict()) == stats
    marked = stats.to_dict()
    marked["sources"]["grid_10m"]["patches"] = 99
    cached[0].write_text(json.dumps(marked))
    hit = estimate_stats(prepared, 16, patches=5, cache_dir=cache)
    assert hit.sources["grid_10m"].patches == 99  # cache hit


def test_stats_exclude_nodata(fake_archive: Path, tmp_path: Path) -> None:
    archive = discover([fake_archive / "albers"])
    source = archive.sources[0]
    roi = load_roi("EPSG:4326;" + __import__("shapely").box(*source.bounds_wgs84).wkt)
    prepared = prepare_sources(archive.select(None), roi, 32)
    stats = estimate_stats(prepared, 32, patches=8, cache_dir=tmp_path)
    assert stats.sources["albers_30m"].stats.p2[0] > -9999  # nodata never counted
