"""Shared fixtures: fake archives, the real data in ../shared/data, small ROIs."""

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.fakes.archive import make_fake_archive
from tests.fakes.http import FakeStorage
from tests.fakes.stac import make_stac_catalog

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def threads_of_one_rank() -> Iterator[None]:
    """Torch on the threads each of two ranks gets (Lightning gives each ``cores // 2``).

    Float sums split over another number of threads can round differently, so the one-process
    runs that two-process runs are compared with, bit for bit, use this.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before // 2))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def free_port() -> int:
    """A TCP port nothing listens on now (for a rendezvous of test processes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(
    *args: str, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """``torchrun --nnodes 1 --nproc-per-node 2 ARGS`` (two ranks on this machine, over gloo).

    Args:
        args: What torchrun runs: ``-m geopera CMD ...`` or a script and its arguments.
        env: The environment (default: this process's).
        timeout: Seconds before the test fails.
    """
    exe = str(Path(sys.executable).with_name("torchrun"))
    ranks = ["--nnodes", "1", "--nproc-per-node", "2", "--master-port", str(free_port())]
    return subprocess.run(
        [exe, *ranks, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def shared_data_dir() -> Path:
    """``$GEOPERA_SHARED_DATA`` or ``../shared/data`` beside the repository."""
    env = os.environ.get("GEOPERA_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder; skipped with a reason when absent, a failure when CI=true."""
    path = shared_data_dir()
    if not path.is_dir():
        message = f"real test data not found at {path} (set GEOPERA_SHARED_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI must run the real-data tests")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def fake_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A messy fake archive (see tests/fakes/archive.py); read-only for tests."""
    return make_fake_archive(tmp_path_factory.mktemp("fake_archive"))


@pytest.fixture(autouse=True)
def _stats_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep statistics caches out of the user's home folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))


@pytest.fixture(scope="session")
def stac_catalog(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static STAC catalog over real rasters as COGs (tests/fakes/stac.py); read-only."""
    root = tmp_path_factory.mktemp("stac")
    make_stac_catalog(root, shared_data)
    return root


@pytest.fixture
def served(stac_catalog: Path) -> Iterator[FakeStorage]:
    """``stac_catalog`` served over HTTP on 127.0.0.1 (fresh request counts per test)."""
    with FakeStorage(stac_catalog) as storage:
        yield storage


@dataclass(frozen=True)
class CliResult:
    """What one ``geopera`` command line gave: its exit code and what it printed."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``geopera ARGS`` in this process (the console script's ``main``), for quick CLI tests.

    The same parser, error handling and exit codes as the installed script, without a process
    start (seconds of imports); tests that must see a real process use ``run_cli``.
    """

    def run(*args: str) -> CliResult:
        from geopera.cli.main import main

        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exit:  # argparse's usage errors, as the script would exit
            code = exit.code if isinstance(exit.code, int) else 1
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run


#: A tiny ViT/16 (``model_kwargs`` of a backbone card): seconds to build and run on the CPU.
TINY_VIT = {"depth": 2, "embed_dim": 32, "num_heads": 2}


@pytest.fixture(scope="session")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ViT/16 backbone that knows its bands (B04, B03, B02), as a run would write it."""
    import torch

    from geopera.models.loading import build_vit

    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    vit = build_vit("vit_small_patch16_224", 3, 64, TINY_VIT)
    torch.save(vit.state_dict(), folder / "backbone.pth")
    from geopera.data.identity import identify

    bands = ["B04", "B03", "B02"]
    card = {
        "format_version": 3,
        "model": "vit_small_patch16_224",
        "model_kwargs": TINY_VIT,
        "in_chans": 3,
        "bands": bands,
        "band_identities": [i.to_dict() if i else None for i in identify(bands, "sentinel2")],
        "token_size": 16,
        "img_size": 64,
    }
    (folder / "backbone.json").write_text(json.dumps(card))
    return folder


#: The Sentinel-2 scene (13 bands, 10 m) that :func:`embedded` embeds.
EMBEDDED_SCENE = "c_change_detection/oscd_bercy/T1_S2L1C_13bands_10m.tif"


@pytest.fixture(scope="session")
def embedded(backbone: Path, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``geopera embed`` folder (patch COG and chip table) of one Sentinel-2 scene."""
    from geopera.embed.run import embed

    out = tmp_path_factory.mktemp("embedded") / "emb"
    with threads_of_one_rank():  # the reference of the two-process runs
        embed([str(shared_data / EMBEDDED_SCENE)], out, weights=str(backbone), chip_size=64)
    return out
