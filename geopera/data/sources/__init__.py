"""Archive sources: local files, STAC documents and searches, recipes and remote reads.

``model`` holds the records (raster items, sources, the archive, problems); ``files``,
``stac_search``/``stac_items`` and ``recipes`` turn arguments into raster items; ``remote`` makes
remote reads fast; ``discover`` is the only module that sees all of them.
"""
