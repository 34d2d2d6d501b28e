"""The prepared device check: PerA step, pretraining, quality and downstream on one CUDA GPU.

Run through ``benchmarks/gpu_check.sh`` (which installs the carried wheels of ``make
gpu-wheels`` where the packages are missing). Four parts, each in its own process with its own
share of ``--budget-s``; a part that fails or runs out of time is recorded as such and the
others still run; what a part measured before it stopped is kept:

* **step**: ``bench_step.py`` with bf16 autocast, PerA vs full view, ViT-S/16 and ViT-B/16 at
  the paper's crops (2 x 224 + 8 x 96 from 256 px) and ViT-B/16 at 448 px global crops from
  512 px: images/s at a common batch and the largest batch each fits, model FLOPs per image,
  achieved TFLOP/s and their share of the device's dense bf16 peak, operators and host-device
  synchronisations per step. Goals: largest batch >= 2x, images/s >= 2.2x the full view's;
  ViT-S/16 >= 2,000 images/s, ViT-B/16 >= 700 at their best batch.
* **pretrain**: ``geopera pretrain`` (``configs/pretrain/pera_vit_small.yaml``, bf16-mixed) on
  real Landsat 8 crops, DataLoader workers scaled to the machine's cores, eager and with
  ``trainer.compile``: end-to-end images/s vs the same task fed one in-memory batch (goal
  >= 90 %), ``data_wait`` from the run's metrics.csv (goal <= 5 %), and GPU utilisation
  sampled during the run (goal: median >= 85 %). Then the eager run streamed from ``geopera
  archive shards`` of the same archive (8,192 chips written first): goals ``data_wait`` <= 5 %
  at >= 2,000 images/s (skipped where pyarrow is missing).
* **quality**: the eager run's teacher vs its own random initialisation: leave-one-out kNN
  accuracy on real labelled chips (Chesapeake tiles).
* **downstream**: ``geopera finetune segmentation`` for 100 steps on real NAIP chips from the
  pretrained backbone, then ``predict_dense`` on a 4096 px raster: Mpx/s vs the model's
  forward-only rate, and peak GPU memory.

``--cpu-smoke`` runs every part on the CPU at tiny sizes (a 2-block ViT-Ti, a few steps) so the
script cannot rot; CI runs it. Results: ``gpu_check.json`` (one key per part plus ``env``),
``gpu_check.md`` (the tables) and ``gpu_check.log`` (each part's output tail) under ``--out``.

Usage: ``bash benchmarks/gpu_check.sh [--out DIR] [--budget-s S] [--cpu-smoke]
[--parts step pretrain quality downstream] [--data DIR] [--work DIR]``
"""

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common.paths import REPO, child_env, module_command
from benchmarks.gpu.common import (
    DATA_FOLDERS,
    PARTS,
    SHARES,
    STEP_CONFIGS,
    default_data,
    env_report,
    write_part,
)
from benchmarks.gpu.downstream import part_downstream
from benchmarks.gpu.pretrain import part_pretrain
from benchmarks.gpu.quality import part_quality
from benchmarks.gpu.report import markdown
from benchmarks.gpu.step import part_step
from geopera.core.outputs import write_atomic, write_json


def run_part(args: argparse.Namespace) -> None:
    """Child process: run one part and write its JSON."""
    deadline = time.monotonic() + args.part_seconds
    functions = {
        "step": part_step,
        "pretrain": part_pretrain,
        "quality": part_quality,
        "downstream": part_downstream,
    }
    result = functions[args.part](args, deadline)
    result["status"] = "ok"
    write_part(args.work, args.part, result)


@contextlib.contextmanager
def work_folder(path: Path | None) -> Iterator[Path]:
    """The given work folder, or a temporary one removed afterwards."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    tmp = Path(tempfile.mkdtemp(prefix="geopera-gpu-check-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _text(output: str | bytes | None) -> str:
    # TimeoutExpired carries bytes even when the run asked for text.
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def run_in_child(
    part: str, seconds: float, args: argparse.Namespace, work: Path
) -> tuple[str, str]:
    """Run one part in its own process within ``seconds`` (+30 s to wind down).

    Returns:
        The status (``ok``, ``failed (exit N)`` or ``timeout``) and the process's output.
    """
    cmd = [
        *module_command("benchmarks.gpu_check"),
        "--part",
        part,
        "--part-seconds",
        f"{seconds:.0f}",
        "--data",
        str(args.data),
        "--work",
        str(work),
    ]
    if args.cpu_smoke:
        cmd.append("--cpu-smoke")
    if args.step_configs:
        cmd += ["--step-configs", *args.step_configs]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, cwd=REPO, timeout=seconds + 30, env=child_env()
        )
    except subprocess.TimeoutExpired as exc:
        return "timeout", _text(exc.stdout) + _text(exc.stderr)
    status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    return status, proc.stdout + proc.stderr


def check_arguments(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, in one line, or None."""
    if args.budget_s <= 0:
        return f"--budget-s must be positive, not {args.budget_s:g}"
    for needed in DATA_FOLDERS:
        if not (args.data / needed).is_dir():
            return (
                f"{args.data / needed} not found: run `make gpu-wheels` (it copies the "
                "check's data to .gpu/data) or pass --data ../shared/data"
            )
    if (args.out / "gpu_check.json").exists():
        return f"{args.out} already holds a check's results; choose another --out"
    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        return f"--work {args.work} is not empty; give a new folder (runs are written there)"
    return None


def main() -> int:
    """Run the parts in child processes and write the JSON, Markdown and log."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("gpu-check"), help="results folder")
    p.add_argument("--budget-s", type=float, default=480.0, help="seconds for all parts")
    p.add_argument("--cpu-smoke", action="store_true", help="every part on the CPU, tiny sizes")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument(
        "--step-configs",
        nargs="+",
        choices=[c[0] for c in STEP_CONFIGS],
        help="step part: only these rows (default: all)",
    )
    p.add_argument("--data", type=Path, help="real data root (default: .gpu/data or ../shared)")
    p.add_argument("--work", type=Path, help="new scratch folder (default: a temporary one)")
    p.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    p.add_argument("--part-seconds", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.data = (args.data or default_data()).resolve()
    if args.part:
        run_part(args)
        return 0
    problem = check_arguments(args)
    if problem:
        print(f"gpu_check: {problem}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report: dict[str, Any] = {
        "command": " ".join(["benchmarks/gpu_check.sh", *sys.argv[1:]]),
        "budget_s": args.budget_s,
        "parts": args.parts,
        "env": env_report(),
    }
    with work_folder(args.work) as work, open(args.out / "gpu_check.log", "w") as log:
        for i, part in enumerate(args.parts):
            left = args.budget_s - (time.monotonic() - started)
            seconds = left * SHARES[part] / sum(SHARES[q] for q in args.parts[i:])
            print(f"gpu_check: {part} ({seconds:.0f} s)", flush=True)
            t0 = time.monotonic()
            status, output = run_in_child(part, seconds, args, work)
            log.write(f"===== {part}: {status}\n{output[-6000:]}\n")
            log.flush()
            path = work / "parts" / f"{part}.json"
            result = json.loads(path.read_text()) if path.is_file() else {}
            if status != "ok":
                result["status"] = status  # what it measured before it stopped stays
                result["error_tail"] = output[-1500:]
            result["seconds"] = time.monotonic() - t0
            report[part] = result
            report["seconds"] = time.monotonic() - started
            print(f"gpu_check: {part} {status} in {result['seconds']:.0f} s", flush=True)
            write_json(args.out / "gpu_check.json", report)
    write_atomic(args.out / "gpu_check.md", markdown(report))
    print(markdown(report))
    return 0 if all(report[p].get("status") == "ok" for p in args.parts) else 1


if __name__ == "__main__":
    sys.exit(main())
