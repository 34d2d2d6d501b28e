"""A hostile catalog served on 127.0.0.1 names files: nothing is written outside ``--out``.

The catalog's item ids climb (``../../escaped``), are absolute, percent-encoded, full-width,
Windows-reserved, 300 characters long, or equal once cleaned (``Same``/``same``, ``a_b``/``a/b``).
"""

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import CliResult
from tests.fakes.hostile import HOSTILE_IDS, files_under, write_catalog, write_scene
from tests.fakes.http import FakeStorage


@pytest.fixture(scope="module")
def hostile(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FakeStorage, list[str], Path, str]]:
    """The served catalog, its ids, the absolute path one id names, and an ROI inside it."""
    base = tmp_path_factory.mktemp("hostile")
    (base / "served").mkdir()
    roi = write_scene(base / "served", shared_data)
    absolute = base / "abs_escaped"
    ids = [str(absolute) if i == "ABS" else i for i in HOSTILE_IDS]
    write_catalog(base / "served", ids, base / "served" / "scene.tif")
    with FakeStorage(base / "served") as storage:
        yield storage, ids, absolute, roi


def test_fetch_keeps_every_item_inside_out_under_its_own_name(
    hostile: tuple[FakeStorage, list[str], Path, str],
    tmp_path: Path,
    cli: Callable[..., CliResult],
) -> None:
    storage, ids, absolute, roi = hostile
    out = tmp_path / "deep" / "a" / "out"
    result = cli("data", "fetch", f"{storage.url}/catalog.json", "--roi", roi, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert files_under(tmp_path) == files_under(out)  # nothing beside or above --out
    assert not list(absolute.parent.glob(f"{absolute.name}*"))
    rows = json.loads((out / "fetch.json").read_text())["items"]
    assert sorted(r["scene"] for r in rows) == sorted(ids)  # the manifest keeps the real ids
    files = [r["file"] for r in rows]
    assert len({f.casefold() for f in files}) == len(ids)  # no two items share a file
    for row in rows:
        assert (out / row["file"]).resolve().parent.parent == out.resolve()
        assert json.loads((out / row["item"]).read_text())["id"] == row["scene"]
    # the copy's own catalog links every item by its safe name
    again = cli("archive", "inspect", str(out / "catalog.json"), "--roi", roi, "--json")
    assert again.returncode == 0, again.stderr
    assert len(json.loads(again.stdout)["sources"][0]["files"]) == len(ids)


def test_sample_writes_only_inside_out(
    hostile: tuple[FakeStorage, list[str], Path, str],
    tmp_path: Path,
    cli: Callable[..., CliResult],
) -> None:
    storage, _, _, roi = hostile
    out = tmp_path / "chips"
    args = ["archive", "sample", f"{storage.url}/catalog.json", "--roi", roi]
    result = cli(*args, "--size", "16", "--count", "4", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert files_under(tmp_path) == files_under(out)
    index = json.loads((out / "chips.geojson").read_text())
    assert len(index["features"]) == 4
    for feature in index["features"]:
        assert (out / feature["properties"]["path"]).is_file()
