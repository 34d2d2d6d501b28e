"""Where geopera keeps caches (statistics, features, STAC VRTs, remote blocks)."""

import os
from pathlib import Path


def cache_dir(kind: str) -> Path:
    """The cache folder of one kind of data.

    Args:
        kind: Sub-folder name, e.g. ``"stats"``, ``"features"``, ``"stac"``.

    Returns:
        ``$GEOPERA_CACHE/KIND``, else ``$XDG_CACHE_HOME/geopera/KIND`` (``~/.cache/geopera``).
    """
    if os.environ.get("GEOPERA_CACHE"):
        return Path(os.environ["GEOPERA_CACHE"]) / kind
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "geopera" / kind
