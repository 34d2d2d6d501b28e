"""Helpers for pretraining tests: a tiny PerA config that runs in seconds on the CPU."""

import subprocess
import sys
from pathlib import Path

import pytest

LANDSAT_ROI = "EPSG:32621;POLYGON((700300 -2795400, 705400 -2795400, 705400 -2790300, 700300 -2790300, 700300 -2795400))"  # noqa: E501

#: Small heads and crops, for any backbone.
SMALL = [
    "--set", "model.prototypes=64",
    "--set", "model.head_hidden_dim=32",
    "--set", "model.head_bottleneck_dim=16",
    "--set", "views.global_size=32",
    "--set", "views.local_size=32",
    "--set", "views.n_local=1",
    "--set", "data.patch_size=48",
    "--set", "data.stats_patches=4",
    "--set", "trainer.log_every=1",
    "--set", "trainer.preview_patches=2",
    "--workers", "0",
    "--no-progress",
]  # fmt: skip

#: SMALL with a 2-block, 32-wide ViT: runs in seconds.
TINY = [
    "--set",
    "model.backbone_kwargs={embed_dim: 32, depth: 2, num_heads: 2}",
    *SMALL,
    "--batch-size",
    "4",
]


def geopera_exe() -> str:
    return str(Path(sys.executable).with_name("geopera"))


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [geopera_exe(), *args], capture_output=True, text=True, check=False, timeout=timeout
    )


@pytest.fixture
def tiny_args(fake_archive: Path) -> list[str]:
    return ["pretrain", "--archive", str(fake_archive / "landsat"), "--roi", LANDSAT_ROI, *TINY]
