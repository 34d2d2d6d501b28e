"""``geopera view``: a local web map of geopera outputs (layers, tiles, click-to-search)."""
