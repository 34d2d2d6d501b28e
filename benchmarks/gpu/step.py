"""The step part: ``bench_step`` per model and crop size, PerA against the full view."""

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from benchmarks.common.paths import child_env, module_command
from benchmarks.gpu.common import RATE_GOALS, STEP_CONFIGS, device_name, write_part

#: The smoke's one case: a 2-block ViT-Ti at 64 px, batch 2, searched up to 4.
SMOKE_CONFIG = ("vit_t2_64", "vit_tiny_patch16_224", 64, 80, 256, 2, 4)
SMOKE_ARGS = ["--depth", "2", "--local-size", "48", "--n-local", "2", "--head-hidden-dim", "64",
              "--head-bottleneck-dim", "32", "--steps", "1", "--repeats", "1"]  # fmt: skip


def _configs(args: argparse.Namespace) -> tuple[list[tuple[Any, ...]], list[str]]:
    """The cases to run (``STEP_CONFIGS`` or the smoke's), and their extra arguments."""
    if args.cpu_smoke:
        return [SMOKE_CONFIG], SMOKE_ARGS
    chosen = [c for c in STEP_CONFIGS if not args.step_configs or c[0] in args.step_configs]
    return chosen, ["--steps", "10", "--repeats", "2"]


def part_step(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """bench_step.py per model and crop size: rates, ratios, largest batches, goals."""
    device = device_name()
    result: dict[str, Any] = {"device": device, "bf16": True, "configs": {}}
    configs, extra = _configs(args)
    for i, (name, model, global_size, image_size, prototypes, batch, limit) in enumerate(configs):
        left = deadline - time.monotonic()
        share = left / (len(configs) - i)
        # Per case (one process each): timing, memory, then the search, in about half the share.
        cmd = [
            *module_command("benchmarks.bench_step"),
            "--json",
            "--bf16",
            "--max-batch",
            "--device",
            device,
            "--model",
            model,
            "--global-size",
            str(global_size),
            "--image-size",
            str(image_size),
            "--prototypes",
            str(prototypes),
            "--batch-size",
            str(batch),
            "--time-budget",
            f"{max(share / 2 - 8, 5):.0f}",
            "--max-batch-limit",
            str(limit),
            *extra,
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=max(left, 1), env=child_env()
            )
        except subprocess.TimeoutExpired:
            result["configs"][name] = {"status": "timeout"}
            break
        print(proc.stderr[-2000:], file=sys.stderr)
        if proc.returncode != 0:
            result["configs"][name] = {"status": "failed", "error": proc.stderr[-1500:]}
        else:
            row = json.loads(proc.stdout[proc.stdout.index("{") :])
            row.update(
                status="ok",
                model=model,
                global_size=global_size,
                image_size=image_size,
                batch=batch,
                goal_images_per_s=row["ratio_images_per_s"] >= 2.2,
                goal_max_batch=(row.get("ratio_max_batch") or 0) >= 2.0,
            )
            floor = RATE_GOALS.get(model)
            if floor is not None and not args.cpu_smoke:
                row["goal_rate"] = {
                    "images_per_s": floor,
                    "met": row["pera"]["images_per_s"] >= floor,
                }
            result["configs"][name] = row
        write_part(args.work, "step", result)
    return result
