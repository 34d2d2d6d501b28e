"""End-to-end ``geopera pretrain`` throughput against the step-only rate of the same config.

* ``end_to_end``: ``geopera pretrain`` itself (sample archive, patches read by DataLoader
  workers, quality control, views on the device, PerA step), images/s from its metrics.csv;
* ``step_only``: the same task and Trainer fed one in-memory batch over and over (no reads).

With ``--shards DIR`` both read from a ``geopera archive shards`` folder instead of the sample
archive (``pretrain --shards``).

Both skip the first ``--warmup`` steps and take the median images/s of the rest; the two are
measured alternately ``--repeats`` times and the median of the paired ratios is reported with
its range, beside the end-to-end run's ``data_wait`` (median over its logged steps: the share of
wall time the loop waited for the next batch). Goal: the data pipeline never limits training:
end-to-end >= 90 % of step-only, data_wait <= 5 %.

Usage: ``python -m benchmarks.bench_pretrain [--steps N] [--workers W] [--repeats R]
[--config FILE] [--shards DIR] [--json]``
"""

import argparse
import csv
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common.paths import REPO
from benchmarks.common.pretrain import step_only
from geopera.archive.sample_archive import DEFAULT_DIR, build_sample_archive
from geopera.pretrain.config import load_pretrain_config
from geopera.pretrain.run import pretrain


def end_to_end(config: Any, warmup: int) -> tuple[float, float]:
    """Median images/s and data-wait share that ``geopera pretrain`` reports in metrics.csv."""
    with tempfile.TemporaryDirectory() as tmp:
        result = pretrain(config, out=Path(tmp) / "run", progress=False)
        if result is None:
            raise RuntimeError("pretrain ran as a rank other than 0: run the benchmark alone")
        with open(result.run_dir / "metrics.csv", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["step"]) >= warmup]
    rate = statistics.median(float(r["images_per_s"]) for r in rows)
    return rate, statistics.median(float(r["data_wait"]) for r in rows)


def main() -> None:
    """Run both measurements and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = REPO / "configs" / "pretrain" / "pera_vit_tiny_cpu.yaml"
    parser.add_argument("--config", type=Path, default=default)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="alternated pairs of runs")
    parser.add_argument("--shards", type=Path, help="an `archive shards` folder to read instead")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    build_sample_archive(DEFAULT_DIR, log=lambda _: None)
    config = load_pretrain_config(args.config)
    config.data.archive = [str(DEFAULT_DIR)]
    config.data.roi = str(DEFAULT_DIR / "area.geojson")
    config.data.shards = str(args.shards) if args.shards else None
    config.data.num_workers = args.workers
    config.trainer.max_steps = args.steps
    config.trainer.log_every = 1
    config.trainer.checkpoint_every = 10**9
    pairs, waits = [], []  # alternate the two measurements: this machine drifts more than that
    for _ in range(args.repeats):
        only = step_only(config, args.steps, args.warmup)
        rate, wait = end_to_end(config, args.warmup)
        pairs.append((only, rate))
        waits.append(wait)
    ratios = [e / s for s, e in pairs]
    result = {
        "runs": [
            {"step_only": s, "end_to_end": e, "ratio": e / s, "data_wait": w}
            for (s, e), w in zip(pairs, waits, strict=True)
        ],
        "median_ratio": statistics.median(ratios),
        "median_data_wait": statistics.median(waits),
        "min_ratio": min(ratios),
        "max_ratio": max(ratios),
        "config": args.config.name,
        "data": str(args.shards) if args.shards else "sample archive",
        "workers": args.workers,
        "steps": args.steps,
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{args.config.name}, {args.steps} steps ({args.warmup} warm-up), {args.workers} workers")
    print(f"{'run':>4} {'step only':>10} {'end to end':>11} {'ratio':>6} {'data_wait':>10}")
    for i, ((s, e), w) in enumerate(zip(pairs, waits, strict=True)):
        print(f"{i:>4} {s:>10.2f} {e:>11.2f} {e / s:>6.2f} {w:>10.1%}")
    print(
        f"median ratio {result['median_ratio']:.2f} "
        f"(range {result['min_ratio']:.2f}-{result['max_ratio']:.2f}), "
        f"median data_wait {result['median_data_wait']:.1%}"
    )


if __name__ == "__main__":
    main()
