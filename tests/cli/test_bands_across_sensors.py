"""A backbone from one sensor on another, through every stage's command line (issue 27).

A Landsat 8 RGB backbone (B4, B3, B2) is used on a 13-band Sentinel-2 scene, where red, green
and blue are B04, B03, B02; a Sentinel-2 13-band backbone on a 7-band Landsat 8 scene, with the
seven bands they share. Real pixels: the eo-learn Slovenia Sentinel-2 scene and its land cover.
"""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geopera.core.contracts import BackboneCard
from geopera.data.identity import identify
from geopera.models.loading import build_vit
from tests.conftest import TINY_VIT, CliResult

CliRunner = Callable[..., CliResult]
SLOVENIA = "a_pretrain/sentinel2_eolearn_slovenia/S2L1C_reference_scene0.tif"  # 13 bands
LULC = "b_segmentation/eolearn_slovenia_lulc/LULC.tif"  # classes 0..8 on the same grid
NAIP = "b_segmentation/chesapeake_naip_geobench/id_000051_naip_RGBN.tif"
NAIP_LABELS = "b_segmentation/chesapeake_naip_geobench/id_000051_landcover.tif"
S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
#: Landsat 8 OLI bands 1-7 and the Sentinel-2 bands that measure the same (for a fake scene).
L8_FROM_S2 = {"B1": "B01", "B2": "B02", "B3": "B03", "B4": "B04", "B5": "B8A", "B6": "B11",
              "B7": "B12"}  # fmt: skip


def _backbone(folder: Path, bands: list[str], family: str) -> Path:
    """A tiny backbone whose card knows what its bands measure (as pretraining writes it)."""
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    vit = build_vit("vit_small_patch16_224", len(bands), 64, TINY_VIT)
    torch.save(vit.state_dict(), folder / BackboneCard.WEIGHTS_FILE)
    card = BackboneCard(
        model="vit_small_patch16_224",
        in_chans=len(bands),
        token_size=16,
        img_size=64,
        model_kwargs=dict(TINY_VIT),
        bands=bands,
        band_identities=identify(bands, family),
    )
    card.write(folder / BackboneCard.FILE)
    return folder


@pytest.fixture(scope="module")
def landsat_rgb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _backbone(tmp_path_factory.mktemp("bb") / "landsat", ["B4", "B3", "B2"], "landsat8")


def _cut(source: Path, out: Path, names: list[str], new_names: list[str] | None = None) -> Path:
    """Some bands of a raster, as a new file whose band descriptions name them."""
    with rasterio.open(source) as src:
        profile = src.profile | {"count": len(names)}
        data = src.read([S2.index(n) + 1 for n in names])
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = tuple(new_names or names)
    return out


def test_embed_reads_red_green_blue_of_a_sentinel2_scene(
    landsat_rgb: Path, shared_data: Path, tmp_path: Path, cli: CliRunner
) -> None:
    scene = shared_data / SLOVENIA
    args = ["--weights", str(landsat_rgb), "--chip-size", "32", "--no-progress"]
    whole = cli("embed", "--input", str(scene), "--out", str(tmp_path / "whole"), *args)
    assert whole.returncode == 0, whole.stderr
    assert "note: data bands the backbone has no input for: B01 (coastal)" in whole.stderr
    assert "Warning" not in whole.stderr  # notes are lines, not warnings with a source line
    rgb = _cut(scene, tmp_path / "S2L1C_rgb.tif", ["B04", "B03", "B02"])
    cut = cli("embed", "--input", str(rgb), "--out", str(tmp_path / "cut"), *args)
    assert cut.returncode == 0, cut.stderr
    entry = json.loads((tmp_path / "whole" / "embeddings.json").read_text())["rasters"][0]
    assert entry["band_rule"] == "by-identity"
    assert entry["band_names"] == ["B04", "B03", "B02"]
    assert [i["common"] for i in entry["band_identities"]] == ["red", "green", "blue"]
    with (
        rasterio.open(tmp_path / "whole" / f"{scene.stem}.tif") as a,
        rasterio.open(tmp_path / "cut" / "S2L1C_rgb.tif") as b,
    ):
        np.testing.assert_array_equal(a.read(), b.read())  # the same tokens as the 3-band cut
    mapped = tmp_path / "by-hand"
    by_hand = ["--bands", "red=B04", "green=B03", "blue=B02"]
    proc = cli("embed", "--input", str(scene), "--out", str(mapped), *args, *by_hand)
    assert proc.returncode == 0, proc.stderr
    entry = json.loads((mapped / "embeddings.json").read_text())["rasters"][0]
    assert entry["band_rule"] == "by-hand"
    with (
        rasterio.open(tmp_path / "whole" / f"{scene.stem}.tif") as a,
        rasterio.open(mapped / f"{scene.stem}.tif") as b,
    ):
        np.testing.assert_array_equal(a.read(), b.read())


def test_finetune_and_predict_use_the_same_bands(
    landsat_rgb: Path, shared_data: Path, tmp_path: Path, cli: CliRunner
) -> None:
    scene, labels = shared_data / SLOVENIA, shared_data / LULC
    proc = cli(
        "finetune", "segmentation", "--weights", str(landsat_rgb), "--images", str(scene),
        "--labels", str(labels), "--max-steps", "2", "--set", "data.chip_size=32",
        "--set", "model.decoder_channels=32", "--out", str(tmp_path / "ft"), "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["band_rule"] == "by-identity"
    assert metrics["bands"] == ["B04", "B03", "B02"]
    assert [p["from_input"] for p in metrics["band_plan"]] == [0, 1, 2]
    # the ten other bands as new inputs, each started from the nearest-wavelength one
    adapt = cli(
        "finetune", "segmentation", "--weights", str(landsat_rgb), "--images", str(scene),
        "--labels", str(labels), "--max-steps", "1", "--set", "data.chip_size=32",
        "--set", "model.decoder_channels=32", "--out", str(tmp_path / "adapt"), "--no-progress",
        "--extra-bands", "adapt",
    )  # fmt: skip
    assert adapt.returncode == 0, adapt.stderr
    plan = json.loads((tmp_path / "adapt" / "metrics.json").read_text())["band_plan"]
    assert len(plan) == 13
    assert [p["band"] for p in plan[:4]] == ["B04", "B03", "B02", "B01"]
    assert plan[3]["from_input"] == 2  # coastal (443 nm) starts from blue
    rare = cli(
        "finetune", "segmentation", "--weights", str(landsat_rgb), "--images", str(scene),
        "--labels", str(labels), "--set", "data.chip_size=32", "--min-per-class", "1000",
        "--out", str(tmp_path / "rare"),
    )  # fmt: skip
    assert rare.returncode == 2
    assert "lower --min-per-class" in rare.stderr
    assert not (tmp_path / "rare").exists()
    # the model reads B04, B03, B02 of any raster that has them, wherever they are in the file
    shuffled = _cut(scene, tmp_path / "S2L1C_shuffled.tif", ["B02", "B08", "B03", "B04"])
    out = tmp_path / "pred.tif"
    model = str(tmp_path / "ft" / "model.ckpt")
    proc = cli(
        "predict", "segmentation", "--model", model, "--input", str(shuffled), "--output", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    direct = tmp_path / "direct.tif"
    proc = cli(
        "predict", "segmentation", "--model", model, "--input", str(scene), "--output", str(direct)
    )
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(out) as a, rasterio.open(direct) as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_evaluate_on_a_naip_tile_uses_its_rgb_and_drops_rare_classes(
    landsat_rgb: Path, shared_data: Path, tmp_path: Path, cli: CliRunner
) -> None:
    # bands 1..4 without descriptions: R, G, B, NIR by the file name's colour run
    tile, labels = shared_data / NAIP, shared_data / NAIP_LABELS
    base = ["evaluate", "knn", "--weights", str(landsat_rgb), "--data", str(tile)]
    base += ["--labels", str(labels), "--chip-size", "16", "--seeds", "1", "--no-cache"]
    proc = cli(*base, "--min-per-class", "5", "--out", str(tmp_path / "ev"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    # classes 2 and 6 are the majority of 3 and 4 chips: named and left out, not fatal
    assert "class(es) ['2', '6'] have fewer than 5 images: left out" in proc.stderr
    assert "note: data bands the backbone has no input for: 4 (nir)" in proc.stderr
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["classes"] == ["1", "3", "4"]
    backbone_rows = [r for r in results["rows"] if r["weights"] not in ("majority", "chance")]
    assert {r["band_rule"] for r in backbone_rows} == {"by-identity"}
    on_s2 = [
        "evaluate",
        "knn",
        "--weights",
        str(landsat_rgb),
        "--data",
        str(shared_data / SLOVENIA),
    ]
    on_s2 += ["--labels", str(shared_data / LULC), "--chip-size", "16", "--seeds", "1"]
    two = ["--devices", "2", "--batch-size", "16"]  # at least a batch for each process
    proc = cli(*on_s2, "--no-cache", "--out", str(tmp_path / "s2"), *two)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "s2" / "results.json").read_text())["rows"]
    rows = [r for r in rows if r["weights"] not in ("majority", "chance")]
    assert {r["band_rule"] for r in rows} == {"by-identity"}  # B04, B03, B02 of Sentinel-2
    strict = cli(*base, "--out", str(tmp_path / "ev2"), "--min-per-class", "100")
    assert strict.returncode == 2
    assert "only 1 class(es) have at least 100 images" in strict.stderr
    assert not (tmp_path / "ev2").exists()


def test_a_sentinel2_backbone_fine_tunes_on_the_seven_bands_it_shares_with_landsat8(
    shared_data: Path, tmp_path: Path, cli: CliRunner
) -> None:
    backbone = _backbone(tmp_path / "s2", S2, "sentinel2")
    landsat = _cut(
        shared_data / SLOVENIA,
        tmp_path / "LC08_fake_20200101_B1B2B3B4B5B6B7.tif",  # bands named by the file name
        list(L8_FROM_S2.values()),
    )
    with rasterio.open(landsat, "r+") as ds:
        ds.descriptions = (None,) * 7  # the names come from the file name, not descriptions
    proc = cli(
        "finetune", "segmentation", "--weights", str(backbone), "--images", str(landsat),
        "--labels", str(shared_data / LULC), "--max-steps", "2", "--set", "data.chip_size=32",
        "--set", "model.decoder_channels=32", "--out", str(tmp_path / "ft"), "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["band_rule"] == "by-identity"
    assert metrics["bands"] == list(L8_FROM_S2)
    # coastal, blue, green, red, nir08 (S2 B8A), swir16 (B11), swir22 (B12)
    assert [p["from_input"] for p in metrics["band_plan"]] == [0, 1, 2, 3, 8, 11, 12]
    assert "lacks the backbone's B05 (rededge), B06 (rededge), B07 (rededge), B08" in proc.stderr
