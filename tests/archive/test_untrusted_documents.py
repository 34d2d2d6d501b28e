"""Documents from other people are data: they cannot run code or reach where they should not.

Recipes, catalogs and search URLs written to misbehave (issue 26); every bad one ends in one line.
"""

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import rasterio
import rasterio.errors

from geopera.core.errors import ArchiveError
from geopera.data.sources.remote import load_hook
from geopera.data.sources.stac_search import StacSearch, search_cap
from geopera.data.sources.trust import Signer, allow, check_asset
from tests.conftest import CliResult
from tests.fakes.http import FakeStorage
from tests.fakes.stac import LANDSAT, ROI, original_landsat
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
    sign = Signer("mine:sign", lambda href: href + "?token=1")
    assert sign("https://host/a.tif") == "https://host/a.tif?token=1"
    with pytest.raises(ArchiveError, match="sign hook os:system returned int"):
        Signer("os:system", lambda href: 0)("https://host/a.tif")
    with pytest.raises(ArchiveError, match="sign hook bad:sign returned '/etc/passwd'"):
        Signer("bad:sign", lambda href: "/etc/passwd")("https://host/a.tif")


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


def test_a_document_that_redirects_to_another_scheme_is_one_line(
    served: FakeStorage, cli: CliRunner
) -> None:
    served.inject("/catalog.json", "redirect:file:///etc/hostname")
    proc = cli("archive", "inspect", f"{served.url}/catalog.json", "--roi", ROI)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "redirects to a file:// URL" in proc.stderr
    assert "refused" in proc.stderr


def test_a_redirect_on_the_same_scheme_is_followed(served: FakeStorage, cli: CliRunner) -> None:
    served.inject("/moved.json", f"redirect:{served.url}/catalog.json")
    proc = cli("archive", "inspect", f"{served.url}/moved.json", "--roi", ROI, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["sources"]


def test_an_asset_that_redirects_to_a_local_file_is_not_read(
    served: FakeStorage, tmp_path: Path, shared_data: Path
) -> None:
    """GDAL's HTTP client (libcurl) follows redirects to HTTP(S) and FTP(S) only."""
    target = original_landsat(shared_data, LANDSAT[0])  # a real raster, would open if followed
    path = f"/landsat/{LANDSAT[0]}/B2.tif"
    served.inject(path, *[f"redirect:file://{target}"] * 20)
    with (
        rasterio.Env(GDAL_HTTP_MAX_RETRY="0"),
        pytest.raises(rasterio.errors.RasterioIOError),
    ):
        rasterio.open(f"/vsicurl/{served.url}{path}?fresh=1")


def test_a_signer_travels_to_workers_by_name() -> None:
    allow(hooks=["tests.fakes.http:sign_with_token"])
    signer = load_hook("tests.fakes.http:sign_with_token")
    copy = pickle.loads(pickle.dumps(signer))
    assert copy.spec == signer.spec
    assert copy("https://host/a.tif") == "https://host/a.tif?token=test-token"


def test_max_items_bounds_a_catalog_walk(stac_catalog: Path, cli: CliRunner) -> None:
    catalog = str(stac_catalog / "landsat" / "collection.json")
    proc = cli("archive", "inspect", catalog, "--roi", ROI, "--json", "--max-items", "1")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    files = [f for s in report["sources"] for f in s["files"]]
    assert len({f.rsplit("/", 2)[-2] for f in files}) == 1  # one of the two Landsat items
    assert any("more than 1 items" in p["reason"] for p in report["problems"])
    bad = cli("archive", "inspect", catalog, "--roi", ROI, "--max-items", "0")
    assert bad.returncode == 2
    assert "--max-items: must be a positive integer, got '0'" in bad.stderr


def test_max_items_caps_what_a_search_asks_for() -> None:
    assert search_cap(StacSearch(api="https://h")) == 200
    assert search_cap(StacSearch(api="https://h", max_items=5000)) == 5000
    allow(max_items=50)
    assert search_cap(StacSearch(api="https://h")) == 50
    assert search_cap(StacSearch(api="https://h", max_items=5000)) == 50  # never above the user's
    assert search_cap(StacSearch(api="https://h", max_items=10)) == 10
