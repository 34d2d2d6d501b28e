"""The persistent archive index: every raster file's header read once, then reused.

Discovering an archive reads each file's header (and its last block, to catch truncated
files): a few milliseconds a file, so minutes for 100k files, before every command. The index
keeps what was read, one GeoParquet row per file of a local archive folder: the header's facts
(CRS, transform, size, bands, dtype, nodata, band descriptions, internal tile size), the
footprint in WGS84, and the file's size and modification time; a file whose size or time
changed, or that is new, is read again, and so are all files with ``reindex``. Problems (an
empty or corrupt file) are kept too, so an unchanged bad file is not read again either.

A STAC source keeps its documents' facts in the same table: an asset whose item lacks the
``proj``/``raster`` fields is read once (remotely, header and last block), and its row, keyed by
the asset's URL as the document gives it (before any signing), is reused while the asset's
JSON in the document is unchanged (its hash is the row's ``version``).

An index lives in the cache (``$GEOPERA_CACHE/index``, else ``~/.cache/geopera/index``), one
file per archive folder or STAC document (or search), named by a hash of its absolute path or
URL; so an archive on a read-only mount is indexed as well. New files are read in parallel
processes when there are many (:data:`PARALLEL_FROM`).
"""

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import shapely
from rasterio.crs import CRS

from geopera.core.cache import cache_dir
from geopera.core.errors import error_line, note
from geopera.core.outputs import atomic_file
from geopera.data.sources.files import read_meta
from geopera.data.sources.model import FileMeta, Problem, bounds_to_wgs84

#: Bump when the rows' meaning changes: older indexes are then rebuilt.
INDEX_VERSION = 2
#: New files at or above which headers are read by several processes.
PARALLEL_FROM = 256
#: Files per task handed to a worker process.
CHUNK = 64

Progress = Callable[[int, int], None]


def index_path(folder: str) -> Path:
    """Where the index of an archive folder is kept."""
    return _index_file(os.path.abspath(folder))


def _index_file(key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache_dir("index") / f"{digest}-v{INDEX_VERSION}.parquet"


def _stamp(path: str) -> tuple[int, int]:
    """A file's (size, version): its size and modification time."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _row(key: str, stamp: tuple[int, int], meta: FileMeta | Problem) -> dict[str, Any]:
    """One file's row (a problem keeps its reason and nothing else)."""
    row: dict[str, Any] = {"path": key, "size": stamp[0], "version": stamp[1]}
    if isinstance(meta, Problem):
        return {**row, "problem": meta.reason, "geometry": None}
    wgs84 = bounds_to_wgs84(meta.crs, meta.bounds)
    return {
        **row,
        "problem": None,
        "count": meta.count,
        "dtype": meta.dtype,
        "crs": meta.crs.to_wkt(),
        "res": list(meta.res),
        "transform": list(meta.transform),
        "width": meta.width,
        "height": meta.height,
        "bounds": list(meta.bounds),
        "nodata": meta.nodata,
        "descriptions": [d or "" for d in meta.descriptions],
        "block": list(meta.block) if meta.block else None,
        "geometry": shapely.box(*wgs84) if wgs84 else None,
    }


def _meta(row: dict[str, Any], path: str, crs_of: dict[str, CRS]) -> FileMeta | Problem:
    """The metadata (or problem) of ``path`` from its row; CRSs parsed once per distinct text."""
    if isinstance(row["problem"], str):
        return Problem(path, row["problem"])
    wkt = row["crs"]
    if wkt not in crs_of:
        crs_of[wkt] = CRS.from_wkt(wkt)
    nodata = row["nodata"]
    return FileMeta(
        path=path,
        stem=Path(path).stem,
        ext=Path(path).suffix.lower(),
        count=int(row["count"]),
        dtype=row["dtype"],
        crs=crs_of[wkt],
        res=(float(row["res"][0]), float(row["res"][1])),
        transform=tuple(float(v) for v in row["transform"]),
        width=int(row["width"]),
        height=int(row["height"]),
        bounds=tuple(float(v) for v in row["bounds"]),  # type: ignore[arg-type]
        nodata=None if nodata is None or nodata != nodata else float(nodata),
        descriptions=tuple(d or None for d in row["descriptions"]),
        block=(int(row["block"][0]), int(row["block"][1])) if row["block"] is not None else None,
    )


def _load(path: Path) -> dict[str, dict[str, Any]]:
    """The stored rows by file path (an unreadable index counts as none)."""
    import geopandas as gpd

    if not path.is_file():
        return {}
    try:
        frame = gpd.read_parquet(path)
    except Exception:
        return {}
    return {row["path"]: row for row in frame.to_wkb().to_dict("records")}


def _read_many(paths: list[str], progress: Progress | None) -> list[FileMeta | Problem]:
    """Headers of ``paths``, in order: in this process, or in several for many files."""
    done: list[FileMeta | Problem] = []
    if len(paths) < PARALLEL_FROM or (os.cpu_count() or 1) < 2:
        for path in paths:
            done.append(read_meta(path))
            if progress is not None:
                progress(len(done), len(paths))
        return done
    # spawn: the caller may hold threads (torch, GDAL) that a forked child would inherit locked
    with ProcessPoolExecutor(os.cpu_count(), mp_context=get_context("spawn")) as pool:
        for meta in pool.map(read_meta, paths, chunksize=CHUNK):
            done.append(meta)
            if progress is not None and len(done) % CHUNK == 0:
                progress(len(done), len(paths))
    if progress is not None:
        progress(len(done), len(paths))
    return done


class HeaderIndex:
    """The rows of one index file: reused where their stamp matches, read again elsewhere.

    Args:
        key: What the index belongs to: an archive folder's absolute path, or ``stac:`` and
            a STAC document's location.
        reindex: Ignore the stored rows (every header is read again, the file rewritten).
    """

    def __init__(self, key: str, reindex: bool = False) -> None:
        self.where = _index_file(key)
        self.stored = {} if reindex else _load(self.where)
        self.rows: dict[str, dict[str, Any]] = {}
        self._crs_of: dict[str, CRS] = {}

    def known(self, key: str, stamp: tuple[int, int]) -> bool:
        """Whether a stored row of ``key`` has this stamp (so its header need not be read)."""
        row = self.stored.get(key)
        return row is not None and (row["size"], row["version"]) == stamp

    def reuse(self, key: str, path: str) -> FileMeta | Problem:
        """The stored metadata of ``key``, named ``path``; the row is kept."""
        self.rows[key] = self.stored[key]
        return _meta(self.stored[key], path, self._crs_of)

    def record(self, key: str, stamp: tuple[int, int], meta: FileMeta | Problem) -> None:
        """Keep a freshly read header's row."""
        self.rows[key] = _row(key, stamp, meta)

    def header(self, key: str, stamp: tuple[int, int], path: str) -> FileMeta | Problem:
        """The metadata of ``path``: reused, or read (header and last block) and recorded."""
        if self.known(key, stamp):
            return self.reuse(key, path)
        meta = read_meta(path)
        self.record(key, stamp, meta)
        return meta

    def save(self) -> None:
        """Write the rows used this time, if they differ from the stored ones."""
        import geopandas as gpd

        fresh = [k for k, row in self.rows.items() if row is not self.stored.get(k)]
        if not fresh and set(self.stored) == set(self.rows):
            return
        rows = list(self.rows.values())
        for row in rows:  # stored footprints come back as WKB: kept as they are
            if isinstance(row["geometry"], bytes):
                row["geometry"] = shapely.from_wkb(row["geometry"])
        try:
            self.where.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(self.where) as tmp:
                gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326").to_parquet(tmp)
        except (OSError, ImportError) as err:  # ImportError: an environment without pyarrow
            # the index only saves time: the run goes on with the headers it has just read
            note(f"the archive index was not saved ({error_line(err)}); headers are read again")


def read_indexed(
    folder: str,
    files: Sequence[str],
    reindex: bool = False,
    progress: Progress | None = None,
) -> list[FileMeta | Problem]:
    """The metadata of ``files`` (all under ``folder``), read only where the index is stale.

    Args:
        folder: The archive folder the index belongs to.
        files: Its raster files.
        reindex: Read every file again (the index is rewritten).
        progress: Called with ``(read, to_read)`` while headers are read.

    Returns:
        One entry per file, in order.
    """
    index = HeaderIndex(os.path.abspath(folder), reindex)
    # rows are keyed by absolute path (a run from another folder reuses them); the metadata
    # keeps the path as the caller gave it
    keys = {f: os.path.abspath(f) for f in files}
    stamps = {f: _stamp(f) for f in files}
    stale = [f for f in files if not index.known(keys[f], stamps[f])]
    fresh = dict(zip(stale, _read_many(stale, progress), strict=True))
    metas: list[FileMeta | Problem] = []
    for f in files:
        if f in fresh:
            index.record(keys[f], stamps[f], fresh[f])
            metas.append(fresh[f])
        else:
            metas.append(index.reuse(keys[f], f))
    index.save()
    return metas
