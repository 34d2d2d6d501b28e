"""Backbone loading: every kind of --weights, and the band rule."""

import json
from pathlib import Path

import pytest
import torch

from geopera.core.errors import GeoperaError
from geopera.models.loading import (
    WeightsError,
    build_vit,
    load_into,
    resolve_weights,
)

TINY = {"depth": 2, "embed_dim": 32, "num_heads": 2}


def _write_backbone(folder: Path, bands: list[str], img_size: int = 32) -> torch.nn.Module:
    vit = build_vit("vit_small_patch16_224", len(bands), img_size, TINY)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(vit.state_dict(), folder / "backbone.pth")
    meta = {
        "model": "vit_small_patch16_224",
        "model_kwargs": TINY,
        "in_chans": len(bands),
        "bands": bands,
        "ssl_method": "pera",
        "token_size": 16,
        "img_size": img_size,
        "format_version": 1,
    }
    (folder / "backbone.json").write_text(json.dumps(meta))
    return vit


def test_run_directory_and_pth_file_load_the_same_weights(tmp_path: Path) -> None:
    reference = _write_backbone(tmp_path / "run", ["B4", "B3", "B2"])
    from_dir = resolve_weights(tmp_path / "run", "ignored")
    from_file = resolve_weights(tmp_path / "run" / "backbone.pth", "ignored")
    for source in (from_dir, from_file):
        assert source.bands == ["B4", "B3", "B2"]
        assert source.ssl_method == "pera"
        vit = build_vit(source.model, 3, 32, source.model_kwargs)
        load_into(vit, source, 3)
        assert torch.equal(vit.blocks[1].mlp.fc1.weight, reference.blocks[1].mlp.fc1.weight)


def test_pos_embed_is_resampled_to_another_chip_size(tmp_path: Path) -> None:
    reference = _write_backbone(tmp_path / "run", ["B4", "B3", "B2"], img_size=32)  # 2x2 grid
    source = resolve_weights(tmp_path / "run", "ignored")
    vit = build_vit(source.model, 3, 64, source.model_kwargs)  # 4x4 grid
    load_into(vit, source, 3)
    assert vit.pos_embed.shape[1] == 1 + 16
    assert torch.equal(vit.pos_embed[:, 0], reference.pos_embed[:, 0])  # class token untouched


def test_timm_name_is_random_initialisation() -> None:
    source = resolve_weights("vit_tiny_patch16_224", "ignored")
    assert source.state_dict is None
    assert source.model == "vit_tiny_patch16_224"
    assert resolve_weights(None, "vit_small_patch16_224").model == "vit_small_patch16_224"


def test_unknown_weights_name_says_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"run directory, backbone \.pth"):
        resolve_weights("not_a_model_or_path", "vit_small_patch16_224")
    with pytest.raises(FileNotFoundError, match=r"without backbone\.pth"):
        resolve_weights(tmp_path, "vit_small_patch16_224")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_weights(tmp_path / "missing.pth", "vit_small_patch16_224")


def test_a_card_without_identities_has_none(tmp_path: Path) -> None:
    """Identities are what the card records; band names are never guessed into them."""
    _write_backbone(tmp_path / "run", ["B4", "B3", "B2"])
    card = json.loads((tmp_path / "run" / "backbone.json").read_text())
    card["sources"] = [{"name": "landsat8_30m", "files": ["LC08_x.tif"]}]
    (tmp_path / "run" / "backbone.json").write_text(json.dumps(card))
    assert resolve_weights(tmp_path / "run", "x").identities is None


def test_channels_pick_and_scale_the_learned_inputs(tmp_path: Path) -> None:
    vit = _write_backbone(tmp_path / "run", ["B4", "B3", "B2"])
    source = resolve_weights(tmp_path / "run", "x")
    old = vit.patch_embed.proj.weight.detach()  # (D, 3, p, p)
    same = build_vit(source.model, 3, 32, source.model_kwargs)
    load_into(same, source, 3, [0, 1, 2])
    assert torch.equal(same.patch_embed.proj.weight, old)  # all inputs in order: unchanged
    swapped = build_vit(source.model, 3, 32, source.model_kwargs)
    load_into(swapped, source, 3, [2, 1, 0])
    assert torch.equal(swapped.patch_embed.proj.weight, old[:, [2, 1, 0]])  # same count: unscaled
    two = build_vit(source.model, 2, 32, source.model_kwargs)
    load_into(two, source, 2, [0, 2])  # one input left out: the rest scaled by 3 / 2
    assert torch.allclose(two.patch_embed.proj.weight, old[:, [0, 2]] * 1.5)
    four = build_vit(source.model, 4, 32, source.model_kwargs)
    load_into(four, source, 4, [0, 1, 2, 0])  # a new input started from input 0, scaled 3 / 4
    assert torch.allclose(four.patch_embed.proj.weight[:, 3], old[:, 0] * 0.75)


def test_adapt_input_conv_when_the_plan_names_no_inputs(tmp_path: Path) -> None:
    _write_backbone(tmp_path / "run", ["B4", "B3", "B2"])
    source = resolve_weights(tmp_path / "run", "x")
    vit = build_vit(source.model, 5, 32, source.model_kwargs)
    load_into(vit, source, 5)
    old = source.state_dict["patch_embed.proj.weight"]  # type: ignore[index]
    # timm's rule: channels repeated cyclically, rescaled by old / new channel count
    assert torch.allclose(vit.patch_embed.proj.weight[:, 3], old[:, 0] * 3 / 5)


def test_published_folder_loads_as_weights(tmp_path: Path) -> None:
    from geopera.publish.run import publish

    vit = build_vit("vit_small_patch16_224", 3, 224)
    (tmp_path / "run").mkdir()
    torch.save(vit.state_dict(), tmp_path / "run" / "backbone.pth")
    meta = {
        "format_version": 3,
        "model": "vit_small_patch16_224",
        "model_kwargs": {},
        "in_chans": 3,
        "bands": ["B4", "B3", "B2"],
        "token_size": 16,
        "img_size": 224,
        "normalisation": {"mean": [0.0] * 3, "std": [1.0] * 3},
    }
    (tmp_path / "run" / "backbone.json").write_text(json.dumps(meta))
    publish(tmp_path / "run", "TEST_RGB", tmp_path / "pub")
    source = resolve_weights(tmp_path / "pub", "ignored")
    assert source.bands == ["B4", "B3", "B2"]
    assert source.ssl_method == "pera"
    loaded = build_vit(source.model, 3, 224)
    load_into(loaded, source, 3)
    assert torch.equal(loaded.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)


EVIL = """from pathlib import Path
Path({marker!r}).write_text("geopera ran code from a weights folder")
"""


def _evil_folder(folder: Path, marker: Path) -> Path:
    folder.mkdir()
    (folder / "weights.csv").write_text("")
    (folder / "weights_module.py").write_text(EVIL.format(marker=str(marker)))
    return folder


def test_a_weights_folder_never_runs_code(tmp_path: Path, shared_data: Path) -> None:
    """The issue's check, as a user meets it: ``geopera finetune --weights FOLDER``."""
    from tests.finetune.conftest import local_config, run_cli

    marker = tmp_path / "marker"
    folder = _evil_folder(tmp_path / "downloaded", marker)
    config = local_config("atlanta_buildings.yaml", shared_data, tmp_path)
    proc = run_cli(
        "finetune",
        "segmentation",
        "--config",
        str(config),
        "--weights",
        str(folder),
        "--out",
        str(tmp_path / "ft"),
        "--no-progress",
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "has no weights.json manifest" in lines[0]
    assert "never imports the Python files" in lines[0]
    assert not marker.exists()
    assert not (tmp_path / "ft").exists()


def test_weights_files_are_loaded_as_data_only(tmp_path: Path) -> None:
    """A .pth whose unpickling would run code is refused; the code does not run."""
    marker = tmp_path / "marker"
    _write_backbone(tmp_path / "run", ["B4", "B3", "B2"])
    state = {"weights": torch.zeros(1), "payload": _Payload(str(marker))}
    torch.save(state, tmp_path / "run" / "backbone.pth")
    with pytest.raises(WeightsError, match="loads safely"):
        resolve_weights(tmp_path / "run", "ignored")
    assert not marker.exists()


def test_a_damaged_publish_folder_is_refused(tmp_path: Path) -> None:
    from geopera.publish.run import publish

    vit = build_vit("vit_small_patch16_224", 3, 224)
    (tmp_path / "run").mkdir()
    torch.save(vit.state_dict(), tmp_path / "run" / "backbone.pth")
    card = {
        "model": "vit_small_patch16_224",
        "in_chans": 3,
        "bands": ["B4", "B3", "B2"],
        "token_size": 16,
        "img_size": 224,
        "format_version": 1,
        "normalisation": {"mean": [0.0] * 3, "std": [1.0] * 3},
    }
    (tmp_path / "run" / "backbone.json").write_text(json.dumps(card))
    info = publish(tmp_path / "run", "TEST_RGB", tmp_path / "pub")
    manifest = json.loads((tmp_path / "pub" / "weights.json").read_text())
    assert manifest["file_name"] == info.weights_file.name
    data = bytearray(info.weights_file.read_bytes())
    data[-100] ^= 0xFF
    info.weights_file.write_bytes(bytes(data))
    with pytest.raises(GeoperaError, match="SHA-256 differs"):
        resolve_weights(tmp_path / "pub", "ignored")


class _Payload:
    """Unpickling this would write a marker file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path, str]]:
        return (Path.write_text, (Path(self.path), "ran"))
