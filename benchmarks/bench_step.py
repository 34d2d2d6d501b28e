"""One full PerA training step vs a full-view teacher-student baseline: images/s and step memory.

A step is: aligned views (Kornia, on the device) + masks + forward + loss + backward + AdamW step
+ teacher EMA. Both cases use the same timm backbone, heads, crop counts and sizes:

* ``pera``: geopera's PerA (student on 20 % of the patches, +20 % mask tokens after depth // 2;
  teacher on 60 %);
* ``full_view``: student on every token of all crops, teacher on every token of the global crops,
  DINO loss with the usual cross-crop matching (each student crop against every other global
  teacher crop) plus KoLeo: the same loss family minus masking.

Each case runs in its own process. ``peak_mem_mib`` is the step memory: the peak during the timed
steps above what is held between steps (weights, teacher, optimiser state; gradients are freed
after each step, so they count in the step). On the CPU it is sampled RSS with glibc set to
return freed memory to the OS; on CUDA, ``max_memory_allocated``. ``process_peak_mib`` is the
whole process's peak (ru_maxrss on the CPU), reported too.

Timing runs alternate the two cases ``--repeats`` times and keep each case's best run (the
machine is shared and noisy); every run is listed in the JSON.

Usage: ``python benchmarks/bench_step.py [--model NAME] [--batch-size B] [--steps N]
[--repeats R] [--device cpu|cuda] [--bf16] [--prototypes K] [--max-batch] [--json]``
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from typing import Any

import psutil
import torch

from geopera.losses.koleo import koleo_loss
from geopera.models.pera import PerA, PerAConfig
from geopera.models.vit import encode_visible
from geopera.transforms.views import AlignedViews, CropPairs, ViewsConfig


def full_view_loss(model: PerA, views: CropPairs, teacher_temp: float) -> torch.Tensor:
    """The full-view baseline's loss: every token, DINO cross-crop matching plus KoLeo."""
    cfg = model.config
    every_g = torch.arange(
        views.student_global.shape[-1]
        // model.patch
        * views.student_global.shape[-2]
        // model.patch
    )
    every_l = torch.arange(
        views.student_local.shape[-1] // model.patch * views.student_local.shape[-2] // model.patch
    )
    dev = views.student_global.device
    with torch.no_grad():
        idx = every_g.to(dev).expand(views.teacher_global.shape[0], -1)
        t = model.teacher["cls_head"](
            encode_visible(model.teacher_backbone, views.teacher_global, idx)[:, 0]
        )
        probs = model.dino.teacher_probabilities(t, teacher_temp).chunk(cfg.n_global)
        model.dino.update_center(t)
    idx_g = every_g.to(dev).expand(views.student_global.shape[0], -1)
    sg = model.student["cls_head"](
        encode_visible(model.student_backbone, views.student_global, idx_g)[:, 0]
    )
    crops = list(sg.chunk(cfg.n_global))
    if cfg.n_local:
        idx_l = every_l.to(dev).expand(views.student_local.shape[0], -1)
        tokens = encode_visible(model.student_backbone, views.student_local, idx_l)[:, 0]
        crops += list(model.student["cls_head"](tokens).chunk(cfg.n_local))
    terms = [
        model.dino.cross_entropy(s, p)
        for i, p in enumerate(probs)
        for j, s in enumerate(crops)
        if i != j
    ]
    dino = torch.stack(terms).mean()
    koleo = sum((koleo_loss(c) for c in crops[: cfg.n_global]), sg.new_zeros(()))
    return cfg.dino_weight * dino + cfg.koleo_weight * koleo


def run_case(case: str, args: argparse.Namespace) -> dict[str, float]:
    """Time ``args.steps`` steps (``--measure time``) or measure one step's memory."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    config = PerAConfig(
        backbone=args.model, in_chans=3, global_size=224, prototypes=args.prototypes
    )
    model = PerA(config).to(device).train()
    views = AlignedViews(ViewsConfig(), mean=[0.5] * 3, std=[0.25] * 3, rgb=[0, 1, 2]).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.04, fused=True)
    batch = torch.rand(args.batch_size, 3, 256, 256, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def step() -> None:
        pairs = views(batch)
        with autocast:
            if case == "pera":
                loss = model(pairs, teacher_temp=0.04).loss
            else:
                loss = full_view_loss(model, pairs, teacher_temp=0.04)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)  # gradients belong to the step
        model.update_teacher(0.996)

    step()  # warm-up: allocates the optimiser state, which is then held between steps
    if args.measure == "time":
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return {"images_per_s": args.batch_size * args.steps / (time.perf_counter() - start)}
    if device.type == "cuda":
        torch.cuda.synchronize()
        held = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        sampler = None
    else:
        held = psutil.Process().memory_info().rss
        sampler = PeakRSS()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        process_peak = peak
    else:
        assert sampler is not None
        peak = sampler.stop()
        process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "peak_mem_mib": (peak - held) / 2**20,
        "held_mib": held / 2**20,
        "process_peak_mib": process_peak / 2**20,
    }


class PeakRSS:
    """Samples this process's RSS every 2 ms in a thread and keeps the maximum."""

    def __init__(self) -> None:
        self.peak = 0
        self._running = True
        self._process = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self._running:
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(0.002)

    def stop(self) -> int:
        """Stop sampling and return the peak in bytes."""
        self._running = False
        self._thread.join()
        return self.peak


def largest_batch(case: str, args: argparse.Namespace) -> int:
    """Largest power-of-two batch that fits on the GPU (each try in a fresh process)."""
    fits, size = 0, args.batch_size
    while size <= 4096:
        child = _child(case, args, batch_size=size, steps=1, measure="memory")
        if child is None:
            break
        fits, size = size, size * 2
    return fits


def _child(case: str, args: argparse.Namespace, **overrides: Any) -> dict[str, float] | None:
    measure = overrides.pop("measure")
    cmd = [sys.executable, __file__, "--case", case, "--measure", measure]
    for key, value in {**vars(args), **overrides}.items():
        if key in ("case", "json", "max_batch", "measure", "repeats") or value is None:
            continue
        if isinstance(value, bool):
            if value:
                cmd.append(f"--{key.replace('_', '-')}")
        else:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = dict(os.environ)
    if measure == "memory":
        # A fixed mmap threshold makes glibc return freed tensors to the OS, so RSS follows live
        # memory. It slows large allocations, so timing runs in a separate, default process.
        env.update(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        if "out of memory" in proc.stderr.lower():
            return None
        raise RuntimeError(f"case {case} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    """Run both cases in separate processes and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="timing runs per case (best kept)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--prototypes", type=int, default=65536)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--max-batch", action="store_true", help="CUDA: find the largest batch")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--case", choices=["pera", "full_view"], help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=["time", "memory"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # child process
        print(json.dumps(run_case(args.case, args)))
        return
    results: dict[str, Any] = {}
    rates: dict[str, list[float]] = {"pera": [], "full_view": []}
    for _ in range(args.repeats):  # alternate the cases; keep each case's best run
        for case in rates:
            timing = _child(case, args, measure="time")
            if timing is None:
                raise SystemExit(f"{case}: out of memory at batch {args.batch_size}")
            rates[case].append(timing["images_per_s"])
    for case in rates:
        memory = _child(case, args, measure="memory")
        if memory is None:
            raise SystemExit(f"{case}: out of memory at batch {args.batch_size}")
        results[case] = {
            "images_per_s": max(rates[case]),
            "runs_images_per_s": rates[case],
            **memory,
        }
    results["ratio_images_per_s"] = (
        results["pera"]["images_per_s"] / results["full_view"]["images_per_s"]
    )
    results["ratio_memory"] = results["pera"]["peak_mem_mib"] / results["full_view"]["peak_mem_mib"]
    if args.max_batch and args.device == "cuda":
        results["max_batch"] = {case: largest_batch(case, args) for case in ("pera", "full_view")}
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(
        f"{args.model}, batch {args.batch_size}, {args.steps} steps x {args.repeats} runs, "
        f"{args.device}"
        f"{', bf16' if args.bf16 else ''}, {args.prototypes} prototypes"
    )
    print(f"{'case':10} {'images/s':>9} {'step MiB':>9} {'held MiB':>9} {'process MiB':>12}")
    for case in ("pera", "full_view"):
        r = results[case]
        print(
            f"{case:10} {r['images_per_s']:>9.2f} {r['peak_mem_mib']:>9.0f} "
            f"{r['held_mib']:>9.0f} {r['process_peak_mib']:>12.0f}"
        )
    ratio_process = results["pera"]["process_peak_mib"] / results["full_view"]["process_peak_mib"]
    print(
        f"ratio      {results['ratio_images_per_s']:>8.2f}x {results['ratio_memory']:>8.2f}x "
        f"{'':>9} {ratio_process:>11.2f}x"
    )
    if "max_batch" in results:
        print(f"largest batch: {results['max_batch']}")


if __name__ == "__main__":
    main()
