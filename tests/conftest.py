"""Shared fixtures: fake archives, the real data in ../shared/data, small ROIs."""

import os
from pathlib import Path

import pytest

from tests.fakes.archive import make_fake_archive

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
