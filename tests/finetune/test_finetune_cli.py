"""`geopera finetune` through the CLI on the real shared data, every shipped config."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from geopera.core.yaml_config import load_config
from geopera.finetune.checkpoint import load_finetuned
from geopera.finetune.config import FinetuneConfig
from tests.conftest import CliResult
from tests.finetune.conftest import CONFIGS, TINY_VIT, local_config, run_cli

CliRunner = Callable[..., CliResult]

CASES = {
    "slovenia_lulc.yaml": ("segmentation", TINY_VIT, "miou"),
    "atlanta_buildings.yaml": ("segmentation", TINY_VIT, "miou"),
    # DPT needs a stock timm architecture (no depth override): the smallest one
    "chesapeake_chips.yaml": (
        "segmentation",
        ["--set", "model.backbone=vit_tiny_patch16_224", "--no-progress"],
        "miou",
    ),
    "neon_trees.yaml": ("detection", TINY_VIT, "map_50"),
    "oscd_bercy.yaml": ("change", TINY_VIT, "f1"),
    "chesapeake_tiles.yaml": ("classification", TINY_VIT, "accuracy"),
    "slovenia_dem.yaml": ("regression", TINY_VIT, "rmse"),
}


def test_every_shipped_config_is_tested() -> None:
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(CASES)
    for name in CASES:
        load_config(CONFIGS / name, FinetuneConfig)  # every key is known


#: The fast_dev_runs over ~11 s (all run in CI; one segmentation config stays in the fast loop).
SLOW_CASES = {
    "neon_trees.yaml",
    "chesapeake_chips.yaml",
    "oscd_bercy.yaml",
    "atlanta_buildings.yaml",
}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_CASES else n for n in sorted(CASES)],
)
def test_config_fast_dev_run(name: str, shared_data: Path, tmp_path: Path) -> None:
    task, extra, key = CASES[name]
    config = local_config(name, shared_data, tmp_path)
    out = tmp_path / "model"
    result = run_cli(
        "finetune", task, "--config", str(config), "--fast-dev-run", "--out", str(out), *extra
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"test {key}" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == task
    assert metrics["fast_dev_run"] is True
    assert min(metrics["chips"].values()) > 0
    assert key in metrics["test"]
    assert key in metrics["val"]
    assert sorted(p.name for p in (out / "previews").glob("*.png"))
    model = load_finetuned(out / "model.ckpt")
    assert model.spec.task == task
    assert model.spec.chip_size > 0
    if extra is TINY_VIT:  # model.backbone_kwargs builds the random-init architecture
        assert model.spec.model_kwargs == {"depth": 2, "embed_dim": 64, "num_heads": 2}
        assert len(model.vit.blocks) == 2
        assert model.vit.embed_dim == 64
    assert not list(tmp_path.glob(".model.partial-*"))  # no leftovers


def test_segmentation_from_vector_labels_with_class_field(
    shared_data: Path, tmp_path: Path
) -> None:
    s = shared_data
    result = run_cli(
        "finetune",
        "segmentation",
        "--images",
        str(s / "a_pretrain/sentinel2_eolearn_slovenia/S2L1C_reference_scene0.tif"),
        "--labels",
        str(s / "b_segmentation/eolearn_slovenia_lulc/LULC.gpkg"),
        "--class-field",
        "LULC_ID",
        "--set",
        "data.chip_size=32",
        "--set",
        "data.block_chips=1",
        "--max-steps",
        "2",
        "--freeze-backbone",
        "--set",
        "optim.layer_decay=0.75",
        "--out",
        str(tmp_path / "m"),
        *TINY_VIT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    import geopandas as gpd

    codes = set(gpd.read_file(s / "b_segmentation/eolearn_slovenia_lulc/LULC.gpkg")["LULC_ID"])
    assert set(metrics["classes"]) <= codes
    assert len(metrics["classes"]) >= 3
    assert metrics["steps"] == 2
    model = load_finetuned(tmp_path / "m")
    state = torch.load(tmp_path / "m" / "model.ckpt", weights_only=True)["state_dict"]
    assert model.spec.freeze_backbone is True
    assert any(k.startswith("model.vit.") for k in state)


def test_a_card_feeds_finetuning_by_band_identity(shared_data: Path, tmp_path: Path) -> None:
    """A card with bands B04, B03, B02 and their identities selects those of OSCD's 13."""
    from geopera.data.identity import identify
    from geopera.models.loading import build_vit

    vit = build_vit("vit_small_patch16_224", 3, 32, {"depth": 2, "embed_dim": 64, "num_heads": 2})
    run = tmp_path / "run"
    run.mkdir()
    torch.save(vit.state_dict(), run / "backbone.pth")
    bands = ["B04", "B03", "B02"]
    meta = {
        "format_version": 3,
        "model": "vit_small_patch16_224",
        "in_chans": 3,
        "bands": bands,
        "band_identities": [i.to_dict() if i else None for i in identify(bands, "sentinel2")],
        "model_kwargs": {"depth": 2, "embed_dim": 64, "num_heads": 2},
        "ssl_method": "pera",
        "token_size": 16,
        "img_size": 32,
    }
    (run / "backbone.json").write_text(json.dumps(meta))
    config = local_config("oscd_bercy.yaml", shared_data, tmp_path)
    result = run_cli(
        "finetune",
        "change",
        "--config",
        str(config),
        "--weights",
        str(run),
        "--max-steps",
        "1",
        "--freeze-backbone",
        "--out",
        str(tmp_path / "m"),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["bands"] == ["B04", "B03", "B02"]
    assert metrics["band_rule"] == "by-identity"
    assert metrics["ssl_method"] == "pera"
    model = load_finetuned(tmp_path / "m")
    assert torch.equal(model.vit.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)
    assert model.spec.data_bands == [3, 2, 1]
    # an architecture override that contradicts the weights is refused, not ignored
    result = run_cli(
        "finetune",
        "change",
        "--config",
        str(config),
        "--weights",
        str(run),
        "--set",
        "model.backbone_kwargs={depth: 3}",
        "--out",
        str(tmp_path / "x"),
        "--no-progress",
    )
    assert result.returncode == 2
    assert "differs from the architecture of the weights" in result.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_errors_are_one_line_and_leave_nothing(
    shared_data: Path, tmp_path: Path, cli: CliRunner
) -> None:
    config = local_config("oscd_bercy.yaml", shared_data, tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    result = run_cli(
        "finetune", "change", "--config", str(config), "--out", str(tmp_path / "taken")
    )
    assert result.returncode == 2
    assert "already exists" in result.stderr
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    result = cli(
        "finetune",
        "change",
        "--config",
        str(config),
        "--weights",
        "nope",
        "--out",
        str(tmp_path / "m"),
    )
    assert result.returncode == 2
    assert "timm model name" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "m").exists()
    result = cli(
        "finetune",
        "segmentation",
        "--images",
        str(tmp_path / "none.tif"),
        "--labels",
        str(tmp_path / "l.tif"),
        "--out",
        str(tmp_path / "m"),
    )
    assert result.returncode == 2
    assert "does not exist" in result.stderr
