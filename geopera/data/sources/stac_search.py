"""STAC documents and searches: static catalogs, collections, ItemCollections and STAC APIs.

This module fetches documents and walks or searches them into ``pystac.Item`` objects;
:mod:`geopera.data.sources.stac_items` turns items into raster items.
"""

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit

import shapely

from geopera.core.errors import ArchiveError, GeoperaError, error_line, note
from geopera.data.sources.model import RASTER_EXTENSIONS, Problem
from geopera.data.sources.trust import check_redirect, limits

if TYPE_CHECKING:
    import pystac

    from geopera.data.roi import ROI


#: Default cap on the items a STAC API search returns.
DEFAULT_MAX_ITEMS = 200
#: HTTP answers a search retries (with back-off).
RETRY_STATUS = (429, 500, 502, 503, 504)
#: The deepest chain of child catalogs a walk follows.
MAX_DEPTH = 32
#: The most items a static catalog walk reads (unless ``--max-items`` says otherwise).
MAX_STATIC_ITEMS = 10_000
#: The largest STAC document read, in bytes.
MAX_DOCUMENT_BYTES = 64 * 2**20


@dataclass(frozen=True)
class StacSearch:
    """A STAC API item search (the ROI is added as ``intersects``).

    Attributes:
        api: Root URL of the API (``https://...``; a trailing ``/search`` is dropped).
        collections: Collection ids.
        datetime: ``A/B`` interval or one date, or None.
        query: Query-extension filters such as ``eo:cloud_cover<20``.
        max_items: Most items to take (pages are followed until then); None: the command
            line's ``--max-items``, else :data:`DEFAULT_MAX_ITEMS`.
        limit: Page size asked of the server.
    """

    api: str
    collections: tuple[str, ...] = ()
    datetime: str | None = None
    query: tuple[str, ...] = ()
    max_items: int | None = None
    limit: int = 100

    def describe(self) -> str:
        """One line naming the search, for messages."""
        parts = [f"collections={','.join(self.collections) or 'any'}"]
        if self.datetime:
            parts.append(f"datetime={self.datetime}")
        parts.extend(self.query)
        return f"{self.api} ({', '.join(parts)})"


@dataclass(frozen=True)
class StacSpec:
    """What to read: a static STAC document (``href``) or an API search, and which assets.

    Attributes:
        href: Path or URL of a catalog, collection, item or ItemCollection.
        search: A STAC API search instead of ``href``.
        assets: Keep only these bands (asset keys, band names or common names); None for all.
        sign: ``module:function`` that signs asset URLs, or None.
    """

    href: str | None = None
    search: StacSearch | None = None
    assets: tuple[str, ...] | None = None
    sign: str | None = None


def is_stac(path: str) -> bool:
    """Whether an ``--archive`` argument names STAC rather than rasters.

    Args:
        path: The argument.

    Returns:
        True for ``stac+http(s)://`` searches, ``.json``/``.geojson`` documents and
        ``http(s)://`` URLs that do not end with a raster extension.
    """
    lower = path.lower()
    if lower.startswith(("stac+http://", "stac+https://")):
        return True
    tail = lower.split("?", 1)[0]
    if tail.endswith((".json", ".geojson")):
        return True
    if lower.startswith(("http://", "https://")):
        return os.path.splitext(tail)[1] not in RASTER_EXTENSIONS
    return False


def parse_search_url(url: str) -> StacSpec:
    """Parse ``stac+https://HOST/PATH?collections=C&datetime=A/B&...`` into a search.

    Query keys: ``collections`` (comma-separated), ``datetime``, ``max_items``, ``limit``,
    ``assets`` (comma-separated bands to keep), ``sign`` (``module:function``); any other
    ``key=value`` pair, or a ``query=`` value, is a query-extension filter: ``eo:cloud_cover<20``
    is written ``query=eo:cloud_cover<20``.

    Args:
        url: The URL.

    Returns:
        The spec.

    Raises:
        ValueError: If a number is malformed or the URL has no host.
    """
    raw = url[len("stac+") :]
    parts = urlsplit(raw)
    if not parts.netloc:
        raise ValueError(f"STAC search URL {url!r} has no host; e.g. stac+https://HOST/v1?...")
    api = f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")
    api = api.removesuffix("/search")
    values: dict[str, Any] = {"query": []}
    assets: tuple[str, ...] | None = None
    sign = None
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "collections":
            values["collections"] = tuple(c for c in value.split(",") if c)
        elif key == "datetime":
            values["datetime"] = value
        elif key in ("max_items", "limit"):
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"{key} in {url!r} must be a positive integer, got {value!r}")
            values[key] = int(value)
        elif key == "assets":
            assets = tuple(a for a in value.split(",") if a)
        elif key == "sign":
            sign = value
        elif key == "query":
            values["query"].append(unquote(value))
        else:
            values["query"].append(f"{key}{value if value[:1] in '<>=!' else '=' + value}")
    values["query"] = tuple(values["query"])
    return StacSpec(search=StacSearch(api=api, **values), assets=assets, sign=sign)


# --- reading STAC documents --------------------------------------------------------------------


def _session() -> Any:
    """A requests session that retries throttling, server errors and resets with back-off."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=5,
        backoff_factor=0.25,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,
        respect_retry_after_header=True,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return _no_scheme_change(session)


def _no_scheme_change(session: Any) -> Any:
    """Make a requests session refuse redirects that change the scheme (see ``check_redirect``)."""

    def check(response: Any, *args: Any, **kwargs: Any) -> Any:
        if response.is_redirect:
            check_redirect(response.url, urljoin(response.url, response.headers["location"]))
        return response

    session.hooks["response"].append(check)
    return session


def _stac_io() -> Any:
    """A pystac IO that reads URLs through a retrying session and remembers the first read."""
    from pystac.stac_io import DefaultStacIO

    class RetryingStacIO(DefaultStacIO):
        def __init__(self) -> None:
            super().__init__()
            self.session = _session()
            self.memo: dict[str, str] = {}

        def read_text_from_href(self, href: str) -> str:
            if href in self.memo:
                return self.memo.pop(href)
            if href.startswith(("http://", "https://")):
                with self.session.get(href, timeout=(10, 60), stream=True) as response:
                    response.raise_for_status()
                    body = response.raw.read(MAX_DOCUMENT_BYTES + 1, decode_content=True)
                _check_size(href, len(body))
                return str(body.decode("utf-8", errors="replace"))
            if os.path.isfile(href):
                _check_size(href, os.path.getsize(href))
            return str(super().read_text_from_href(href))

    return RetryingStacIO()


def _read_document(href: str, io: Any) -> dict[str, Any]:
    """Read and parse a STAC JSON document; one-line errors naming the href."""
    try:
        text = io.read_text_from_href(href)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"STAC document {href} does not exist") from err
    except Exception as err:
        reason = error_line(err)[:300]
        raise ArchiveError(
            f"could not read the STAC document at {href} ({reason}); check the address, the "
            "network and any credentials"
        ) from err
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ArchiveError(
            f"{href} is not a STAC catalog: not JSON ({err.msg} at line {err.lineno}); give a "
            "catalog.json, collection.json, item or ItemCollection (.json/.geojson)"
        ) from err
    kind = doc.get("type") if isinstance(doc, dict) else None
    if kind not in ("Catalog", "Collection", "Feature", "FeatureCollection"):
        raise ArchiveError(
            f"{href} is not a STAC catalog, collection, item or ItemCollection "
            f"(its 'type' is {kind!r}); give the catalog's catalog.json, or a saved search result"
        )
    if kind == "FeatureCollection":
        features = doc.get("features") or []
        if features and "stac_version" not in features[0]:
            raise ArchiveError(
                f"{href} is a GeoJSON FeatureCollection, not a STAC ItemCollection (its features "
                "have no stac_version); an ROI file goes to --roi, not --archive"
            )
    io.memo[href] = text
    return doc


def _check_size(href: str, size: int) -> None:
    if size > MAX_DOCUMENT_BYTES:
        raise ArchiveError(
            f"{href} is over {MAX_DOCUMENT_BYTES // 2**20} MiB: too large for a STAC document"
        )


def _walk(
    catalog: "pystac.Catalog", problems: list[Problem], walked: set[str], depth: int = 0
) -> Iterable["pystac.Item"]:
    """Items under a catalog; a link that cannot be read, a cycle or too deep is a problem row.

    Args:
        catalog: The catalog or collection.
        problems: Where problem rows go.
        walked: Absolute hrefs of the catalogs walked so far (this one is added).
        depth: Child links followed to reach this catalog.
    """
    import pystac

    walked.add(catalog.get_self_href() or catalog.id)
    try:
        root = catalog.get_root()
    except Exception as err:  # a root link to something that is not a catalog
        reason = f"root link of {catalog.id} unusable ({error_line(err)[:300]}); ignored"
        problems.append(Problem(catalog.get_self_href() or catalog.id, reason))
        root = None
    for rel in ("item", "child"):
        for link in catalog.get_links(rel):
            href = link.get_absolute_href() or str(link.target)
            if href in walked or depth + 1 > MAX_DEPTH:  # an "item" link may name a catalog too
                why = "leads back to a catalog already walked (a cycle)"
                if href not in walked:
                    why = f"is more than {MAX_DEPTH} catalogs deep"
                problems.append(Problem(href, f"{rel} link of {catalog.id} {why}; skipped"))
                continue
            try:
                link.resolve_stac_object(root=root)
                target = link.target
            except Exception as err:
                reason = f"{rel} link of {catalog.id} unreadable ({error_line(err)[:300]}); skipped"
                problems.append(Problem(href, reason))
                continue
            if isinstance(target, pystac.Item):
                yield target
            elif isinstance(target, pystac.Catalog):
                yield from _walk(target, problems, walked, depth + 1)


def _parsed[T](href: str, build: Callable[[], T]) -> T:
    """Build a pystac object from a document; a malformed one is one line naming it."""
    try:
        return build()
    except GeoperaError:
        raise
    except Exception as err:  # pystac raises KeyError, TypeError... on documents it cannot use
        raise ArchiveError(
            f"{href} is not a valid STAC document ({error_line(err)[:200]}); check it against "
            "the STAC specification"
        ) from err


def static_items(href: str, problems: list[Problem]) -> Iterable["pystac.Item"]:
    """Items of a static catalog / collection / item / ItemCollection (walked recursively)."""
    import pystac

    io = _stac_io()
    if not href.startswith(("http://", "https://")):
        href = os.path.abspath(href)
    doc = _read_document(href, io)
    kind = doc["type"]
    if kind == "FeatureCollection":
        io.memo.pop(href, None)
        collection = _parsed(
            href, lambda: pystac.ItemCollection.from_dict(doc, preserve_dict=False)
        )
        for item in collection.items:
            if item.get_self_href() is None:
                item.set_self_href(href)  # relative asset hrefs resolve against the file
            yield item
        return
    if kind == "Feature":
        yield _parsed(href, lambda: pystac.Item.from_file(href, stac_io=io))
        return
    cls = pystac.Collection if kind == "Collection" else pystac.Catalog
    cap = limits().max_items or MAX_STATIC_ITEMS
    top = _parsed(href, lambda: cls.from_file(href, stac_io=io))
    for n, item in enumerate(_walk(top, problems, set())):
        if n == cap:
            reason = f"more than {cap} items: the first {cap} were read (--max-items)"
            problems.append(Problem(href, reason))
            return
        yield item


def search_cap(search: StacSearch) -> int:
    """The most items a search takes.

    Its own ``max_items`` (never above ``--max-items``), else ``--max-items``, else
    :data:`DEFAULT_MAX_ITEMS`.
    """
    user = limits().max_items
    if search.max_items is None:
        return user or DEFAULT_MAX_ITEMS
    return min(search.max_items, user) if user else search.max_items


def search_items(search: StacSearch, roi: "ROI | None") -> list["pystac.Item"]:
    """Items of a STAC API search over the ROI, following pages up to ``max_items``."""
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO
    from urllib3.util.retry import Retry

    if roi is None:
        raise ArchiveError(
            f"a STAC API search ({search.api}) needs an ROI: give --roi (it is sent as the "
            "search's intersects geometry)"
        )
    retry = Retry(total=5, backoff_factor=0.25, status_forcelist=RETRY_STATUS, allowed_methods=None)
    try:
        io = StacApiIO(max_retries=retry, timeout=60)
        _no_scheme_change(io.session)
        client = Client.open(search.api, stac_io=io)
        found = client.search(
            collections=list(search.collections) or None,
            datetime=search.datetime,
            query=list(search.query) or None,
            intersects=shapely.geometry.mapping(shapely.from_wkt(roi.wkt_wgs84)),
            max_items=search_cap(search),
            limit=min(search.limit, search_cap(search)),
        )
        items = list(found.items())
    except Exception as err:
        reason = error_line(err)[:300]
        raise ArchiveError(
            f"STAC search failed at {search.describe()}: {reason}; check the API URL, the "
            "collection ids and the network"
        ) from err
    if not items:
        b = roi.bounds_wgs84
        raise ArchiveError(
            f"the STAC search {search.describe()} returned no items over the ROI (lon/lat "
            f"{b[0]:.4f},{b[1]:.4f},{b[2]:.4f},{b[3]:.4f}); widen the datetime range or the "
            "ROI, relax the query, or check the collection id"
        )
    if len(items) >= search_cap(search):  # the server may hold more
        note(
            f"the STAC search {search.describe()} stopped at its cap of {len(items)} items; "
            "more may match: raise it with --max-items N (and the search's max_items)"
        )
    return items
