from pathlib import Path

import shapely
import torch
from torchgeo.datasets import RasterDataset, UnionDataset
from torchgeo.samplers import RandomPatchSampler

from geopera.data.sampling.readers import SourceReader, build_torchgeo_dataset
from geopera.data.sources.discover import discover


def test_each_source_is_a_torchgeo_dataset(fake_archive: Path) -> None:
    archive = discover([fake_archive])
    s2 = archive.source("sentinel2_10m")
    dataset = build_torchgeo_dataset(s2, ["B08", "B02"])
    assert isinstance(dataset, RasterDataset)
    assert dataset.separate_files
    assert dataset.res == s2.res
    sample = dataset[dataset.bounds]
    assert sample["image"].shape == (2, 96, 96)


def test_fast_path_matches_torchgeo_inside_one_file(fake_archive: Path) -> None:
    archive = discover([fake_archive])
    for name, bands in (("sentinel2_10m", ["B08", "B02"]), ("landsat8_30m", ["B2", "B4"])):
        source = archive.source(name)
        reader = SourceReader(source, bands)
        boxes = [shapely.box(*it.bounds) for it in source.items]
        sampler = RandomPatchSampler(reader.dataset, size=24, length=30, generator=1)
        compared = 0
        for x, y in sampler:
            window = shapely.box(x.start, y.start, x.stop, y.stop)
            if sum(b.intersects(window) and not b.touches(window) for b in boxes) != 1:
                continue  # overlaps: torchgeo mosaics files, the fast path reads one file
            fast = torch.from_numpy(reader.read(x.start, y.start, x.stop, y.stop).astype("f4"))
            reference = reader.dataset[x, y]["image"]
            assert torch.equal(fast, reference)
            compared += 1
        assert compared >= 5
        assert reader.fast_reads == compared


def test_mixed_layout_source_and_fallback(tmp_path: Path) -> None:
    import numpy as np

    from tests.fakes.archive import write_raster

    data = (np.arange(3 * 40 * 40).reshape(3, 40, 40) % 1000 + 1).astype(np.uint16)
    for i, band in enumerate(("B2", "B3", "B4")):
        write_raster(tmp_path / f"LC08_P_{band}.TIF", data[i : i + 1], "EPSG:32621", (0, 1200), 30)
    write_raster(tmp_path / "LC08_Q_B2B3B4.tif", data + 1, "EPSG:32621", (1200, 1200), 30)
    source = discover([tmp_path]).sources[0]
    assert len(source.items) == 2
    assert {it.separate for it in source.items} == {True, False}
    reader = SourceReader(source, ["B4", "B2"])
    assert isinstance(reader.dataset, UnionDataset)
    inside_q = reader.read(1200 + 300, 300, 1200 + 600, 600)
    assert np.array_equal(inside_q, data[[2, 0], 20:30, 10:20] + 1)
    across = reader.read(900, 300, 1500, 600)  # spans both files: torchgeo mosaics them
    assert reader.fallback_reads == 1
    assert across.shape == (2, 10, 20)
    assert np.array_equal(across[:, :, :10], data[[2, 0], 20:30, 30:40])
