"""What documents from other people may make geopera do: recipes, catalogs and search URLs are data.

A document may name a URL-signing hook, but geopera imports and calls only the hooks it knows
(:data:`KNOWN_HOOKS`) and those the user names on the command line (``--allow-hook``), and it
checks what a hook returns. A document may name assets, but a remote catalog's assets must be
remote unless the user says otherwise (``--allow-local-assets``), and no document may name a
GDAL virtual path (``/vsi...``): those stay a command-line feature.

The permissions are the process's (:func:`allow`), set once by the command line before any
document is read.
"""

import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from geopera.core.errors import ArchiveError

#: URL-signing hooks that documents may name (the shipped recipes use these).
KNOWN_HOOKS = frozenset({"planetary_computer:sign"})
#: URL schemes of remote assets, by family: a hook must keep a URL in its family.
SCHEME_FAMILIES = {
    "http": "http",
    "https": "http",
    "s3": "s3",
    "gs": "gs",
    "gcs": "gs",
    "az": "az",
    "abfs": "az",
    "abfss": "az",
}
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


@dataclass
class Permissions:
    """What the user allowed on the command line.

    Attributes:
        hooks: Signing hooks beyond :data:`KNOWN_HOOKS` (``--allow-hook``).
        local_assets: Remote catalogs may name local files (``--allow-local-assets``).
        max_items: The most items one STAC document or search may give (``--max-items``);
            None for the defaults (10,000 for a catalog walk, 200 for a search).
    """

    hooks: set[str] = field(default_factory=set)
    local_assets: bool = False
    max_items: int | None = None


_PERMISSIONS = Permissions()


def allow(
    hooks: Iterable[str] = (), local_assets: bool = False, max_items: int | None = None
) -> None:
    """Set this process's permissions (the command line's ``--allow-*`` and ``--max-items``).

    Args:
        hooks: ``module:function`` hooks the user trusts.
        local_assets: Whether remote catalogs may name local files.
        max_items: The most items one STAC document or search may give; None for the defaults.
    """
    _PERMISSIONS.hooks = set(hooks)
    _PERMISSIONS.local_assets = local_assets
    _PERMISSIONS.max_items = max_items


def limits() -> Permissions:
    """This process's permissions and limits, as the command line set them."""
    return _PERMISSIONS


def scheme_family(href: str) -> str | None:
    """The family of a remote URL's scheme (``http``, ``s3``, ``gs``, ``az``), else None."""
    match = _SCHEME.match(href)
    return SCHEME_FAMILIES.get(match.group(1).lower()) if match else None


def check_hook(spec: str) -> None:
    """Refuse a hook the user has not allowed, before anything is imported.

    Raises:
        ArchiveError: If ``spec`` is neither known nor allowed on the command line.
    """
    if spec in KNOWN_HOOKS or spec in _PERMISSIONS.hooks:
        return
    raise ArchiveError(
        f"the document names the sign hook {spec!r}, which geopera does not know "
        f"({', '.join(sorted(KNOWN_HOOKS))}); documents cannot make geopera run code: if you "
        f"trust it, pass --allow-hook {spec}"
    )


class Signer:
    """A checked URL-signing hook: call it with an asset URL, get the URL to read.

    Made only by :func:`geopera.data.sources.remote.load_hook`, after :func:`check_hook`; it
    travels to DataLoader workers by name (pickled as its ``spec``) and is imported there on
    first use, so an expired URL can be signed again where it is read. A result that is not a
    URL of the same scheme family as its argument is an :class:`ArchiveError` naming the hook.

    Args:
        spec: The hook's ``module:function``.
        func: The imported hook (None: import on first use).
    """

    def __init__(self, spec: str, func: Callable[[str], object] | None = None) -> None:
        self.spec = spec
        self._func = func

    def __reduce__(self) -> tuple[type["Signer"], tuple[str]]:
        return (Signer, (self.spec,))

    def __call__(self, href: str) -> str:
        """The signed URL of ``href`` (checked: a URL of the same scheme family)."""
        if self._func is None:
            module_name, _, attr = self.spec.partition(":")
            self._func = getattr(importlib.import_module(module_name), attr)
        out = self._func(href)
        if not isinstance(out, str) or scheme_family(out) != scheme_family(href):
            shown = type(out).__name__ if not isinstance(out, str) else repr(out[:80])
            raise ArchiveError(
                f"sign hook {self.spec} returned {shown} for {href[:80]!r}, not a URL of the "
                "same kind; check the hook"
            )
        return out


def check_redirect(source: str, target: str) -> None:
    """Refuse a redirect that changes the URL's scheme (an upgrade to https is allowed).

    Args:
        source: The URL asked for.
        target: Where the server sends the client.

    Raises:
        ArchiveError: If the redirect leaves the scheme (``http`` to ``https`` is fine).
    """
    before = _SCHEME.match(source)
    after = _SCHEME.match(target)
    old = before.group(1).lower() if before else ""
    new = after.group(1).lower() if after else old  # a relative Location keeps the scheme
    if new == old or (old, new) == ("http", "https"):
        return
    raise ArchiveError(
        f"{source[:120]} redirects to a {new}:// URL ({target[:80]!r}); redirects to another "
        "scheme are refused"
    )


def check_asset(href: str, document: str | None) -> None:
    """Refuse an asset location that a document may not name.

    Args:
        href: The asset's absolute href.
        document: The href of the document that names it (None: given by the user).

    Raises:
        ArchiveError: For a GDAL virtual path, or a local file named by a remote document
            (unless ``--allow-local-assets``).
    """
    if document is None:
        return
    if href.startswith("/vsi"):
        raise ArchiveError(
            f"{document} names the GDAL virtual path {href[:80]!r} as an asset; documents may "
            "name URLs and files only (virtual paths are for the command line)"
        )
    remote_document = scheme_family(document) is not None
    if remote_document and scheme_family(href) is None and not _PERMISSIONS.local_assets:
        raise ArchiveError(
            f"the remote document {document} names the local file {href[:80]!r} as an "
            "asset; a remote catalog's assets must be remote (pass --allow-local-assets "
            "if you trust it)"
        )
