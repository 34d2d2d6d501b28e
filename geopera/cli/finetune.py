"""``geopera finetune segmentation|detection|change``: a backbone on labelled rasters."""

import argparse
from pathlib import Path
from typing import Any

from geopera.cli.options import add_band_mapping, add_min_per_class
from geopera.finetune.registry import TASKS


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights", help="run dir, backbone .pth, publish folder, Enum.MEMBER or timm name"
    )
    p.add_argument("--config", type=Path, help="YAML config (see configs/finetune/)")
    p.add_argument("--max-steps", type=int, help="optimiser steps")
    p.add_argument("--freeze-backbone", action="store_true", help="train the head only (probe)")
    p.add_argument(
        "--out", type=Path, help="new output folder (default: runs/finetune-<task>-<time>)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config key, e.g. --set data.chip_size=64",
    )
    p.add_argument(
        "--fast-dev-run", action="store_true", help="one batch of each stage (smoke test)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_band_mapping(p)
    p.add_argument(
        "--extra-bands",
        choices=["ignore", "adapt"],
        help="data bands the backbone has no input for: ignore them (default), or adapt the "
        "patch embedding with new inputs started from the nearest-wavelength one",
    )
    add_min_per_class(p, default=None)


def register(commands: Any) -> None:
    """Add the ``finetune`` command and a sub-command per task of the registry.

    Args:
        commands: The sub-parsers object of the main parser.
    """
    p = commands.add_parser(
        "finetune",
        help=f"fine-tune a backbone for a task: {', '.join(TASKS)}",
        description="Fine-tune a pretrained (or random) ViT on labelled rasters. Writes "
        "OUT/model.ckpt, OUT/metrics.json and OUT/previews/.",
    )
    tasks = p.add_subparsers(dest="task", required=True, metavar="TASK")
    for info in TASKS.values():
        sub = tasks.add_parser(info.name, help=info.summary, description=info.summary)
        for arg in info.arguments:
            sub.add_argument(
                arg.flag, nargs="+" if arg.many else None, choices=arg.choices, help=arg.help
            )
        _common(sub)
        sub.set_defaults(func=_finetune)


def _finetune(args: argparse.Namespace) -> int:
    from geopera.core.signals import stop_on_signals
    from geopera.core.yaml_config import apply_override, load_config
    from geopera.finetune.config import FinetuneConfig
    from geopera.finetune.run import finetune
    from geopera.models.bandplan import parse_mapping

    config = load_config(args.config, FinetuneConfig) if args.config else FinetuneConfig()
    d = config.data
    for arg in TASKS[args.task].arguments:
        value = getattr(args, arg.key, None)
        if value is not None:
            setattr(d, arg.key, [str(v) for v in value] if arg.many else str(value))
    for assignment in args.set:
        apply_override(config, assignment)
    if args.weights is not None:
        config.model.weights = args.weights
    if args.freeze_backbone:
        config.model.freeze_backbone = True
    if args.bands:
        config.model.band_map = parse_mapping(args.bands) or {}
    if args.extra_bands is not None:
        config.model.extra_bands = args.extra_bands
    if args.min_per_class is not None:
        config.data.min_per_class = args.min_per_class
    if args.max_steps is not None:
        config.trainer.max_steps = args.max_steps
    if args.fast_dev_run:
        config.trainer.fast_dev_run = True
    where = str(args.out) if args.out else "its output folder"
    with stop_on_signals(
        f"fine-tuning ({args.task})",
        f"nothing was kept: {where} was not created and its staging folder was removed",
    ):
        result = finetune(args.task, config, args.out, progress=not args.no_progress)
    m = result.metrics
    key = TASKS[args.task].headline
    value = m.test.get(key)
    shown = "n/a" if value is None else f"{value:.3f}"
    print(
        f"fine-tuned {args.task} for {m.steps} steps on {m.chips.train} chips "
        f"(weights: {m.weights}); test {key} {shown}\n"
        f"  {result.out}/model.ckpt\n  {result.out}/metrics.json\n  {result.out}/previews/"
    )
    return 0
