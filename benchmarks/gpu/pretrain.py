"""The pretrain part: ``geopera pretrain`` eager, compiled and from shards, against the step."""

import argparse
import csv
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common.paths import REPO
from benchmarks.gpu.common import (
    ARCHIVE,
    PROBE,
    RATE_GOALS,
    ROI,
    SMOKE_MODEL,
    device_name,
    workers,
    write_part,
)


class GPUSampler:
    """Samples GPU utilisation (%) every half second in a thread (NVML through torch)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.error: str | None = None
        self._running = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import torch

        while self._running:
            try:
                self.samples.append(float(torch.cuda.utilization()))
            except Exception as exc:  # no GPU, no NVML: recorded, not fatal
                self.error = f"{type(exc).__name__}: {exc}"[:200]
                return
            time.sleep(0.5)

    def stop(self) -> dict[str, Any]:
        """Stop and summarise (median and mean utilisation)."""
        self._running = False
        self._thread.join()
        if not self.samples:
            return {"gpu_util_error": self.error or "no samples"}
        return {
            "gpu_util_median": statistics.median(self.samples),
            "gpu_util_mean": statistics.fmean(self.samples),
            "gpu_util_samples": len(self.samples),
        }


def pretrain_config(args: argparse.Namespace, steps: int, compile_blocks: bool) -> Any:
    """The GPU config (or the tiny CPU one) on the check's archive, probe and workers."""
    from geopera.core.yaml_config import set_key
    from geopera.pretrain.config import load_pretrain_config

    config = load_pretrain_config(REPO / "configs" / "pretrain" / "pera_vit_small.yaml")
    settings: dict[str, Any] = {
        "data.archive": [str(args.data / ARCHIVE)],
        "data.roi": ROI,
        "data.probe": str(args.data / PROBE),
        "data.num_workers": workers(args),
        "trainer.max_steps": steps,
        # rates and data_wait over 10-step intervals: a logging step reads the device once
        "trainer.log_every": 1 if args.cpu_smoke else 10,
        "trainer.checkpoint_every": 10**9,
        "trainer.probe_every": 10**9,  # first and last step only
        "trainer.compile": compile_blocks,
        "optim.warmup_steps": max(steps // 5, 1),
        "optim.teacher_temp_warmup_steps": max(steps // 3, 1),
    }
    if args.cpu_smoke:
        settings.update(SMOKE_MODEL)
        settings["trainer.accelerator"] = "cpu"
    for dotted, value in settings.items():
        section, key = dotted.split(".")
        set_key(config, section, key, value)
    return config


def metrics_rates(run_dir: Path, warmup: int) -> tuple[float, float]:
    """Median images/s and data-wait share that the run logged after ``warmup`` steps."""
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["step"]) >= warmup and r["images_per_s"]]
    rate = statistics.median(float(r["images_per_s"]) for r in rows)
    return rate, statistics.median(float(r["data_wait"]) for r in rows)


def part_pretrain(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """``geopera pretrain`` eager and compiled: end-to-end vs step-only images/s, utilisation."""
    from benchmarks.common.pretrain import step_only
    from geopera.pretrain.run import pretrain
    from geopera.pretrain.trainer import precision

    steps, warmup = (6, 2) if args.cpu_smoke else (120, 20)
    result: dict[str, Any] = {"steps": steps, "warmup": warmup, "workers": workers(args)}
    # The smoke leaves trainer.compile to its own test (compiling on 2 CPU cores takes a minute).
    variants = [("eager", False)] if args.cpu_smoke else [("eager", False), ("compiled", True)]
    for variant, compile_blocks in variants:
        if time.monotonic() > deadline - 10:
            result[variant] = {"status": "skipped: no time left"}
            break
        config = pretrain_config(args, steps, compile_blocks)
        result["precision"] = precision(config, config.trainer.accelerator)
        run_dir = args.work / f"pretrain-{variant}"
        sampler = GPUSampler() if device_name() == "cuda" else None
        start = time.perf_counter()
        run = pretrain(config, out=run_dir, progress=False)
        if run is None:
            raise RuntimeError("pretrain ran as a rank other than 0: run the check alone")
        seconds = time.perf_counter() - start
        row: dict[str, Any] = {"status": run.status, "run_seconds": seconds}
        if sampler is not None:
            row.update(sampler.stop())
        row["end_to_end"], row["data_wait"] = metrics_rates(run.run_dir, warmup)
        result[variant] = row
        write_part(args.work, "pretrain", result)
        row["step_only"] = step_only(config, steps, warmup)
        row["ratio"] = row["end_to_end"] / row["step_only"]
        row["goal"] = row["ratio"] >= 0.9
        row["goal_data_wait"] = row["data_wait"] <= 0.05
        if "gpu_util_median" in row:
            row["goal_gpu_util"] = row["gpu_util_median"] >= 85
        write_part(args.work, "pretrain", result)
    if "end_to_end" in result.get("compiled", {}):
        result["compile_speedup"] = result["compiled"]["step_only"] / result["eager"]["step_only"]
    if time.monotonic() < deadline - 30:
        result["shards"] = shards_variant(args, steps, warmup, result)
        write_part(args.work, "pretrain", result)
    return result


def shards_variant(
    args: argparse.Namespace, steps: int, warmup: int, result: dict[str, Any]
) -> dict[str, Any]:
    """The eager run again, streamed from ``archive shards`` of the same archive and ROI.

    Goals: ``data_wait`` <= 5 % at >= 2,000 images/s. The chips are written here first (the
    seconds are reported); the step-only rate is the eager run's (same model and batch).
    """
    from geopera.cli.main import main as geopera
    from geopera.core.yaml_config import set_key
    from geopera.pretrain.run import pretrain

    try:
        import pyarrow  # noqa: F401  (chips.parquet)
    except ImportError:
        return {"status": "skipped: pyarrow is not installed here (chips.parquet needs it)"}
    config = pretrain_config(args, steps, False)
    out, count = args.work / "shards", 64 if args.cpu_smoke else 8192
    start = time.perf_counter()
    written = geopera(
        ["archive", "shards", str(args.data / ARCHIVE), "--roi", ROI, "--count", str(count),
         "--size", str(config.data.patch_size), "--out", str(out), "--workers", str(workers(args))]
    )  # fmt: skip
    row: dict[str, Any] = {"chips": count, "write_seconds": time.perf_counter() - start}
    if written != 0:
        return {**row, "status": f"archive shards exited with {written}"}
    for key, value in (("shards", str(out)), ("archive", []), ("roi", None), ("probe", None)):
        set_key(config, "data", key, value)
    sampler = GPUSampler() if device_name() == "cuda" else None
    run = pretrain(config, out=args.work / "pretrain-shards", progress=False)
    if run is None:
        raise RuntimeError("pretrain ran as a rank other than 0: run the check alone")
    row["status"] = run.status
    if sampler is not None:
        row.update(sampler.stop())
    row["end_to_end"], row["data_wait"] = metrics_rates(run.run_dir, warmup)
    step_only = result.get("eager", {}).get("step_only")
    if step_only:
        row["step_only"], row["ratio"] = step_only, row["end_to_end"] / step_only
    row["goal_data_wait"] = row["data_wait"] <= 0.05
    row["goal_images_per_s"] = row["end_to_end"] >= RATE_GOALS["vit_small_patch16_224"]
    return row
