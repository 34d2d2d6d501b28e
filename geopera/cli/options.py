"""Options shared by the commands that read archives (recipes, STAC catalogs, search URLs)."""

import argparse
from typing import Any


def add_document_permissions(parser: Any) -> None:
    """Add ``--allow-hook``, ``--allow-local-assets`` and ``--max-items`` to an archive reader.

    Documents are data: what they may make geopera do beyond reading is granted here, on the
    command line, and nowhere else (see :mod:`geopera.data.sources.trust`).

    Args:
        parser: The command's parser.
    """
    parser.add_argument(
        "--allow-hook",
        action="append",
        default=[],
        metavar="MODULE:FUNCTION",
        help="a URL-signing hook that documents may name, beyond planetary_computer:sign "
        "(imported and called: name only code you trust)",
    )
    parser.add_argument(
        "--allow-local-assets",
        action="store_true",
        help="let a remote catalog name local files as assets",
    )
    parser.add_argument(
        "--max-items",
        type=positive_int,
        metavar="N",
        help="the most items one STAC catalog or search may give (default: 10000 for a "
        "catalog walk, 200 for a search; a search URL's own max_items is kept below N)",
    )


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def apply_document_permissions(args: argparse.Namespace) -> None:
    """Grant what the command line allowed, before any document is read."""
    from geopera.data.sources.trust import allow

    allow(
        getattr(args, "allow_hook", None) or [],
        bool(getattr(args, "allow_local_assets", False)),
        getattr(args, "max_items", None),
    )


def add_band_mapping(parser: Any) -> None:
    """Add ``--bands SLOT=BAND ...``: which data band feeds which backbone input, by hand."""
    parser.add_argument(
        "--bands",
        nargs="+",
        metavar="SLOT=BAND",
        help="map bands by hand: a backbone band or common name, then a band of the data "
        "(e.g. --bands red=B04 green=B03 blue=B02); default: matched by what they measure",
    )


def add_min_per_class(parser: Any, default: int | None = 2) -> None:
    """Add ``--min-per-class N``: classes with fewer images or chips are left out.

    Args:
        parser: The command's parser.
        default: The option's default (None: the config's, which is 2).
    """
    parser.add_argument(
        "--min-per-class",
        type=positive_int,
        default=default,
        metavar="N",
        help="leave out classes with fewer than N images/chips, and say which (default 2)",
    )


def add_ranks(parser: Any, shared: str, nodes: bool = True) -> None:
    """Add ``--devices N`` (and ``--num-nodes M``): processes sharing a command's work.

    Args:
        parser: The command's parser.
        shared: What the processes share, for the help text ("the chip rows").
        nodes: Whether the command runs on several nodes too.
    """
    parser.add_argument(
        "--devices",
        type=positive_int,
        default=1,
        metavar="N",
        help=f"processes (one per device) sharing {shared}; geopera starts them on one node",
    )
    if nodes:
        parser.add_argument(
            "--num-nodes",
            type=positive_int,
            default=1,
            metavar="M",
            help="nodes, each started by torchrun or srun (see docs/scale.md)",
        )
