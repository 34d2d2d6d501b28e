"""Signed asset URLs expire: telling a refusal, and signing an item's assets again.

A signed URL (a SAS token, a pre-signed query string) is valid for a while, often about an hour,
and a long run outlives it: the storage then answers 403. An item that knows how it was signed
(:class:`~geopera.data.sources.model.Signing`) is signed again through its hook; the caller
reads once more, and a second refusal is a problem like any unreadable file.
"""

from pathlib import Path
from xml.sax.saxutils import escape

from geopera.core.outputs import write_atomic
from geopera.data.sources.model import RasterItem
from geopera.data.sources.remote import gdal_path

#: How GDAL (``/vsicurl/``) and HTTP clients word a 403.
_FORBIDDEN = ("HTTP response code: 403", "403 Client Error", "403 Forbidden")


def is_forbidden(err: BaseException) -> bool:
    """Whether an error, or one it was raised from, is the storage refusing a request (403)."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:  # rasterio: "see previous exception"
        if any(word in str(cause) for word in _FORBIDDEN):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def unsigned_path(item: RasterItem, path: str) -> str:
    """The GDAL path of an asset without its signature (for problem rows and bad-file lists).

    Args:
        item: The item.
        path: One of its asset paths (signed), or any other path (returned as is).
    """
    if item.signing is None or path not in item.assets:
        return path
    return gdal_path(item.signing.unsigned[item.assets.index(path)])


def resign(item: RasterItem) -> bool:
    """Sign an item's asset URLs again, in place: assets, band sources and its VRT.

    The VRT is rewritten where it is (atomically), so readers that hold its path (torchgeo's
    index) read the fresh URLs once they reopen it.

    Args:
        item: The item (changed in place).

    Returns:
        Whether the item was signed again (False: its URLs are not signed).

    Raises:
        ArchiveError: If the hook fails or returns something that is not a URL of the same kind.
    """
    if item.signing is None:
        return False
    fresh = [gdal_path(item.signing.hook(href)) for href in item.signing.unsigned]
    moved = dict(zip(item.assets, fresh, strict=True))
    vrt = Path(item.paths[0])
    text = vrt.read_text()
    for old, new in moved.items():
        text = text.replace(f">{escape(old)}<", f">{escape(new)}<")
    write_atomic(vrt, text)
    item.assets = fresh
    item.band_sources = [(moved.get(path, path), index) for path, index in item.band_sources]
    return True
