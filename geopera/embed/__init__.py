"""``geopera embed``: georeferenced embeddings of rasters, and similarity search on them."""
