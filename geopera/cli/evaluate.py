"""``geopera evaluate``: judge backbones on labelled data with frozen-feature probes."""

import argparse
from pathlib import Path
from typing import Any

from geopera.cli.options import add_band_mapping, add_min_per_class, add_ranks


def register(commands: Any) -> None:
    """Add the ``evaluate`` command.

    Args:
        commands: The sub-parsers object of the main parser.
    """
    p = commands.add_parser(
        "evaluate",
        help="judge backbones side by side: kNN, linear and dense probes with error bars",
        description="Frozen features of every backbone on labelled data; kNN (k=20 weighted, "
        "k=5 majority), linear and dense probes on spatially disjoint splits over several "
        "seeds, 95 % bootstrap intervals, and label-free health (effective rank, std, mean "
        "cosine). Writes results.json/.md/.csv/.png into a new --out folder.",
    )
    p.add_argument("protocols", nargs="+", metavar="PROTOCOL", help="knn, linear, dense, or all")
    p.add_argument(
        "--weights",
        nargs="+",
        required=True,
        help="backbones: run dir, .pth, publish folder, Enum.MEMBER, or a timm name "
        "(random initialisation)",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data",
        help="class folders (DATA/<class>/<image>), a folder with labels.csv, "
        "rasters (with --labels), or torchgeo:NAME:ROOT",
    )
    source.add_argument(
        "--suite",
        metavar="NAME[:ROOT]",
        help="every set of a suite (shared: the project's real test data), one table",
    )
    p.add_argument("--labels", help="label raster or polygons for raster --data")
    p.add_argument("--class-field", help="integer class attribute of polygon labels")
    p.add_argument("--chip-size", type=int, default=64, help="chip size for rasters + labels")
    add_band_mapping(p)
    add_min_per_class(p)
    add_ranks(p, "the feature extraction")
    p.add_argument("--out", type=Path, required=True, help="new output folder")
    p.add_argument("--seeds", type=int, default=3, help="number of spatial splits")
    p.add_argument("--cache", type=Path, help="feature cache folder (default: ~/.cache/geopera)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    import torch
    from rich.progress import Progress

    from geopera.core.outputs import require_new_folder
    from geopera.core.signals import stop_on_signals
    from geopera.data.labelled.sets import load_labelled
    from geopera.evaluate.features import default_cache
    from geopera.evaluate.run import evaluate
    from geopera.models.bandplan import parse_mapping

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    require_new_folder(args.out)  # before reading any data
    cache = None if args.no_cache else (args.cache or default_cache())
    with stop_on_signals(
        f"evaluating into {args.out}", "nothing was written under --out; cached features are kept"
    ):
        kwargs: dict[str, Any] = {
            "seeds": args.seeds,
            "cache": cache,
            "device": device,
            "batch_size": args.batch_size,
            "mapping": parse_mapping(args.bands),
            "devices": args.devices,
            "num_nodes": args.num_nodes,
        }
        if args.suite is not None:
            return _suite(args, kwargs)
        data = load_labelled(
            args.data, args.labels, args.class_field, args.chip_size, args.min_per_class
        )
        if args.no_progress or args.devices * args.num_nodes > 1:  # no bar across processes
            result = evaluate(args.protocols, args.weights, data, args.out, **kwargs)
        else:
            with Progress(transient=True) as bar:
                tasks: dict[str, Any] = {}

                def update(w: str, done: int, total: int) -> None:
                    if w not in tasks:
                        tasks[w] = bar.add_task(f"features: {w[-40:]}", total=total)
                    bar.update(tasks[w], completed=done)

                result = evaluate(
                    args.protocols, args.weights, data, args.out, progress=update, **kwargs
                )
    if result is None:  # a rank other than 0 of torchrun or srun: rank 0 reports
        return 0
    r = result
    print(
        f"done: {r.n_images} images, {len(r.classes)} classes, {r.seeds} seed(s) -> "
        f"{r.out}/ (results.json, .md, .csv, .png, confusion.png)"
    )
    for difference in r.differences:
        print(f"  {difference.sentence()}")
    for row in r.rows:
        if row.headline:
            print(
                f"  {row.weights:<40.40} {row.protocol:<7} {row.metric:<17} "
                f"{row.value:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]"
            )
    for weights, h in r.health.items():
        print(
            f"  {weights:<40.40} health  rank {h.rank:.1f}  std {h.std:.3f}  "
            f"mean cosine {h.mean_cosine:.3f}"
        )
    return 0


def _suite(args: argparse.Namespace, kwargs: dict[str, Any]) -> int:
    """``--suite``: every set evaluated into its folder under ``--out``, then one table."""
    from geopera.core.errors import GeoperaError
    from geopera.core.ranks import launched_outside
    from geopera.data.labelled.sets import LabelledSet
    from geopera.evaluate.run import evaluate
    from geopera.evaluate.suites import run_suite

    if launched_outside():
        raise GeoperaError("--suite runs in one launch: use --devices N, not torchrun or srun")
    if args.labels or args.class_field:
        raise GeoperaError("--labels and --class-field go with --data: a suite names its own")

    def one(data: LabelledSet, folder: Path) -> dict[str, Any]:
        protocols = [p for p in args.protocols if p != "dense" or data.masks is not None]
        if not protocols:
            raise ValueError("the dense protocol needs per-pixel labels; this set has classes")
        found = evaluate(protocols, args.weights, data, folder, **kwargs)
        if found is None:  # refused above: a suite runs in one launch
            raise GeoperaError("--suite runs in one launch: use --devices N, not torchrun or srun")
        return found.results

    result = run_suite(args.suite, args.out, one, args.min_per_class)
    print(f"done: {args.out}/ (suite.md, suite.json, suite.csv; a folder per set)")
    for c in result.cells:
        if c["headline"]:
            print(
                f"  {c['set']:<22.22} {c['weights']:<30.30} {c['protocol']:<7} "
                f"{c['metric']:<17} {c['value']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]"
            )
    for name, why in result.skipped.items():
        print(f"  {name}: skipped: {why}")
    return 0
