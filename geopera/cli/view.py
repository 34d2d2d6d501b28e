"""``geopera view PATH...``: a local web map of geopera outputs, rasters and catalogs."""

import argparse
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add the ``view`` command.

    Args:
        commands: The sub-parsers object of the main parser.
    """
    p = commands.add_parser(
        "view",
        help="a local web map of predictions, embeddings and rasters (click to search)",
        description="Serve a web map of geopera outputs (predict, embed, embed similar), input "
        "rasters, vector files or STAC catalogs, on 127.0.0.1 unless --host says otherwise. On "
        "an embed folder a click searches for similar places.",
    )
    p.add_argument("paths", nargs="+", type=Path, help="outputs, rasters, folders or catalog.json")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this "
        "machine only; name another to share the map, e.g. 0.0.0.0)",
    )  # fmt: skip
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--basemap", help="raster tile URL template under the layers ({z}/{x}/{y})")
    p.add_argument("--save", type=Path, help="folder where clicked searches can be saved")
    p.set_defaults(func=_view)


def _view(args: argparse.Namespace) -> int:
    from geopera.view.run import view

    view(args.paths, args.host, args.port, not args.no_browser, args.basemap, args.save)
    return 0
