"""Entry point: ``geopera <command> ...``.

Every user error (bad paths, bad ROI, unknown bands, existing outputs, a full disk) ends with a
one-line message on stderr and exit code 2, never a traceback. A command stopped by SIGINT or
SIGTERM says in one line what was stopped and what was kept, and exits with 128 + the signal.
Notes (what the user should know, such as the bands a backbone did not find) are one line each.
"""

import argparse
import errno
import sys
from collections.abc import Sequence

import rasterio.errors

from geopera import __version__
from geopera.cli import (
    archive,
    data,
    embed,
    evaluate,
    finetune,
    predict,
    pretrain,
    publish,
    view,
)
from geopera.cli.options import apply_document_permissions
from geopera.core.errors import GeoperaError
from geopera.core.outputs import disk_full_reason
from geopera.core.quiet import notes_as_lines
from geopera.core.signals import Interrupted

USER_ERRORS = (
    GeoperaError,
    ValueError,
    FileNotFoundError,
    FileExistsError,
    rasterio.errors.RasterioError,
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="geopera",
        description="PerA pretraining from geospatial raster archives, on TorchGeo.",
    )
    parser.add_argument("--version", action="version", version=f"geopera {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data.register(commands)
    archive.register(commands)
    pretrain.register(commands)
    finetune.register(commands)
    predict.register(commands)
    publish.register(commands)
    embed.register(commands)
    evaluate.register(commands)
    view.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_document_permissions(args)
    try:
        with notes_as_lines(args.command):
            code: int = args.func(args)
    except Interrupted as stop:
        print(f"geopera {args.command}: {stop}", file=sys.stderr)
        return stop.exit_code
    except Exception as err:
        full = None if isinstance(err, GeoperaError) else disk_full_reason(err)
        too_long = _name_too_long(err)
        if not isinstance(err, USER_ERRORS) and full is None and too_long is None:
            raise
        message = too_long or " ".join(str(err).split()) or type(err).__name__
        if full is not None:  # a library's own words for a full disk
            message = (
                f"a write failed: {full} ({message}); outputs are written atomically, so nothing "
                "partial was left under a final name: free space and run again"
            )
        print(f"geopera {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"geopera {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        _close_process_group()
    return code


def _name_too_long(err: BaseException) -> str | None:
    """What to say when a path given was too long to look up (ENAMETOOLONG), else None.

    Python's ``Path.exists()``/``is_file()`` raise it rather than answer False: a WKT, a list
    or a long glob given where one path goes, for example.
    """
    if not isinstance(err, OSError) or err.errno != errno.ENAMETOOLONG:
        return None
    name = str(err.filename) if err.filename is not None else ""
    shown = name if len(name) <= 80 else f"{name[:60]}...{name[-16:]}"
    return (
        f"the path {shown!r} ({len(name.encode())} bytes) is longer than the file system "
        "allows: check the argument that gave it (a WKT, a list or a pattern where one path "
        "goes?)"
    )


def _close_process_group() -> None:
    """Close the process group a torchrun or srun rank opened, before the process exits.

    A gloo group left open at exit can abort the process ("terminate called without an active
    exception"), which the launcher then reports as a failed rank. torch is not imported here
    unless the command did.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
