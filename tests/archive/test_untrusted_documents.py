"""Documents from other people are data: they cannot run code or reach where they should not.

Recipes, catalogs and search URLs written to misbehave (issue 26); every bad one ends in one line.
"""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from geopera.core.errors import ArchiveError
from geopera.data.sources.trust import allow, check_asset, checked_hook
from tests.conftest import CliResult
from tests.fakes.http import FakeStorage
from tests.fakes.stac import ROI
from tests.pretrain.conftest import run_cli

CliRunner = Callable[..., CliResult]


@pytest.fixture(autouse=True)
def _no_permissions() -> None:
    allow()  # in-process CLI runs set them; each test starts without any


def _malicious_catalog(stac_catalog: Path, folder: Path, marker: Path) -> Path:
    """The test catalog with a shell command as one asset's href."""
    shutil.copytree(stac_catalog, folder)
    item_file = next((folder / "landsat").glob("LC08_224078*/*.json"))
    item = json.loads(item_file.read_text())
    item["assets"]["B2"]["href"] = f"x;touch {marker};#"
    item_file.write_text(json.dumps(item))
    return folder / "catalog.json"


def test_a_recipe_cannot_name_a_hook_that_runs_code(stac_catalog: Path, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    catalog = _malicious_catalog(stac_catalog, tmp_path / "catalog", marker)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"name: shared\ndescription: a shared recipe\nlicence: CC-BY-4.0\ncatalog: {catalog}\n"
        "sign: os:system\n"
    )
    proc = run_cli("archive", "inspect", str(recipe), "--roi", ROI)  # a real process
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "sign hook 'os:system'" in proc.stderr
    assert "--allow-hook os:system" in proc.stderr
    assert not marker.exists()


def test_a_search_url_cannot_name_a_hook_that_runs_code(cli: CliRunner, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    url = f"stac+http://127.0.0.1:9/search?collections=x&sign=os:system&q={marker}"
    proc = cli("archive", "inspect", url, "--roi", ROI)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "--allow-hook os:system" in proc.stderr
    assert not marker.exists()


def test_an_allowed_hook_must_return_a_url_of_the_same_kind() -> None:
    sign = checked_hook("mine:sign", lambda href: href + "?token=1")
    assert sign("https://host/a.tif") == "https://host/a.tif?token=1"
    with pytest.raises(ArchiveError, match="sign hook os:system returned int"):
        checked_hook("os:system", lambda href: 0)("https://host/a.tif")
    with pytest.raises(ArchiveError, match="sign hook bad:sign returned '/etc/passwd'"):
        checked_hook("bad:sign", lambda href: "/etc/passwd")("https://host/a.tif")


def test_a_catalog_that_lists_itself_is_a_problem_row(
    stac_catalog: Path, tmp_path: Path, cli: CliRunner
) -> None:
    shutil.copytree(stac_catalog, tmp_path / "c")
    catalog = tmp_path / "c" / "catalog.json"
    doc = json.loads(catalog.read_text())
    doc["links"].append({"rel": "child", "href": "./catalog.json"})  # itself
    catalog.write_text(json.dumps(doc))
    landsat = tmp_path / "c" / "landsat" / "collection.json"
    doc = json.loads(landsat.read_text())
    doc["links"].append({"rel": "child", "href": "../catalog.json"})  # back up
    landsat.write_text(json.dumps(doc))
    proc = cli("archive", "inspect", str(catalog), "--roi", ROI, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [s["name"] for s in report["sources"]] == ["landsat8_30m"]
    cycles = [p for p in report["problems"] if "a cycle" in p["reason"]]
    assert len(cycles) == 2


def test_a_remote_catalog_cannot_name_local_files_or_virtual_paths(
    stac_catalog: Path, tmp_path: Path, cli: CliRunner
) -> None:
    root = tmp_path / "c"
    shutil.copytree(stac_catalog, root)
    for item_file in (root / "landsat").glob("*/*.json"):
        item = json.loads(item_file.read_text())
        item["assets"]["B2"]["href"] = "/etc/hostname"
        item["assets"]["B3"]["href"] = "file:///etc/hostname"
        item["assets"]["B4"]["href"] = "/vsizip//etc/archive.zip/x.tif"
        item_file.write_text(json.dumps(item))
    with FakeStorage(root) as served:
        proc = cli("archive", "inspect", f"{served.url}/catalog.json", "--roi", ROI, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    files = [f for s in report["sources"] for f in s["files"]]
    # "/etc/hostname" is a path on the catalog's own server, never a local file
    assert files
    assert all(f.startswith(f"/vsicurl/{served.url}/etc/hostname") for f in files)
    reasons = " ".join(p["reason"] for p in report["problems"])
    assert "names the local file 'file:///etc/hostname'" in reasons
    assert "names the GDAL virtual path '/vsizip//etc/archive.zip/x.tif'" in reasons


def test_asset_rules() -> None:
    check_asset("/data/a.tif", "/catalogs/local.json")  # a local catalog may name files
    check_asset("https://host/a.tif", "https://host/catalog.json")
    check_asset("/data/a.tif", None)  # given by the user
    with pytest.raises(ArchiveError, match="--allow-local-assets"):
        check_asset("/data/a.tif", "https://host/catalog.json")
    with pytest.raises(ArchiveError, match="GDAL virtual path"):
        check_asset("/vsicurl/https://elsewhere/a.tif", "/catalogs/local.json")
    allow(local_assets=True)
    check_asset("/data/a.tif", "https://host/catalog.json")
