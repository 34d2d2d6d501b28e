"""STAC archives over real rasters from ../shared/data, served on 127.0.0.1 (no network)."""

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.windows import from_bounds

from geopera.core.errors import ArchiveError, GeoperaNote
from geopera.data.roi import load_roi
from geopera.data.sampling.patches import PatchDataset
from geopera.data.sampling.sampler import prepare_sources
from geopera.data.sources.discover import discover
from geopera.data.sources.recipes import load_recipe
from geopera.data.sources.stac_items import load_stac
from geopera.data.sources.stac_search import StacSpec, parse_search_url
from geopera.data.sources.trust import allow
from tests.fakes.http import FakeStorage
from tests.fakes.stac import LANDSAT, ROI, item_collection, make_stac_catalog, original_landsat

REPO = Path(__file__).resolve().parents[3]


def test_static_catalog_sources_match_the_rasters(stac_catalog: Path, shared_data: Path) -> None:
    archive = discover([str(stac_catalog / "catalog.json")])
    assert [s.name for s in archive.sources] == ["landsat8_30m", "sentinel2_10m"]
    assert archive.problems == []  # the thumbnails (missing files) are not rasters to read
    landsat = archive.source("landsat8_30m")
    assert landsat.band_names == ["B2", "B3", "B4"]
    assert sorted(it.scene for it in landsat.items) == sorted(LANDSAT)
    for item in landsat.items:
        with rasterio.open(original_landsat(shared_data, item.scene)) as src:
            assert item.crs == src.crs
            assert item.res == src.res
            assert item.bounds == pytest.approx(tuple(src.bounds))
            assert (item.width, item.height) == (src.width, src.height)
        assert [Path(a).name for a in item.assets] == ["B2.tif", "B3.tif", "B4.tif"]
    assert len(archive.source("sentinel2_10m").band_names) == 13
    assert landsat.resolve_bands("rgb") == ["B4", "B3", "B2"]
    assert landsat.resolve_bands(["red", "blue"]) == ["B4", "B2"]  # STAC common names


def test_over_http_listing_opens_no_raster(served: FakeStorage) -> None:
    archive = discover([f"{served.url}/catalog.json"])
    assert [s.name for s in archive.sources] == ["landsat8_30m", "sentinel2_10m"]
    assert served.count(".tif") == 0  # proj/raster metadata: no file opened
    files = archive.source("landsat8_30m").describe()["files"]
    assert all(f.startswith(f"/vsicurl/{served.url}/landsat/") for f in files)


def test_without_proj_metadata_headers_are_read(
    stac_catalog: Path, shared_data: Path, tmp_path: Path
) -> None:
    make_stac_catalog(tmp_path, shared_data, proj=False)
    with_proj = discover([str(stac_catalog / "catalog.json")])
    without = discover([str(tmp_path / "catalog.json")])
    for a, b in zip(with_proj.sources, without.sources, strict=True):
        assert (a.name, a.band_names, a.res, a.dtype) == (b.name, b.band_names, b.res, b.dtype)
        assert a.crs == b.crs
        assert a.footprint.equals(b.footprint)


def test_roi_leaves_out_items_outside(stac_catalog: Path) -> None:
    archive = discover([str(stac_catalog / "catalog.json")], roi=load_roi(ROI))
    assert [s.name for s in archive.sources] == ["landsat8_30m"]


def test_patches_read_over_http_equal_theoriginal_landsat(
    served: FakeStorage, shared_data: Path, tmp_path: Path
) -> None:
    roi = load_roi(ROI)
    archive = discover([f"{served.url}/catalog.json"], roi=roi)
    from geopera.data.sources.remote import BlockCache

    cache = BlockCache(tmp_path / "tiles", 10**8)
    prepared = prepare_sources(archive.select("rgb", None, roi=roi), roi, 32, cache=cache)
    dataset = PatchDataset(prepared, 32, seed=0)
    reader = prepared[0].reader
    locations = [(0, *b, k) for k, b in enumerate(_random_boxes(prepared[0].roi, 6))]
    first = [dataset[loc] for loc in locations]
    before = served.count(".tif")
    second = [dataset[loc] for loc in locations]
    assert served.count(".tif") == before  # every tile came from the cache
    assert cache.hits > 0
    for a, b in zip(first, second, strict=True):
        assert torch_equal(a["image"], b["image"])
    for sample in first:
        box = tuple(float(v) for v in sample["bounds"])
        assert shapely.contains(prepared[0].roi, shapely.box(*box))
        scene = _scene_at(reader, box)
        with rasterio.open(original_landsat(shared_data, scene)) as src:
            window = from_bounds(*box, transform=src.transform)
            expected = src.read([3, 2, 1], window=window.round_offsets().round_lengths())
        np.testing.assert_array_equal(sample["image"].numpy(), expected.astype(np.float32))
        # aligned onto the COG's 256-px tiles: a 32-px patch touches one tile
        col = round((box[0] - reader.item_bounds(0)[0]) / 30)
        assert col // 256 == (col + 31) // 256


def torch_equal(a: object, b: object) -> bool:
    import torch

    return bool(torch.equal(a, b))  # type: ignore[arg-type]


def _random_boxes(roi: object, n: int) -> list[tuple[float, float, float, float]]:
    rng = np.random.default_rng(0)
    minx, miny, maxx, maxy = roi.bounds  # type: ignore[attr-defined]
    out = []
    while len(out) < n:
        x = 728025 + 30 * int(rng.integers(0, int((maxx - minx) / 30) - 40))
        y = -2780985 - 30 * int(rng.integers(0, int((maxy - miny) / 30) - 40))
        box = (float(x), float(y - 960), float(x + 960), float(y))
        if shapely.contains(roi, shapely.box(*box)):  # type: ignore[arg-type]
            out.append(box)
    return out


def _scene_at(reader: object, box: tuple[float, ...]) -> str:
    index = reader.fast_item(*box)  # type: ignore[attr-defined]
    return str(reader.source.items[index].scene)  # type: ignore[attr-defined]


@pytest.mark.parametrize("fault", ["500", "503", "429", "truncate", "slow:2"])
def test_transient_faults_are_retried(
    served: FakeStorage, shared_data: Path, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.1")
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "1")
    roi = load_roi(ROI)
    archive = discover([f"{served.url}/catalog.json"], roi=roi)
    prepared = prepare_sources(archive.select("rgb", None, roi=roi), roi, 32)
    dataset = PatchDataset(prepared, 32, seed=0)
    box = _random_boxes(prepared[0].roi, 1)[0]
    scene = _scene_at(prepared[0].reader, box)
    path = f"/landsat/{scene}/B3.tif"
    served.inject(path, fault, fault)
    sample = dataset[(0, *box, 0)]
    assert not served.faults[path]  # both faults were met...
    assert dataset.bad_files.known() == set()  # ...and survived
    with rasterio.open(original_landsat(shared_data, scene)) as src:
        window = from_bounds(*[float(v) for v in sample["bounds"]], transform=src.transform)
        expected = src.read(2, window=window.round_offsets().round_lengths())
    np.testing.assert_array_equal(sample["image"][1].numpy(), expected)


def test_missing_asset_is_reported_and_the_rest_sample(
    stac_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.1")
    root = tmp_path / "cat"
    shutil.copytree(stac_catalog, root)
    (root / "landsat" / LANDSAT[1] / "B3.tif").unlink()
    roi = load_roi(ROI)
    with FakeStorage(root) as storage:
        archive = discover([f"{storage.url}/catalog.json"], roi=roi)
        assert archive.problems == []  # proj metadata: nothing opened yet
        prepared = prepare_sources(archive.select("rgb", None, roi=roi), roi, 32)
        dataset = PatchDataset(prepared, 32, seed=0)
        boxes = _random_boxes(prepared[0].roi, 8)
        samples = [dataset[(0, *b, k)] for k, b in enumerate(boxes)]
    assert len(samples) == 8  # every patch came from the readable item
    broken = next(it for it in prepared[0].source.items if it.scene == LANDSAT[1])
    assert dataset.bad_files.known() == set(broken.assets)  # the item, by its assets
    reasons = set(dataset.bad_files.reasons.values())
    assert any("B3.tif" in r and "404" in r for r in reasons), reasons


def test_missing_asset_without_proj_is_a_problem(shared_data: Path, tmp_path: Path) -> None:
    make_stac_catalog(tmp_path, shared_data, proj=False)
    (tmp_path / "landsat" / LANDSAT[1] / "B3.tif").unlink()
    archive = discover([str(tmp_path / "catalog.json")])
    (problem,) = archive.problems
    assert problem.path.endswith(f"{LANDSAT[1]}/B3.tif")
    assert f"asset 'B3' of item {LANDSAT[1]}" in problem.reason
    full = archive.source("landsat8_30m_3b")  # two sources of one sensor: named by band count
    assert [it.scene for it in full.items] == [LANDSAT[0]]  # the complete item keeps 3 bands
    partial = [s for s in archive.sources if s.band_names == ["B2", "B4"]]
    assert [it.scene for s in partial for it in s.items] == [LANDSAT[1]]


def test_item_collection_file(served: FakeStorage, stac_catalog: Path, tmp_path: Path) -> None:
    items = [json.loads(p.read_text()) for p in sorted(stac_catalog.glob("*/*/*.json"))]
    path = tmp_path / "search.geojson"
    path.write_text(json.dumps(item_collection(items, served.url)))
    archive = discover([str(path)], roi=load_roi(ROI))
    assert [s.name for s in archive.sources] == ["landsat8_30m"]
    assert len(archive.sources[0].items) == 2


def test_stac_api_search_pages(stac_catalog: Path, tmp_path: Path) -> None:
    items = [json.loads(p.read_text()) for p in sorted(stac_catalog.glob("*/*/*.json"))]
    with FakeStorage(stac_catalog) as storage:
        storage.items = item_collection(items, storage.url)["features"]
        spec = parse_search_url(
            f"stac+{storage.url}/search?collections=landsat-fake&limit=1&query=eo:cloud_cover<20"
        )
        assert spec.search is not None
        assert spec.search.query == ("eo:cloud_cover<20",)
        found, problems = load_stac(spec, load_roi(ROI))
        assert problems == []
        assert sorted(it.scene for it in found) == sorted(LANDSAT)
        assert len(storage.searches) == 2  # one item per page: two pages
        assert storage.searches[0]["collections"] == ["landsat-fake"]
        assert storage.searches[0]["intersects"]["type"] == "Polygon"
        far = load_roi("EPSG:4326;POLYGON((10 10, 11 10, 11 11, 10 11, 10 10))")
        with pytest.raises(ArchiveError, match=r"returned no items over the ROI"):
            load_stac(spec, far)
        with pytest.raises(ArchiveError, match="needs an ROI"):
            discover([f"stac+{storage.url}?collections=landsat-fake"])


def test_a_search_cut_at_its_cap_says_so(stac_catalog: Path) -> None:
    """A continental search cut at the default cap must not look complete."""
    items = [json.loads(p.read_text()) for p in sorted(stac_catalog.glob("*/*/*.json"))]
    with FakeStorage(stac_catalog) as storage:
        storage.items = item_collection(items, storage.url)["features"]
        capped = parse_search_url(f"stac+{storage.url}/search?collections=landsat-fake&max_items=1")
        with pytest.warns(GeoperaNote, match="stopped at its cap of 1 items; more may match"):
            found, _ = load_stac(capped, load_roi(ROI))
        assert len(found) == 1
        whole = parse_search_url(f"stac+{storage.url}/search?collections=landsat-fake")
        with warnings.catch_warnings():
            warnings.simplefilter("error", GeoperaNote)  # two items, under the cap: no note
            found, _ = load_stac(whole, load_roi(ROI))
        assert len(found) == 2


def test_bad_stac_inputs(served: FakeStorage, stac_catalog: Path, tmp_path: Path) -> None:
    roi_file = tmp_path / "area.geojson"
    roi_file.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Point", "coordinates": [0, 0]},
                    }
                ],
            }
        )
    )
    with pytest.raises(ArchiveError, match=r"not a STAC ItemCollection.*--roi"):
        discover([str(roi_file)])
    (tmp_path / "page.json").write_text("<html>not json</html>")
    with pytest.raises(ArchiveError, match="not a STAC catalog: not JSON"):
        discover([str(tmp_path / "page.json")])
    (tmp_path / "other.json").write_text('{"type": "Topology"}')
    with pytest.raises(ArchiveError, match="'type' is 'Topology'"):
        discover([str(tmp_path / "other.json")])
    with pytest.raises(
        ArchiveError, match=r"could not read the STAC document at http://127\.0\.0\.1:9/"
    ):
        discover(["http://127.0.0.1:9/catalog.json"])
    with pytest.raises(ArchiveError, match=r"404"):
        discover([f"{served.url}/nothing/catalog.json"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover([str(tmp_path / "absent.json")])
    spec = StacSpec(href=str(stac_catalog / "catalog.json"), assets=("swir16", "coastal"))
    with pytest.raises(ArchiveError, match="has the bands swir16, coastal"):
        load_stac(spec)


def test_asset_filter_by_common_name(stac_catalog: Path) -> None:
    spec = StacSpec(href=str(stac_catalog / "catalog.json"), assets=("green", "red"))
    found, _ = load_stac(spec, load_roi(ROI))
    assert {tuple(it.band_names) for it in found} == {("B3", "B4")}
    with rasterio.open(found[0].paths[0]) as vrt:  # the local VRT stacks the two assets
        assert vrt.count == 2
        assert vrt.descriptions == ("B3", "B4")


def test_parse_search_url() -> None:
    spec = parse_search_url(
        "stac+https://earth-search.aws.element84.com/v1/search?collections=sentinel-2-l2a"
        "&datetime=2023-06-01/2023-08-31&eo:cloud_cover=<20&max_items=5&assets=red,nir"
    )
    assert spec.search is not None
    assert spec.search.api == "https://earth-search.aws.element84.com/v1"
    assert spec.search.collections == ("sentinel-2-l2a",)
    assert spec.search.datetime == "2023-06-01/2023-08-31"
    assert spec.search.query == ("eo:cloud_cover<20",)
    assert spec.search.max_items == 5
    assert spec.assets == ("red", "nir")
    with pytest.raises(ValueError, match="max_items"):
        parse_search_url("stac+https://h/v1?max_items=lots")


def test_shipped_recipes_parse() -> None:
    recipes = sorted((REPO / "datasets").glob("*.yaml"))
    assert {p.stem for p in recipes} >= {
        "sample",
        "sentinel2-l2a",
        "landsat-c2-l2",
        "naip",
        "sentinel1-rtc",
    }
    readme = (REPO / "datasets" / "README.md").read_text()
    for path in recipes:
        recipe = load_recipe(path)
        assert all((recipe.name, recipe.licence, recipe.description))
        assert f"`{path.name}`" in readme  # one README line per recipe
        if recipe.stac is not None and recipe.stac.search is not None:
            assert recipe.stac.search.api.startswith("https://")
            assert recipe.stac.search.collections
            assert recipe.stac.assets  # bands are chosen, not every asset


def test_sample_recipe_works_offline() -> None:
    sample = REPO / "datasets" / "sample"
    if not (sample / "MANIFEST.json").is_file():
        pytest.skip("the sample archive is built by `make sample` (make test does it first)")
    archive = discover([str(REPO / "datasets" / "sample.yaml")])
    direct = discover([str(sample)])
    assert [s.name for s in archive.sources] == [s.name for s in direct.sources]


def test_recipe_errors(tmp_path: Path) -> None:
    bad = tmp_path / "r.yaml"
    bad.write_text("name: x\ndescription: y\nlicence: z\npaths: [a]\ncatalog: b.json\n")
    with pytest.raises(ArchiveError, match="exactly one of paths:, catalog: or search:"):
        load_recipe(bad)
    bad.write_text("name: x\ndescription: y\nlicence: z\nsearch: {api: https://h, colections: a}\n")
    with pytest.raises(ArchiveError, match=r"unknown search key.*colections.*valid"):
        load_recipe(bad)
    bad.write_text("name: x\npaths: [a]\n")
    with pytest.raises(ArchiveError, match="lacks description, licence"):
        load_recipe(bad)


def test_selection_takes_each_band_once() -> None:
    from geopera.data.sources.stac_assets import band_selection

    def asset(name: str, common: str, media: str) -> dict[str, object]:
        return {
            "href": f"./{name}",
            "type": media,
            "eo:bands": [{"name": name, "common_name": common}],
        }

    cog, jp2 = "image/tiff; application=geotiff", "image/jp2"
    assets = {
        "red-jp2": asset("B04", "red", jp2),
        "red": asset("B04", "red", cog),
        "nir": asset("B08", "nir", cog),
        "nir-jp2": asset("B08", "nir", jp2),
    }
    # "red" is an asset key (the COG); "B08" is a band name: its first asset in item order
    assert band_selection(assets, ["red", "B08"]) == {"red": [0], "nir": [0]}
    assert set(band_selection(assets, None)) == set(assets)


def test_broken_links_are_problems_not_fatal(stac_catalog: Path, tmp_path: Path) -> None:
    root = tmp_path / "cat"
    shutil.copytree(stac_catalog, root)
    (root / "landsat" / LANDSAT[1] / f"{LANDSAT[1]}.json").unlink()  # an item link to nothing
    (root / "sentinel2" / "collection.json").write_text("{not json")  # a broken child
    archive = discover([str(root / "catalog.json")])
    assert [(s.name, [it.scene for it in s.items]) for s in archive.sources] == [
        ("landsat8_30m", [LANDSAT[0]])
    ]
    reasons = {Path(p.path).name: p.reason for p in archive.problems}
    assert set(reasons) == {f"{LANDSAT[1]}.json", "collection.json"}
    assert reasons["collection.json"].startswith("child link of fake unreadable")


def test_s3_assets_read_through_vsis3(
    served: FakeStorage,
    stac_catalog: Path,
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the fake storage as an S3-compatible endpoint: bucket "landsat" = its landsat/ folder
    for key, value in {
        "AWS_S3_ENDPOINT": served.url.removeprefix("http://"),
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "AWS_NO_SIGN_REQUEST": "YES",
    }.items():
        monkeypatch.setenv(key, value)
    item = json.loads((stac_catalog / "landsat" / LANDSAT[0] / f"{LANDSAT[0]}.json").read_text())
    for band, asset in item["assets"].items():
        asset["href"] = f"s3://landsat/{LANDSAT[0]}/{band}.tif"
    item["links"] = []
    path = tmp_path / "s3-search.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [item]}))
    roi = load_roi(ROI)
    archive = discover([str(path)], roi=roi)
    (source,) = archive.sources
    assert source.describe()["files"][0] == f"/vsis3/landsat/{LANDSAT[0]}/B2.tif"
    prepared = prepare_sources(archive.select("rgb", None, roi=roi), roi, 32)
    box = _random_boxes(prepared[0].roi, 1)[0]
    sample = PatchDataset(prepared, 32)[(0, *box, 0)]
    assert served.count(".tif") > 0
    with rasterio.open(original_landsat(shared_data, LANDSAT[0])) as src:
        window = from_bounds(*[float(v) for v in sample["bounds"]], transform=src.transform)
        expected = src.read([3, 2, 1], window=window.round_offsets().round_lengths())
    np.testing.assert_array_equal(sample["image"].numpy(), expected.astype(np.float32))


@pytest.fixture
def signing_allowed() -> Iterator[None]:
    """The test's signing hook, allowed as ``--allow-hook`` would."""
    allow(hooks=["tests.fakes.http:sign_with_token"])
    yield
    allow()


@pytest.mark.usefixtures("signing_allowed")
def test_sign_hook_signs_every_asset_read(served: FakeStorage, tmp_path: Path) -> None:
    recipe = tmp_path / "signed.yaml"
    recipe.write_text(
        "name: signed\ndescription: a served catalog with signed asset URLs\nlicence: test\n"
        f"catalog: {served.url}/catalog.json\nsign: tests.fakes.http:sign_with_token\n"
    )
    roi = load_roi(ROI)
    archive = discover([str(recipe)], roi=roi)
    items = archive.sources[0].items
    assert all(a.endswith(".tif?token=test-token") for it in items for a in it.assets)
    prepared = prepare_sources(archive.select("rgb", None, roi=roi), roi, 32)
    PatchDataset(prepared, 32)[(0, *_random_boxes(prepared[0].roi, 1)[0], 0)]
    assert served.count(".tif") > 0
    raster_queries = {q for q in served.queries if q}
    assert raster_queries == {"token=test-token"}  # every raster request carried the token
    spec = parse_search_url(f"stac+{served.url}?sign=tests.fakes.http:sign_with_token")
    assert spec.sign == "tests.fakes.http:sign_with_token"
