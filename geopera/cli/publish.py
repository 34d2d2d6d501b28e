"""``geopera publish``: weights in TorchGeo's model-registry format."""

import argparse
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add the ``publish`` command.

    Args:
        commands: The sub-parsers object of the main parser.
    """
    p = commands.add_parser(
        "publish",
        help="export a run's backbone as a TorchGeo WeightsEnum member, verified",
        description=(
            "Write the teacher backbone of a completed run as a TorchGeo weights file, a Python "
            "module with a WeightsEnum member, a docs CSV row, a model card and a contribution "
            "checklist. Everything is verified through torchgeo.models and torchgeo.tasks "
            "before the folder appears."
        ),
    )
    p.add_argument("source", type=Path, help="run directory, or a backbone .pth with its .json")
    p.add_argument("--name", required=True, help="member name, e.g. LANDSAT8_RGB_PERA")
    p.add_argument("--out", type=Path, required=True, help="new output folder")
    p.add_argument("--dataset", help="dataset text for the meta (default: the run's sources)")
    p.add_argument("--license", default="CC-BY-4.0", help="SPDX licence of the weights")
    p.add_argument("--publication", default="https://arxiv.org/abs/2505.19447")
    p.add_argument("--repo", default="https://github.com/geopera/geopera")
    p.add_argument("--url-base", help="where the file will be hosted (default: file:// to --out)")
    p.set_defaults(func=_publish)


def _publish(args: argparse.Namespace) -> int:
    from geopera.core.signals import stop_on_signals
    from geopera.publish.run import publish

    kept = f"nothing was kept: {args.out or 'the output folder'} was not created"
    with stop_on_signals(f"publishing {args.source}", kept):
        info = publish(
            args.source,
            args.name,
            args.out,
            dataset=args.dataset,
            license=args.license,
            publication=args.publication,
            repo=args.repo,
            url_base=args.url_base,
        )
    print(
        f"published {info.enum_name}.{info.member} to {info.out}/ (verified with torchgeo):\n"
        f"  {info.weights_file.name}\n  {info.module_file.name}\n"
        "  weights.csv, README.md (model card), CONTRIBUTING.md (upstream checklist)"
    )
    return 0
