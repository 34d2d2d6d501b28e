"""`geopera publish` on a real (tiny) ViT-S/16 run, checked from a fresh Python process."""

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult
from tests.fakes.hostile import files_under
from tests.pretrain.conftest import LANDSAT_ROI, SMALL, run_cli

CliRunner = Callable[..., CliResult]

# the real ViT-S/16 architecture (publishable), small heads and crops
SMALL_RUN = [*SMALL, "--batch-size", "2", "--max-steps", "2"]


@pytest.fixture(scope="module")
def vit_small_run(fake_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    proc = run_cli(
        "pretrain",
        "--archive",
        str(fake_archive / "landsat"),
        "--roi",
        LANDSAT_ROI,
        *SMALL_RUN,
        "--out",
        str(run),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.mark.slow
def test_publish_and_use_from_a_fresh_process(vit_small_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "published"
    proc = run_cli("publish", str(vit_small_run), "--name", "fake_landsat_pera", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "verified with torchgeo" in proc.stdout
    files = sorted(p.name for p in out.iterdir())
    weights = next(f for f in files if f.endswith(".pth"))
    assert weights.startswith("vit_small_patch16_224_fake_landsat_pera-")
    assert files == sorted(
        [
            "CONTRIBUTING.md",
            "README.md",
            "weights.csv",
            "weights.json",
            weights,
            "vit_small_patch16_224_fake_landsat_pera.py",
        ]
    )
    card = (out / "README.md").read_text()
    assert "PerA" in card
    assert "10.1080/10095020.2026.2628435" in card
    assert (
        "ViTSmall16_FakeLandsatPera_Weights.FAKE_LANDSAT_PERA" in (out / "weights.csv").read_text()
    )
    assert "vit.py" in (out / "CONTRIBUTING.md").read_text()
    script = f"""
import hashlib, sys, torch, torchgeo.models, torchgeo.tasks
sys.path.insert(0, {str(out)!r})
torch.hub.set_dir({str(tmp_path / "hub")!r})
from vit_small_patch16_224_fake_landsat_pera import ViTSmall16_FakeLandsatPera_Weights as W
import geopera.publish
geopera.publish.register(W)
member = torchgeo.models.get_weight("ViTSmall16_FakeLandsatPera_Weights.FAKE_LANDSAT_PERA")
assert member is W.FAKE_LANDSAT_PERA
assert torchgeo.models.get_model_weights("ViTSmall16_FakeLandsatPera_Weights") is W
meta = member.meta
assert meta["ssl_method"] == "pera"
assert meta["bands"] == ["B4", "B3", "B2"]
assert meta["in_chans"] == 3
model = torchgeo.models.vit_small_patch16_224(weights=member)
task = torchgeo.tasks.Classification(
    model="vit_small_patch16_224", weights=member, in_channels=3, num_classes=4
)
x = member.transforms(torch.rand(1, 3, 224, 224) * 10000)
print(tuple(model.forward_features(x).shape))
"""
    check = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr[-3000:]
    assert check.stdout.strip().endswith("(1, 197, 384)")
    meta = json.loads((vit_small_run / "backbone.json").read_text())
    assert meta["img_size"] == 32  # the export resampled the position grid to 224


@pytest.mark.slow
def test_publish_refuses_and_writes_nothing(
    vit_small_run: Path, tmp_path: Path, fake_archive: Path, cli: CliRunner
) -> None:
    out = tmp_path / "p"
    proc = run_cli("publish", str(vit_small_run), "--name", "9bad", "--out", str(out))
    assert proc.returncode == 2
    assert "must start with a letter" in proc.stderr
    assert not out.exists()
    tiny = tmp_path / "tiny-run"
    (tiny).mkdir()
    meta = json.loads((vit_small_run / "backbone.json").read_text())
    meta["model_kwargs"] = {"embed_dim": 32}
    (tiny / "backbone.json").write_text(json.dumps(meta))
    (tiny / "backbone.pth").write_bytes((vit_small_run / "backbone.pth").read_bytes())
    proc = cli("publish", str(tiny), "--name", "x", "--out", str(out))
    assert proc.returncode == 2
    assert "has no torchgeo.models builder" in proc.stderr
    assert not out.exists()
    status = json.loads((vit_small_run / "run.json").read_text())
    (tiny / "run.json").write_text(json.dumps({**status, "status": "interrupted"}))
    proc = cli("publish", str(tiny), "--name", "x", "--out", str(out))
    assert "not completed" in proc.stderr
    assert not out.exists()


def test_names_in_a_shared_card_do_not_name_files(
    vit_small_run: Path, tmp_path: Path, cli: CliRunner
) -> None:
    """A backbone.json from someone else names sources and bands as paths: they stay text."""
    run = tmp_path / "shared-run"
    shutil.copytree(vit_small_run, run)
    card = json.loads((run / "backbone.json").read_text())
    card["bands"] = ["../../escaped", "/tmp/geopera_abs_band", "CON"][: len(card["bands"])]
    card["sources"] = [{**s, "name": "../../../escaped_source"} for s in card["sources"]]
    (run / "backbone.json").write_text(json.dumps(card))
    before = files_under(tmp_path)
    out = tmp_path / "deep" / "published"
    proc = cli("publish", str(run), "--name", "shared", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert files_under(tmp_path) - before == files_under(out)
    assert not list(Path("/tmp").glob("geopera_abs_band*"))
    assert "../../escaped" in (out / "weights.json").read_text()
