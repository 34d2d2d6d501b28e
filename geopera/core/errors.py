"""Domain errors. Each message says what was wrong and what to do about it.

The CLI turns any of these (and ``ValueError``/``FileNotFoundError``) into a one-line message and
a non-zero exit code, without a traceback.
"""


class GeoperaError(Exception):
    """Base class of geopera's user-facing errors."""


class ArchiveError(GeoperaError):
    """The raster archive has no usable source, or its sources cannot be combined as asked."""


class BandSelectionError(GeoperaError):
    """The requested bands do not exist, or sources disagree on bands and no choice was given."""


class ROIError(GeoperaError):
    """The region of interest is unreadable, empty, invalid, too small or outside the archive."""


class SamplingError(GeoperaError):
    """Patches cannot be drawn: the ROI is mostly nodata, or too few valid patches exist."""


class DiskFullError(GeoperaError):
    """A write failed because the disk (or a quota, or the file-size limit) is full."""


class RunLockedError(GeoperaError):
    """Another live process is working on the same run directory."""


class NonFiniteError(GeoperaError):
    """Training produced non-finite losses, gradients or weights, and stopped."""


class ArchiveGoneError(GeoperaError):
    """Every source of the archive became unreadable during a run."""


class GeoperaNote(UserWarning):
    """Something the user should know that is not an error (printed as one ``note:`` line)."""


def note(text: str) -> None:
    """Tell the user something (the CLI prints ``geopera CMD: note: TEXT``)."""
    import warnings

    warnings.warn(text, GeoperaNote, stacklevel=2)


def error_line(err: BaseException) -> str:
    """An exception and its causes in one line (GDAL's real reason is often the cause)."""
    parts: list[str] = []
    seen: BaseException | None = err
    while seen is not None and len(parts) < 4:
        text = " ".join(f"{type(seen).__name__}: {seen}".split())
        if text not in parts:
            parts.append(text)
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)
