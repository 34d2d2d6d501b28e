"""The error of ``geopera embed`` and ``geopera embed similar`` (kept free of torch)."""

from geopera.core.errors import GeoperaError


class EmbedError(GeoperaError):
    """The embedding inputs, settings or query cannot work."""
