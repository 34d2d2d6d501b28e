from pathlib import Path

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geopera.core.errors import ROIError, SamplingError
from geopera.data.roi import load_roi
from geopera.data.sampling.patches import PatchDataset, invalid_fraction, is_constant
from geopera.data.sampling.sampler import (
    MixedPatchSampler,
    gridded_locations,
    prepare_sources,
    source_weights,
)
from geopera.data.sources.discover import discover
from tests.fakes.archive import write_raster

# Inside both overlapping fake Landsat tiles (EPSG:32621; see tests/fakes/archive.py).
LANDSAT_ROI = "EPSG:32621;POLYGON((700300 -2795400, 705400 -2795400, 705400 -2790300, 700300 -2790300, 700300 -2795400))"  # noqa: E501


@pytest.fixture(scope="module")
def prepared(fake_archive: Path) -> list:
    archive = discover([fake_archive])
    chosen = archive.select("rgb")
    roi = load_roi("EPSG:4326;" + _union_roi_wkt(archive))
    return prepare_sources(chosen, roi, 16)


def _union_roi_wkt(archive) -> str:  # type: ignore[no-untyped-def]
    """A lon/lat ROI covering every fake source (a MultiPolygon across continents)."""
    boxes = [shapely.box(*s.bounds_wgs84).buffer(0.01) for s in archive.sources]
    return shapely.union_all(boxes).wkt


def test_roi_intersection_per_source(prepared: list) -> None:
    names = [s.source.name for s in prepared]
    assert names == ["landsat8_30m", "ortho_0p5m", "sentinel2_10m"]
    for s in prepared:
        assert s.roi.within(s.source.footprint.buffer(1e-6))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), epoch=st.integers(0, 5))
def test_patches_inside_roi_and_deterministic(prepared: list, seed: int, epoch: int) -> None:
    weights = source_weights(prepared, None)
    sampler = MixedPatchSampler(prepared, 16, 24, weights, seed=seed)
    sampler.set_epoch(epoch)
    first = list(sampler)
    assert first == list(sampler)  # same (seed, epoch) -> same stream
    assert len(first) == 24
    for src, xmin, ymin, xmax, ymax, _ in first:
        s = prepared[src]
        rx, ry = s.source.res
        assert xmax - xmin == pytest.approx(16 * rx)
        assert ymax - ymin == pytest.approx(16 * ry)
        assert shapely.box(xmin, ymin, xmax, ymax).within(s.roi.buffer(1e-6))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), world=st.integers(2, 4))
def test_ranks_draw_disjoint_patches(prepared: list, seed: int, world: int) -> None:
    weights = source_weights(prepared, None)
    shards = [
        list(MixedPatchSampler(prepared, 16, 40, weights, seed=seed, rank=r, world_size=world))
        for r in range(world)
    ]
    indices = [loc[5] for shard in shards for loc in shard]
    assert len(indices) == len(set(indices)) == 40 // world * world
    union = sorted((loc for shard in shards for loc in shard), key=lambda loc: loc[5])
    single = list(MixedPatchSampler(prepared, 16, 40 // world * world, weights, seed=seed))
    assert union == single  # the ranks partition the single-process stream


def test_epochs_differ_and_resume_continues_stream(prepared: list) -> None:
    weights = source_weights(prepared, None)
    sampler = MixedPatchSampler(prepared, 16, 12, weights, seed=3)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch0 != epoch1
    resumed = MixedPatchSampler(prepared, 16, 12, weights, seed=3)
    resumed.set_epoch(1)
    resumed.start_index = 5
    assert list(resumed) == epoch1[5:]
    assert len(resumed) == 7


def test_weights_follow_pixel_area(prepared: list) -> None:
    weights = source_weights(prepared, None)
    pixels = [s.area / (s.source.res[0] * s.source.res[1]) for s in prepared]
    assert weights == pytest.approx([p / sum(pixels) for p in pixels])
    assert source_weights(prepared, [1, 0, 1]) == pytest.approx([0.5, 0, 0.5])
    with pytest.raises(ValueError, match="one weight per source"):
        source_weights(prepared, [1.0])


def test_quality_control_rejects_nodata_and_constant(prepared: list) -> None:
    image = np.ones((3, 4, 4), dtype=np.uint16)
    assert is_constant(image)
    image[0, 0, 0] = 2
    assert not is_constant(image)
    image[:, :2, :] = 0
    assert invalid_fraction(image, 0) == pytest.approx(0.5)
    image[1, 3, :] = 0  # nodata in one band only: still a valid pixel
    assert invalid_fraction(image, 0) == pytest.approx(0.5)
    floats = image.astype(np.float32)
    floats[1, 3, 3] = np.nan
    assert invalid_fraction(floats, None) == pytest.approx(1 / 16)
    assert is_constant(np.full((2, 4, 4), np.nan, dtype=np.float32))
    floats = np.full((1, 4, 4), 5.0, dtype=np.float32)
    floats[0, 0, 0] = np.nan
    assert is_constant(floats)


def test_patch_dataset_counts_rejections(fake_archive: Path) -> None:
    archive = discover([fake_archive / "landsat"])
    roi = load_roi(LANDSAT_ROI)
    prepared = prepare_sources(archive.select(None), roi, 16)
    # A location on the 8-px nodata border of tile A: more than 10 % nodata.
    x0, y0 = 700000.0 + 30 * 40, -2790000.0 - 30 * 16
    border = (0, x0, y0 - 30 * 16 + 30 * 12, x0 + 30 * 16, y0 + 30 * 12, 0)
    data = PatchDataset(prepared, 16, seed=0, max_invalid=0.1)
    sample = data[border]
    assert int(sample["rejected"]) >= 1
    assert invalid_fraction(sample["image"].numpy(), 0) <= 0.1


def test_mostly_nodata_roi_stops_with_clear_error(tmp_path: Path) -> None:
    data = np.zeros((1, 64, 64), dtype=np.uint16)
    data[0, ::9, ::9] = 1000  # a sparse grid of valid pixels: every patch is > 90 % nodata
    write_raster(tmp_path / "holes.tif", data, "EPSG:32621", (700000.0, -2790000.0), 30.0, 0)
    archive = discover([tmp_path])
    roi = load_roi("EPSG:32621;" + shapely.box(*archive.sources[0].footprint.bounds).wkt)
    prepared = prepare_sources(archive.select(None), roi, 16)
    dataset = PatchDataset(prepared, 16, seed=0, max_invalid=0.1, max_attempts=4)
    location = next(iter(MixedPatchSampler(prepared, 16, 1, np.ones(1), seed=0)))
    with pytest.raises(SamplingError, match=r"4 patches in a row.*mostly nodata.*lon"):
        dataset[location]


def test_roi_errors(fake_archive: Path) -> None:
    archive = discover([fake_archive / "landsat"])
    chosen = archive.select(None)
    with pytest.raises(ROIError, match=r"intersects no source.*landsat8_30m: lon"):
        prepare_sources(chosen, load_roi("10,45,11,46"), 16)
    tiny = "EPSG:32621;POLYGON((701000 -2791300, 701100 -2791300, 701100 -2791200, 701000 -2791200, 701000 -2791300))"  # noqa: E501
    with pytest.raises(ROIError, match="too small for a 16-px patch"):
        prepare_sources(chosen, load_roi(tiny), 16)


def test_roi_wider_than_a_patch_but_not_its_diagonal(fake_archive: Path) -> None:
    """A 12-px-wide ROI is wider than a 10 px patch, but torchgeo's sampler needs 14 px."""
    archive = discover([fake_archive / "landsat"])
    chosen = archive.select(None)
    square = "EPSG:32621;" + shapely.box(701000, -2791400, 701000 + 12 * 30, -2791040).wkt
    with pytest.raises(ROIError, match=r"360 x 360 CRS units; a patch of 300 x 300 needs room "
                       r"for its diagonal, 424, both ways\).*data.patch_size"):  # fmt: skip
        prepare_sources(chosen, load_roi(square), 10)
    assert prepare_sources(chosen, load_roi(square), 8)  # 8 px: diagonal 339 < 360


def test_gridded_locations_cover_roi(fake_archive: Path) -> None:
    archive = discover([fake_archive / "landsat"])
    prepared = prepare_sources(archive.select(None), load_roi(LANDSAT_ROI), 16)
    locations = gridded_locations(prepared, 16)
    assert len(locations) > 10
    boxes = [shapely.box(*loc[1:5]) for loc in locations]
    assert len({b.wkt for b in boxes}) == len(boxes)
