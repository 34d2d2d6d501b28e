"""Names shared by ``geopera embed`` and ``geopera embed similar`` (kept free of torch)."""

from geopera.core.errors import GeoperaError

#: The manifest of an embed folder (:class:`~geopera.core.contracts.EmbeddingSet`).
MANIFEST = "embeddings.json"


class EmbedError(GeoperaError):
    """The embedding inputs, settings or query cannot work."""
