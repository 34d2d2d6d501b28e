"""Chips and spatially disjoint splits; chip datasets."""

from pathlib import Path

import numpy as np
import pytest
import torch

from geopera.data.labelled.chips import ChipDataset, ClassMap, make_chips
from geopera.data.labelled.labels import IGNORE, Grid, LabelError
from geopera.data.labelled.scenes import Scene, expand_paths, segmentation_scenes
from tests.fakes.archive import write_raster


def _scene(tmp_path: Path, name: str, size: int = 128, crs: str | None = "EPSG:32633") -> Scene:
    path = tmp_path / f"{name}.tif"
    data = np.arange(3 * size * size, dtype=np.float32).reshape(3, size, size)
    write_raster(path, data, crs, (500000.0, 4000000.0), 10.0)
    labels = np.random.default_rng(0).integers(0, 3, (size, size)).astype(np.int32)
    return Scene(str(path), Grid.of(path), labels)


def test_splits_are_disjoint_blocks_shared_by_co_located_scenes(tmp_path: Path) -> None:
    scenes = [_scene(tmp_path, "a"), _scene(tmp_path, "b")]  # two dates of one grid
    chips = make_chips(scenes, chip_size=16, block_chips=2, val_fraction=0.2, test_fraction=0.2)
    assert len(chips) == 2 * 64
    assert {c.split for c in chips} == {"train", "val", "test"}
    split_of_block: dict[tuple[int, int], set[str]] = {}
    for c in chips:
        split_of_block.setdefault((c.row // 32, c.col // 32), set()).add(c.split)
    assert all(len(s) == 1 for s in split_of_block.values())  # one split per 32 px block
    where = {(c.scene, c.row, c.col): c.split for c in chips}
    assert all(where[(0, r, c)] == where[(1, r, c)] for _, r, c in where)  # same place, same split
    pixels = {s: np.zeros((128, 128), bool) for s in ("train", "val", "test")}
    for c in chips:
        if c.scene == 0:
            assert not pixels[c.split][c.row : c.row + 16, c.col : c.col + 16].any()
            pixels[c.split][c.row : c.row + 16, c.col : c.col + 16] = True
    assert not (pixels["train"] & pixels["test"]).any()


def test_too_few_blocks_is_an_actionable_error(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match=r"at least 3"):
        make_chips([_scene(tmp_path, "a", size=32)], chip_size=16, block_chips=2)
    with pytest.raises(LabelError, match=r"lower data\.chip_size"):
        make_chips([_scene(tmp_path, "b", size=32)], chip_size=64)


def test_glob_pairs_chips_by_the_wildcard_part(shared_data: Path) -> None:
    folder = shared_data / "b_segmentation" / "chesapeake_naip_geobench"
    images = expand_paths([str(folder / "*_naip_RGBN.tif")])
    labels = expand_paths([str(folder / "*_landcover.tif")])
    assert sorted(images) == sorted(labels) == ["id_000051", "id_000138", "id_000181", "id_000184"]
    scenes = segmentation_scenes(
        [str(folder / "*_naip_RGBN.tif")], str(folder / "*_landcover.tif"), None
    )
    assert len(scenes) == 4
    assert all(s.grid.crs is None for s in scenes)


def test_chip_dataset_reads_windows_and_encodes_classes(tmp_path: Path) -> None:
    scene = _scene(tmp_path, "a", size=64)
    scene.labels[:8, :8] = 7
    scene.labels[8:16, :8] = IGNORE
    chips = make_chips([scene], 16, 1)
    classes = ClassMap.from_scenes([scene])
    assert classes.values == [0, 1, 2, 7]
    ds = ChipDataset([scene], chips, [2, 0], classes)
    first = next(i for i, c in enumerate(chips) if (c.row, c.col) == (0, 0))
    sample = ds[first]
    full = np.arange(3 * 64 * 64, dtype=np.float32).reshape(3, 64, 64)
    assert np.array_equal(sample["image"].numpy(), full[[2, 0], :16, :16])  # bands in model order
    assert (sample["mask"][:8, :8] == 3).all()  # value 7 -> index 3
    assert (sample["mask"][8:16, :8] == -1).all()


def test_second_date_on_another_grid_is_warped_onto_the_first(tmp_path: Path) -> None:
    from geopera.data.labelled.scenes import change_scenes

    before = tmp_path / "t1.tif"
    write_raster(
        before, np.ones((2, 64, 64), np.float32), "EPSG:32633", (500000.0, 4000000.0), 10.0
    )
    after_data = np.full((2, 32, 32), 500, np.float32)
    after_data[:, :, :16] = 100  # left half of the area
    after = tmp_path / "t2.tif"
    write_raster(after, after_data, "EPSG:32633", (500000.0, 4000000.0), 20.0)
    labels = np.zeros((1, 64, 64), np.uint8)
    labels[0, :, 40:] = 3  # any non-zero value is change
    write_raster(tmp_path / "cm.tif", labels, "EPSG:32633", (500000.0, 4000000.0), 10.0)
    (scene,) = change_scenes(before, after, tmp_path / "cm.tif")
    assert set(np.unique(scene.labels)) == {0, 1}
    chips = make_chips([scene], 16, 1)
    ds = ChipDataset([scene], chips, [0, 1], ClassMap([0, 1]))
    by_place = {(c.row, c.col): ds[i] for i, c in enumerate(chips)}
    assert by_place[(0, 0)]["after"].shape == (2, 16, 16)
    assert torch.allclose(by_place[(0, 0)]["after"], torch.tensor(100.0))
    assert torch.allclose(by_place[(0, 48)]["after"], torch.tensor(500.0))
    assert (by_place[(0, 48)]["mask"] == 1).all()
