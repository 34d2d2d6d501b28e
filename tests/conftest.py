"""Shared fixtures: fake archives, the real data in ../shared/data, small ROIs."""

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.archive import make_fake_archive
from tests.fakes.http import FakeStorage
from tests.fakes.stac import make_stac_catalog

REPO = Path(__file__).resolve().parents[1]


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
