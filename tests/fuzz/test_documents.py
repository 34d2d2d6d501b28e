"""Documents from other people: recipes, STAC documents and saved search URLs.

STAC documents are items, catalogs, collections and ItemCollections. Every href stays on this
machine (tests never touch the network).
"""

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from hypothesis import strategies as st
from rasterio.transform import from_origin

from geopera.data.sources.recipes import load_recipe
from geopera.data.sources.stac_items import load_stac
from geopera.data.sources.stac_search import StacSpec, parse_search_url
from tests.fuzz.conftest import BUDGETS, fuzz, scalars, values

# --- recipes ------------------------------------------------------------------------------------

RECIPE_KEYS = ["name", "description", "licence", "paths", "catalog", "search", "assets", "sign"]
SEARCH_KEYS = ["api", "collections", "datetime", "query", "max_items", "limit", "extra"]
searches = st.dictionaries(st.sampled_from(SEARCH_KEYS), values, max_size=6)
recipes = st.one_of(
    st.dictionaries(
        st.sampled_from(RECIPE_KEYS), st.one_of(values, searches), min_size=0, max_size=8
    ),
    st.fixed_dictionaries(
        {
            "name": st.text(max_size=8),
            "description": st.text(max_size=8),
            "licence": st.text(max_size=8),
            "search": searches,
        }
    ),
    values,
)


def _recipe(doc: object) -> object:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.yaml"
        path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
        return load_recipe(path)


@pytest.mark.parametrize("budget", BUDGETS)
def test_recipes(budget: int) -> None:
    fuzz(recipes | st.text(max_size=60), _recipe, budget)


# --- search URLs --------------------------------------------------------------------------------

QUERY_KEYS = ["collections", "datetime", "max_items", "limit", "assets", "sign", "query", "x"]
pairs = st.lists(st.tuples(st.sampled_from(QUERY_KEYS), st.text(max_size=10)), max_size=5).map(
    lambda kv: "&".join(f"{k}={v}" for k, v in kv)
)
search_urls = st.builds(
    lambda scheme, host, path, query: f"stac+{scheme}://{host}{path}?{query}",
    st.sampled_from(["https", "http", "HTTPS", ""]),
    st.text(max_size=12),
    st.text(max_size=12),
    pairs,
)


@pytest.mark.parametrize("budget", BUDGETS)
def test_search_urls(budget: int) -> None:
    fuzz(search_urls | st.text(max_size=40).map("stac+https://".__add__), parse_search_url, budget)


# --- STAC documents -----------------------------------------------------------------------------

#: Asset and link targets: files of the document's folder (one real raster), missing files, GDAL
#: virtual paths and file URLs; never a remote host.
HREFS = ["real.tif", "missing.tif", "./doc.json", "child.json", "/vsizip/x.zip/a.tif",
         "file:///nonexistent.tif", "../up.json", "", "real.tif#frag"]  # fmt: skip
hrefs = st.sampled_from(HREFS) | st.text(max_size=8).filter(lambda t: ":" not in t)
assets = st.dictionaries(
    st.text(max_size=6),
    st.fixed_dictionaries(
        {"href": hrefs},
        optional={
            "type": st.sampled_from(["image/tiff; application=geotiff", "text/plain"]) | scalars,
            "roles": st.lists(st.sampled_from(["data", "thumbnail"])) | scalars,
            "eo:bands": st.lists(
                st.dictionaries(st.sampled_from(["name", "common_name"]), scalars)
            ),
            "proj:shape": st.lists(st.integers(-2, 20), max_size=3) | scalars,
            "proj:transform": st.lists(st.floats(), max_size=7) | scalars,
            "proj:epsg": st.integers(-1, 40000) | scalars,
            "raster:bands": st.lists(st.dictionaries(st.sampled_from(["data_type"]), scalars)),
        },
    ),
    max_size=3,
)
links = st.lists(
    st.fixed_dictionaries(
        {"rel": st.sampled_from(["item", "child", "self", "root"]), "href": hrefs}
    ),
    max_size=3,
)
bbox = st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=6)
items = st.fixed_dictionaries(
    {"type": st.just("Feature"), "stac_version": st.just("1.0.0"), "id": st.text(max_size=6)},
    optional={
        "geometry": st.none() | st.just({"type": "Point", "coordinates": [0, 0]}),
        "bbox": bbox,
        "properties": st.dictionaries(
            st.sampled_from(["datetime", "platform", "proj:epsg", "constellation"]), scalars
        ),
        "assets": assets,
        "links": links,
        "collection": st.text(max_size=6),
    },
)
catalogs = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Catalog", "Collection"]),
        "stac_version": st.just("1.0.0"),
        "id": st.text(max_size=6),
        "description": st.text(max_size=6),
        "links": links,
    },
    optional={"extent": values, "license": scalars},
)
collections = st.fixed_dictionaries(
    {"type": st.just("FeatureCollection"), "features": st.lists(items, max_size=3)}
)
documents = st.one_of(items, catalogs, collections, values)


def _write_real_raster(folder: Path) -> None:
    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": 1, "dtype": "uint8"}
    with rasterio.open(
        folder / "real.tif", "w", crs="EPSG:32633", transform=from_origin(0, 80, 10, 10), **profile
    ) as ds:
        ds.write(np.arange(64, dtype=np.uint8).reshape(1, 8, 8))


def _stac(docs: tuple[Any, Any]) -> object:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        _write_real_raster(folder)
        (folder / "doc.json").write_text(json.dumps(docs[0]))
        (folder / "child.json").write_text(json.dumps(docs[1]))
        return load_stac(StacSpec(href=str(folder / "doc.json")))


@pytest.mark.filterwarnings("ignore::UserWarning")  # pystac's notes on odd documents
@pytest.mark.parametrize("budget", BUDGETS)
def test_stac_documents(budget: int) -> None:
    fuzz(st.tuples(documents, documents), _stac, budget)
