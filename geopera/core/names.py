"""Names that come from outside geopera (documents, label files, URLs, input files) as file names.

A STAC item's ``id``, a collection id, an asset key, a recipe's source name, a class name in a
label file or the stem of an input file are data written by someone else. Three pieces keep
them from deciding where geopera writes:

* :func:`safe_name` turns any such text into one readable path component: no separator, no
  ``..``, no absolute or drive-letter form, no control character, no Windows-reserved name, no
  trailing dot or space, and a capped length;
* :class:`NameBook` hands out those components inside one folder, so that two different outside
  names never share a file (names that differ only by case or Unicode normalisation clash on
  some file systems, so they count as the same and the later one gets a suffix);
* :func:`inside` is the last check before a write: it resolves the path (links included) and
  refuses anything outside the output folder with an :class:`UnsafeOutputError`.
"""

import hashlib
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

from geopera.core.errors import GeoperaError

#: Longest component :func:`safe_name` returns (file systems allow 255 bytes; this leaves room
#: for suffixes such as ``.partial-PID`` and a UTF-8 name's multi-byte characters).
MAX_NAME = 96
#: What stands for a name that has nothing readable left.
EMPTY_NAME = "unnamed"
#: Characters that look like or act as a path separator after Unicode normalisation leaves them.
_LOOKALIKE_SEPARATORS = "\u2215\u2044\u29f8\u29f9\u2216\ufe68\u2571\u2572"
#: Anything but letters, digits (any script), ``_``, ``-`` and ``.`` becomes ``_``.
_UNSAFE = re.compile(r"[^\w.\-]+")
_DOT_RUNS = re.compile(r"[._]{2,}")
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?$", re.IGNORECASE)


class UnsafeOutputError(GeoperaError):
    """A path built for an output would land outside the output folder."""


def safe_name(text: str, limit: int = MAX_NAME) -> str:
    """One readable, safe path component for a name that came from outside.

    Percent-encoding is undone (twice at most) and the text normalised (NFKC, so full-width
    dots and slashes become ASCII ones) before anything is judged; every run of characters other
    than letters, digits, ``_``, ``-`` and ``.`` then becomes one ``_``, a run of dots and
    underscores becomes one (``_`` if it holds one), leading and trailing dots, spaces and
    underscores are dropped, and a Windows-reserved
    name (``CON``, ``nul.txt``...) gets a leading ``_``. A name longer than ``limit`` is cut and
    ends in ``-`` and 8 hex digits of its SHA-256, so that cut names stay apart.

    Args:
        text: The outside name (an id, a key, a class name, a file stem...).
        limit: Longest result, in characters (at least 16).

    Returns:
        A non-empty component that is never ``.``, ``..`` or hidden and holds no separator.

    Examples:
        >>> safe_name("../../escaped")
        'escaped'
        >>> safe_name("%2e%2e%2fx")
        'x'
        >>> safe_name("LC09_L2SP_044034_20220111")
        'LC09_L2SP_044034_20220111'
    """
    decoded = text
    for _ in range(2):  # "%252e" is "%2e" once decoded: a second round, no more
        decoded = unquote(decoded)
    normal = unicodedata.normalize("NFKC", decoded)
    normal = "".join("/" if c in _LOOKALIKE_SEPARATORS else c for c in normal)
    cleaned = _UNSAFE.sub("_", normal)
    # a run of dots and underscores (what is left of "../" climbs) becomes one of them
    cleaned = _DOT_RUNS.sub(lambda m: "_" if "_" in m[0] else ".", cleaned).strip("._- ")
    if _WINDOWS_RESERVED.match(cleaned):
        cleaned = f"_{cleaned}"
    cleaned = cleaned or EMPTY_NAME
    if len(cleaned) > limit:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        cleaned = f"{cleaned[: max(limit, 16) - 9].rstrip('._-')}-{digest}"
    return cleaned


class NameBook:
    r"""The file names handed out in one folder, one per outside name, never two alike.

    Args:
        taken: Names already used in the folder (fixed files such as ``catalog.json``).

    Example:
        >>> book = NameBook()
        >>> book.claim("a/b"), book.claim("a\\b"), book.claim("A_B")
        ('a_b', 'a_b-2', 'A_B-3')
    """

    def __init__(self, taken: tuple[str, ...] = ()) -> None:
        self._used = {self._key(t) for t in taken}

    @staticmethod
    def _key(name: str) -> str:
        """What two names must differ in to be two files everywhere (case, normalisation)."""
        return unicodedata.normalize("NFKC", name).casefold()

    def claim(self, outside: str, suffix: str = "") -> str:
        """A new safe name for ``outside`` (with ``suffix``, e.g. ``.tif``, counted in the check).

        Args:
            outside: The outside name.
            suffix: Appended to the component; a stem shared by several files (``x.tif`` and
                ``x.json``) is claimed once with no suffix.

        Returns:
            The component, unique in this book: ``safe_name(outside)``, or it with ``-2``,
            ``-3``... appended on a clash.
        """
        stem = safe_name(outside)
        name, n = stem, 1
        while self._key(name + suffix) in self._used:
            n += 1
            name = f"{stem}-{n}"
        self._used.add(self._key(name + suffix))
        return name + suffix


def inside(root: Path, path: Path, origin: str | None = None) -> Path:
    """``path``, after checking that it resolves inside ``root``: the last check before a write.

    Args:
        root: The output folder (or cache) the write belongs in.
        path: Where the write would go (need not exist yet).
        origin: The outside name the path was built from, for the message.

    Returns:
        ``path`` unchanged.

    Raises:
        UnsafeOutputError: If ``path`` resolves outside ``root`` (``..``, an absolute part, a
            link that points out); nothing has been written.
    """
    base = root.resolve()
    target = path.resolve()
    if target != base and base not in target.parents:
        named = f" (from the outside name {origin[:80]!r})" if origin is not None else ""
        raise UnsafeOutputError(
            f"refused to write {path}{named}: it lies outside {root}; nothing was written there. "
            "The name came from a document or file geopera does not trust: report it to its author"
        )
    return path
