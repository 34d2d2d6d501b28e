"""Reading rasters where they live: GDAL paths, COG settings, tile alignment, a tile cache.

Cloud URLs become GDAL paths; patch windows are aligned to a COG's internal tiles; fetched tiles
can be kept in a bounded local cache.

GDAL reads ``https://``, ``s3://``, ``gs://`` and Azure objects through its network file systems
(``/vsicurl/``, ``/vsis3/``, ``/vsigs/``, ``/vsiaz/``). :func:`configure_remote` sets the GDAL
options that make a COG cost few requests (no directory listing on open, only the extensions in
use, the header in one read, HTTP/2 multiplexing, merged ranges, a bounded block cache) and
retry throttling, server errors and timeouts with back-off. Options already set in the
environment win, so a user can always override one.
"""

import importlib
import os
import re
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from geopera.data.sources.trust import Signer, check_hook

#: GDAL path prefixes that mean "over the network".
REMOTE_PREFIXES = (
    "/vsicurl/",
    "/vsicurl?",
    "/vsis3/",
    "/vsigs/",
    "/vsiaz/",
    "/vsiadls/",
    "/vsioss/",
    "/vsiswift/",
)

_SCHEMES = {
    "s3": "/vsis3/",
    "gs": "/vsigs/",
    "gcs": "/vsigs/",
    "az": "/vsiaz/",
    "azure": "/vsiaz/",
    "abfs": "/vsiadls/",
    "abfss": "/vsiadls/",
}

#: GDAL settings for reading cloud-optimised GeoTIFFs over HTTP (values are GDAL config options).
COG_OPTIONS: dict[str, str] = {
    # Opening a file never lists its folder nor probes side-car files (.ovr, .aux.xml, .msk).
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # The header of a COG (IFDs and tile offsets) in the first read.
    "GDAL_INGESTED_BYTES_AT_OPEN": "65536",
    # Several requests over one connection (HTTP/2 over TLS; plain HTTP stays 1.1).
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_HTTP_VERSION": "2TLS",
    # Adjacent tiles in one request.
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    # Throttling (429), server errors and gateway timeouts: retried with back-off.
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "GDAL_HTTP_RETRY_CODES": "429,500,502,503,504",
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    "GDAL_HTTP_TIMEOUT": "60",
    # A response slower than 1 byte/s for 30 s counts as failed (and is retried).
    "GDAL_HTTP_LOW_SPEED_TIME": "30",
    "GDAL_HTTP_LOW_SPEED_LIMIT": "1",
    # Bounded caches: decoded blocks (MB, per process) and fetched bytes (per process, global).
    "GDAL_CACHEMAX": "256",
    "CPL_VSIL_CURL_CACHE_SIZE": str(128 * 1024 * 1024),
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(8 * 1024 * 1024),
}


#: The options configure_remote set in this process (so that it may update its own later).
_OURS: dict[str, str] = {}


def _ours(key: str) -> bool:
    """Whether the environment's value of an option is the one configure_remote set."""
    return key in _OURS and os.environ.get(key) == _OURS[key]


def gdal_path(href: str) -> str:
    """The GDAL path of a URL or file path.

    Args:
        href: ``https://...``, ``s3://bucket/key``, ``gs://``, ``az://``, ``abfs[s]://``,
            ``file://``, a GDAL virtual path or a local path.

    Returns:
        ``/vsicurl/https://...``, ``/vsis3/bucket/key``... or the local path.

    Raises:
        ValueError: If the URL scheme is not one GDAL can read.
    """
    if href.startswith("/vsi"):
        return href
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$", href)
    if match is None:
        return href
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme in ("http", "https"):
        return f"/vsicurl/{href}"
    if scheme == "file":
        return rest if rest.startswith("/") else "/" + rest
    if scheme in _SCHEMES:
        return _SCHEMES[scheme] + rest
    raise ValueError(
        f"cannot read {href!r}: unknown URL scheme {scheme!r}; use https://, s3://, gs://, "
        "az://, abfs://, file:// or a local path"
    )


def is_remote(path: str) -> bool:
    """Whether a GDAL path goes over the network."""
    return path.startswith(REMOTE_PREFIXES)


def _extension(path: str) -> str:
    tail = path.split("?", 1)[0].rsplit("/", 1)[-1]
    return "." + tail.rsplit(".", 1)[1] if "." in tail else ""


def configure_remote(paths: Iterable[str]) -> dict[str, str]:
    """Set GDAL's network options for reading these paths (only those not already set).

    Options go into the process environment, so DataLoader workers (forked or spawned after
    this call) inherit them. ``CPL_VSIL_CURL_ALLOWED_EXTENSIONS`` is set to the extensions the
    remote paths actually use, so GDAL never probes for other files.

    Args:
        paths: GDAL paths of the archive (local ones are ignored).

    Returns:
        The options that were set by this call (empty when no path is remote).
    """
    remote = [p for p in paths if is_remote(p)]
    if not remote:
        return {}
    applied = {k: v for k, v in COG_OPTIONS.items() if k not in os.environ or _ours(k)}
    key = "CPL_VSIL_CURL_ALLOWED_EXTENSIONS"
    extensions = {_extension(p) for p in remote}
    if key not in os.environ or _ours(key):
        if "" in extensions:  # a path without extension: GDAL must not filter by extension
            if _ours(key):
                del os.environ[key]
                del _OURS[key]
        else:  # this archive's extensions, and those of an archive read before in the process
            before = set(os.environ[key].split(",")) - {""} if _ours(key) else set()
            applied[key] = ",".join(sorted(extensions | before))
    os.environ.update(applied)
    _OURS.update(applied)
    return applied


def load_hook(spec: str) -> Signer:
    """Import a URL-signing hook named ``package.module:function``.

    The function takes an asset URL and returns the URL to read (e.g. with a SAS token or a
    pre-signed query string): ``planetary_computer:sign`` is one.

    Args:
        spec: ``module:function``.

    Returns:
        The checked hook (its results must be URLs of the same scheme family).

    Raises:
        ArchiveError: If the hook is neither known nor allowed with ``--allow-hook`` (checked
            before anything is imported; see :mod:`geopera.data.sources.trust`).
        ValueError: If the spec is malformed, the module cannot be imported, or the attribute
            is not callable.
    """
    check_hook(spec)
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(
            f"sign hook {spec!r} must be 'module:function', e.g. planetary_computer:sign"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"sign hook {spec!r}: cannot import {module_name!r} ({err}); install it "
            f"(e.g. pip install {module_name.split('.')[0].replace('_', '-')})"
        ) from err
    func = getattr(module, attr, None)
    if not callable(func):
        raise ValueError(f"sign hook {spec!r}: {module_name} has no function {attr!r}")
    return Signer(spec, func)


def align_to_tiles(offset: int, size: int, tile: int, extent: int) -> int:
    """Shift a window along one axis so that it touches as few internal tiles as possible.

    A window no larger than a tile that straddles a tile edge is moved, by less than its size,
    into the tile that holds most of it; a larger window starts on a tile edge when that keeps
    it inside the raster. Reading it then costs the fewest tile requests.

    Args:
        offset: Window start, in pixels.
        size: Window size, in pixels.
        tile: Internal tile size, in pixels.
        extent: Raster size along the axis, in pixels.

    Returns:
        The new start (unchanged when the window already touches the fewest tiles, or when the
        shift would leave the raster).
    """
    if tile <= 0 or size <= 0:
        return offset
    first, last = offset // tile, (offset + size - 1) // tile
    needed = -(-size // tile)  # ceil: the fewest tiles a window of this size can touch
    if last - first + 1 <= needed:
        return offset
    if size <= tile:
        edge = last * tile  # the tile edge inside the window
        moved = edge - size if edge - offset >= offset + size - edge else edge
    else:
        moved = (
            first * tile
            if offset - first * tile < (first + 1) * tile - offset
            else ((first + 1) * tile)
        )
    return moved if moved >= 0 and moved + size <= extent else offset


class BlockCache:
    """A bounded folder of fetched tiles (``.npy``), shared by processes, oldest evicted first.

    Args:
        folder: Cache folder (created).
        max_bytes: Size limit; after a write that passes it, the least recently written files
            are removed until the folder holds 90 % of the limit.
    """

    def __init__(self, folder: Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"the cache size limit must be > 0 bytes, got {max_bytes}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._size = sum(p.stat().st_size for p in self.folder.glob("*.npy"))

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        del state["_lock"]  # DataLoader workers started by spawn get a fresh lock
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        # keys are geopera's own hex digests (readers.py), never names from a document
        return self.folder / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """The cached array of a key, or None (a damaged file counts as a miss)."""
        path = self._path(key)
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return array

    def put(self, key: str, array: np.ndarray) -> None:
        """Store an array (atomically: readers never see half a file), then enforce the limit."""
        path = self._path(key)
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp.npy")
        try:
            np.save(tmp, array, allow_pickle=False)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            return  # a full or read-only cache disk never fails a read
        with self._lock:
            self._size += path.stat().st_size
            if self._size > self.max_bytes:
                self._evict()

    def _evict(self) -> None:
        files = []
        for p in self.folder.glob("*.npy"):
            try:
                st = p.stat()
            except FileNotFoundError:  # evicted by another process
                continue
            files.append((st.st_mtime, st.st_size, p))
        files.sort()
        total = sum(size for _, size, _ in files)
        target = int(self.max_bytes * 0.9)
        for _, size, p in files:
            if total <= target:
                break
            p.unlink(missing_ok=True)
            total -= size
        self._size = total
