"""``geopera pretrain --init WEIGHTS``: continued pretraining from a backbone users already have."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch

from geopera.core.errors import GeoperaNote
from geopera.models.loading import (
    WeightsError,
    build_vit,
    fit_state_dict,
    load_into,
    load_state_dict_file,
)
from geopera.pretrain.init import data_channels, init_source
from tests.conftest import TINY_VIT, CliResult

CliRunner = Callable[..., CliResult]


def test_the_run_starts_from_the_weights_and_frozen_steps_keep_them(
    tiny_args: list[str], backbone: Path, tmp_path: Path, cli: CliRunner
) -> None:
    """The fake Landsat archive's B4, B3, B2 feed the backbone's B04, B03, B02 (by identity)."""
    run = tmp_path / "continued"
    frozen = ["--set", "optim.freeze_backbone_steps=2", "--set", "trainer.checkpoint_every=1"]
    proc = cli(*tiny_args, "--init", str(backbone), *frozen, "--max-steps", "2", "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    card = json.loads((run / "backbone.json").read_text())
    assert card["init"] == str(backbone)  # where the run started from
    assert card["model_kwargs"] == TINY_VIT  # the init's architecture, not the config's
    # only the heads learned: the teacher is still the init, resampled to the 32 px crops
    start = load_state_dict_file(backbone / "backbone.pth")
    vit = build_vit(card["model"], 3, card["img_size"], TINY_VIT)
    expected = fit_state_dict(start, vit, 3, [0, 1, 2])
    trained = torch.load(run / "backbone.pth", map_location="cpu", weights_only=True)
    assert trained.keys() == expected.keys()
    assert all(torch.equal(trained[k], expected[k]) for k in expected)
    vit.load_state_dict(expected)
    init = build_vit(card["model"], 3, card["img_size"], TINY_VIT)
    init.load_state_dict(fit_state_dict(start, init, 3))
    x = torch.randn(2, 3, card["img_size"], card["img_size"])
    with torch.no_grad():
        assert torch.equal(vit.forward_features(x), init.forward_features(x))  # the same features
    # a run that started from weights resumes like any other
    proc = cli("pretrain", "--resume", str(run), "--max-steps", "3", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "run.json").read_text())["steps"] == 3


def test_bad_init_is_one_line_and_writes_nothing(
    tiny_args: list[str],
    backbone: Path,
    tmp_path: Path,
    cli: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # no timm weights cached
    run = tmp_path / "bad"
    for init, message in (
        (str(tmp_path / "nowhere.pth"), "does not exist"),
        ("vit_small_patch16_224", "has no weights: a timm name is a random initialisation"),
    ):
        proc = cli(*tiny_args, "--init", init, "--out", str(run))
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not run.exists()
    both = cli("pretrain", "--resume", str(tmp_path), "--init", str(backbone))
    assert both.returncode == 2
    assert "--init only starts a new run" in both.stderr


def test_a_timm_name_starts_from_its_weights_in_the_local_cache_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights laid out as huggingface_hub caches them; nothing is downloaded (no network here)."""
    from safetensors.torch import save_file

    name, repo = "vit_tiny_patch16_224", "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match="unless its pretrained weights are in the local"):
        init_source(name, name)  # an empty cache: refused, not fetched
    torch.manual_seed(3)
    weights = timm.create_model(name).state_dict()
    snapshot = tmp_path / repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    save_file(weights, str(snapshot / "model.safetensors"))
    (tmp_path / repo / "refs").mkdir()
    (tmp_path / repo / "refs" / "main").write_text("abc123")
    source = init_source(name, name)
    assert source.state_dict is not None
    assert "local cache" in source.origin
    assert all(torch.equal(source.state_dict[k], weights[k]) for k in source.state_dict)


def test_archive_bands_map_onto_the_weights_by_the_band_rule(backbone: Path) -> None:
    """Per archive band, the weights' input it starts from (None: timm adapts the inputs)."""
    source = init_source(str(backbone), "vit_small_patch16_224")  # B04, B03, B02
    assert data_channels(source, ["B02", "B03", "B04"], None) == [2, 1, 0]  # by name, reordered
    assert data_channels(source, ["B04", "B03", "B02"], None) == [0, 1, 2]
    with pytest.warns(GeoperaNote, match="4 bands into a backbone of 3"):
        assert data_channels(source, ["1", "2", "3", "4"], None) is None
    vit = build_vit("vit_small_patch16_224", 4, 32, TINY_VIT)
    load_into(vit, source, 4, None)  # four inputs from three: timm's adapt_input_conv
    assert vit.patch_embed.proj.weight.shape[1] == 4
