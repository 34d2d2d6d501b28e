"""One full PerA training step vs a full-view teacher-student baseline: images/s and step memory.

A step is: aligned views (on the device) + masks + forward + loss + backward + AdamW step
+ teacher EMA. Each case also reports its model FLOPs per image (``FlopCounterMode``, forward
and backward), the achieved TFLOP/s (and, on a known GPU, their share of its dense bf16 peak),
and the operators and host-device synchronisations of one step
(:class:`geopera.core.profiling.StepCounter`). Both cases use the same timm backbone, heads,
crop counts and sizes:

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

On CUDA each case runs in one process that times its ``--repeats`` runs, measures the step
memory and, with ``--max-batch``, searches the largest batch that fits: doubling from
``--batch-size`` until the GPU runs out of memory (caught, the cache emptied, the search goes
on), then one try at 1.5x the last fit; ``--max-batch-limit`` and ``--time-budget`` bound it.

Usage: ``python benchmarks/bench_step.py [--model NAME] [--batch-size B] [--steps N]
[--repeats R] [--device cpu|cuda] [--bf16] [--prototypes K] [--global-size G] [--local-size L]
[--n-local N] [--image-size S] [--depth D] [--max-batch] [--max-batch-limit B]
[--time-budget S] [--json]``
"""

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
import torch
from torch.utils.flop_counter import FlopCounterMode

from geopera.core.profiling import StepCounter, cuda_sync_check
from geopera.losses.koleo import koleo_loss
from geopera.models.pera import PerA, PerAConfig
from geopera.models.vit import embed_patch_count, encode_visible
from geopera.transforms.views import AlignedViews, CropPairs, ViewsConfig


def full_view_loss(model: PerA, views: CropPairs, teacher_temp: float) -> torch.Tensor:
    """The full-view baseline's loss: every token, DINO cross-crop matching plus KoLeo."""
    cfg = model.config
    dev = views.student_global.device
    every_g = torch.arange(
        embed_patch_count(model.student_backbone, views.student_global), device=dev
    )
    every_l = torch.arange(
        embed_patch_count(model.student_backbone, views.student_local), device=dev
    )
    with torch.no_grad():
        idx = every_g.expand(views.teacher_global.shape[0], -1)
        t = model.teacher["cls_head"](
            encode_visible(model.teacher_backbone, views.teacher_global, idx)[:, 0]
        )
        probs = model.dino.teacher_probabilities(t, teacher_temp).chunk(cfg.n_global)
        model.dino.update_center(t)
    idx_g = every_g.expand(views.student_global.shape[0], -1)
    sg = model.student["cls_head"](
        encode_visible(model.student_backbone, views.student_global, idx_g)[:, 0]
    )
    crops = list(sg.chunk(cfg.n_global))
    if cfg.n_local:
        idx_l = every_l.expand(views.student_local.shape[0], -1)
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


class Stepper:
    """One case's model, views and optimiser; :meth:`step` runs one training step on a batch.

    Args:
        case: ``"pera"`` or ``"full_view"``.
        args: The parsed arguments (model, sizes, device, precision).
    """

    def __init__(self, case: str, args: argparse.Namespace) -> None:
        torch.manual_seed(0)
        self.case = case
        self.device = torch.device(args.device)
        kwargs = {"depth": args.depth} if args.depth else {}
        config = PerAConfig(
            backbone=args.model,
            backbone_kwargs=kwargs,
            in_chans=3,
            global_size=args.global_size,
            n_local=args.n_local,
            prototypes=args.prototypes,
            head_hidden_dim=args.head_hidden_dim,
            head_bottleneck_dim=args.head_bottleneck_dim,
        )
        self.model = PerA(config).to(self.device).train()
        views = ViewsConfig(
            global_size=args.global_size, local_size=args.local_size, n_local=args.n_local
        )
        self.views = AlignedViews(views, mean=[0.5] * 3, std=[0.25] * 3, rgb=[0, 1, 2])
        self.views = self.views.to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimiser = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=0.04, fused=True)
        self.image_size = args.image_size
        self.bf16 = args.bf16
        self.steps_done = 0

    def batch(self, size: int) -> torch.Tensor:
        """A random batch of ``size`` images, (B, 3, S, S)."""
        return torch.rand(size, 3, self.image_size, self.image_size, device=self.device)

    def step(self, batch: torch.Tensor) -> None:
        """Views, forward, loss, backward, clipped AdamW step and teacher EMA."""
        self.steps_done += 1
        pairs = self.views(batch, seed=self.steps_done)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if self.case == "pera":
                loss = self.model(pairs, teacher_temp=0.04).loss
            else:
                loss = full_view_loss(self.model, pairs, teacher_temp=0.04)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 3.0)
        self.optimiser.step()
        self.optimiser.zero_grad(set_to_none=True)  # gradients belong to the step
        self.model.update_teacher(0.996)

    def sync(self) -> None:
        """Wait for the device (CUDA kernels run asynchronously)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def images_per_s(self, batch_size: int, steps: int) -> float:
        """Images/s over ``steps`` steps (after one untimed warm-up step)."""
        batch = self.batch(batch_size)
        self.step(batch)
        self.sync()
        start = time.perf_counter()
        for _ in range(steps):
            self.step(batch)
        self.sync()
        return batch_size * steps / (time.perf_counter() - start)

    def fits(self, batch_size: int) -> bool:
        """Whether one step at ``batch_size`` runs without running out of memory."""
        try:
            self.step(self.batch(batch_size))
            self.sync()
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            self.optimiser.zero_grad(set_to_none=True)
            del exc  # its traceback holds the step's tensors
            release_memory(self.device)
            return False
        return True


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the device ran out of memory (allocator, cuBLAS or cuDNN)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "alloc_failed" in text or "cudnn_status_alloc" in text
    )


def release_memory(device: torch.device) -> None:
    """Free what a failed step left behind (garbage, then the CUDA cache)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def largest_batch(
    fits: Callable[[int], bool], start: int, limit: int, deadline: float | None = None
) -> dict[str, Any]:
    """The largest batch that ``fits``: doubling from ``start``, then one try at 1.5x the last fit.

    Args:
        fits: Runs one step at a batch size; False when it ran out of memory.
        start: First size tried.
        limit: Largest size tried.
        deadline: ``time.monotonic()`` value after which no new size is tried.

    Returns:
        ``{"largest": B, "stopped_by": "oom" | "limit" | "time", "tried": {size: fitted}}``;
        ``largest`` is 0 when even ``start`` does not fit.
    """
    tried: dict[int, bool] = {}
    fit, size, stopped = 0, start, "limit"
    while size <= limit:
        if deadline is not None and time.monotonic() > deadline:
            stopped = "time"
            break
        tried[size] = fits(size)
        if not tried[size]:
            stopped = "oom"
            break
        fit, size = size, size * 2
    middle = fit + fit // 2
    in_time = deadline is None or time.monotonic() <= deadline
    if stopped == "oom" and fit and middle < size and in_time:
        tried[middle] = fits(middle)
        fit = middle if tried[middle] else fit
    return {"largest": fit, "stopped_by": stopped, "tried": tried}


def run_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """One case in this process: time it, measure its step memory, or (``all``) both and more.

    ``--measure time`` times ``args.steps`` steps; ``memory`` measures one step's memory;
    ``all`` times ``--repeats`` runs, measures memory and searches the largest batch.
    """
    stepper = Stepper(case, args)
    if args.measure == "time":
        return {"images_per_s": stepper.images_per_s(args.batch_size, args.steps)}
    if args.measure == "profile":
        return step_profile(stepper, args.batch_size)
    if args.measure == "all":
        start = time.monotonic()
        rates = [stepper.images_per_s(args.batch_size, args.steps) for _ in range(args.repeats)]
        result: dict[str, Any] = {"images_per_s": max(rates), "runs_images_per_s": rates}
        result.update(step_memory(stepper, args.batch_size))
        result.update(step_profile(stepper, args.batch_size))
        add_throughput(result, stepper.device)
        if args.max_batch:
            deadline = start + args.time_budget if args.time_budget else None
            result["max_batch"] = largest_batch(
                stepper.fits, args.batch_size, args.max_batch_limit, deadline
            )
        return result
    return step_memory(stepper, args.batch_size)


def step_memory(stepper: Stepper, batch_size: int) -> dict[str, float]:
    """One step's memory above what is held between steps (see the module docstring)."""
    device = stepper.device
    batch = stepper.batch(batch_size)
    stepper.step(batch)  # warm-up: allocates the optimiser state, which is then held
    stepper.sync()
    if device.type == "cuda":
        held = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        sampler = None
    else:
        held = psutil.Process().memory_info().rss
        sampler = PeakRSS()
    stepper.step(batch)
    stepper.sync()
    if device.type == "cuda":
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


def step_profile(stepper: Stepper, batch_size: int) -> dict[str, Any]:
    """Model FLOPs per image, and operators and host-device synchronisations per step.

    One warm-up step, one step under :class:`~geopera.core.profiling.StepCounter` (any device)
    and one under ``torch.utils.flop_counter.FlopCounterMode`` (forward and backward: matrix
    products, convolutions, attention); on CUDA one more under
    ``torch.cuda.set_sync_debug_mode("error")`` (``cuda_sync_check``: "ok" or the error).
    """
    batch = stepper.batch(batch_size)
    stepper.step(batch)
    stepper.sync()
    with StepCounter() as counter:
        stepper.step(batch)
    stepper.sync()
    flops = FlopCounterMode(display=False)
    with flops:
        stepper.step(batch)
    stepper.sync()
    counts = counter.counts
    result: dict[str, Any] = {
        "flops_per_image": flops.get_total_flops() / batch_size,
        "operators_per_step": counts.operators,
        "syncs_per_step": counts.syncs,
        "sync_sites": dict(counts.sync_sites),
    }
    if stepper.device.type == "cuda":  # the device's own check: any synchronisation raises
        try:
            with cuda_sync_check(stepper.device):
                stepper.step(batch)
            result["cuda_sync_check"] = "ok"
        except RuntimeError as err:
            result["cuda_sync_check"] = str(err).splitlines()[0][:300]
        stepper.sync()
    return result


#: Dense bf16 peak TFLOP/s by device name (the vendor's data sheets; no sparsity).
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def peak_tflops(device: torch.device) -> float | None:
    """The device's dense bf16 peak, or None when it is not a known GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def add_throughput(result: dict[str, Any], device: torch.device) -> None:
    """Achieved TFLOP/s (FLOPs per image x images/s) and, on a known GPU, the share of peak."""
    achieved = result["flops_per_image"] * result["images_per_s"] / 1e12
    result["tflops"] = achieved
    peak = peak_tflops(device)
    result["peak_share"] = achieved / peak if peak else None


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


def _child(case: str, args: argparse.Namespace, **overrides: Any) -> dict[str, Any] | None:
    measure = overrides.pop("measure")
    cmd = [sys.executable, __file__, "--case", case, "--measure", measure]
    skip = {"case", "json", "measure"} | ({"max_batch", "repeats"} if measure != "all" else set())
    for key, value in {**vars(args), **overrides}.items():
        if key in skip or value is None:
            continue
        if isinstance(value, bool):
            if value:
                cmd.append(f"--{key.replace('_', '-')}")
        else:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = dict(os.environ)
    if measure == "memory" or (measure == "all" and args.device == "cpu"):
        # A fixed mmap threshold makes glibc return freed tensors to the OS, so RSS follows live
        # memory. It slows large allocations, so timing runs in a separate, default process.
        env.update(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        if "out of memory" in proc.stderr.lower():
            return None
        raise RuntimeError(f"case {case} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def add_step_args(parser: argparse.ArgumentParser) -> None:
    """The model, crop and precision arguments of one training step (shared with gpu_check)."""
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--depth", type=int, help="override the backbone's depth (smoke tests)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="timing runs per case (best kept)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--prototypes", type=int, default=65536)
    parser.add_argument("--head-hidden-dim", type=int, default=2048)
    parser.add_argument("--head-bottleneck-dim", type=int, default=384)
    parser.add_argument("--global-size", type=int, default=224, help="global crop size")
    parser.add_argument("--local-size", type=int, default=96, help="local crop size")
    parser.add_argument("--n-local", type=int, default=8, help="local crop pairs")
    parser.add_argument("--image-size", type=int, default=256, help="input image size")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--max-batch", action="store_true", help="search the largest batch")
    parser.add_argument("--max-batch-limit", type=int, default=8192, help="largest size tried")
    parser.add_argument(
        "--time-budget", type=float, default=0.0, help="seconds per case for the search (0: none)"
    )


def cases(args: argparse.Namespace) -> dict[str, Any]:
    """Both cases, the ratios and (CUDA or ``--max-batch``) the largest batches, as a dict."""
    results: dict[str, Any] = {}
    if args.device == "cuda" or args.max_batch:
        for case in ("pera", "full_view"):  # one process per case does everything
            report = _child(case, args, measure="all")
            if report is None:
                raise SystemExit(f"{case}: out of memory at batch {args.batch_size}")
            results[case] = report
    else:
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
            profile = _child(case, args, measure="profile")
            assert profile is not None  # a profile step is no larger than the timed ones
            results[case] = {
                "images_per_s": max(rates[case]),
                "runs_images_per_s": rates[case],
                **memory,
                **profile,
            }
            add_throughput(results[case], torch.device(args.device))
    pera, full = results["pera"], results["full_view"]
    results["ratio_images_per_s"] = pera["images_per_s"] / full["images_per_s"]
    results["ratio_memory"] = pera["peak_mem_mib"] / full["peak_mem_mib"]
    if "max_batch" in pera:
        results["max_batch"] = {
            c: results[c]["max_batch"]["largest"] for c in ("pera", "full_view")
        }
        full_max = results["max_batch"]["full_view"]
        results["ratio_max_batch"] = results["max_batch"]["pera"] / full_max if full_max else None
    return results


def main() -> None:
    """Run both cases in separate processes and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_args(parser)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--case", choices=["pera", "full_view"], help=argparse.SUPPRESS)
    parser.add_argument(
        "--measure", choices=["time", "memory", "profile", "all"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.case:  # child process
        print(json.dumps(run_case(args.case, args)))
        return
    results = cases(args)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(
        f"{args.model}, batch {args.batch_size}, {args.steps} steps x {args.repeats} runs, "
        f"{args.device}{', bf16' if args.bf16 else ''}, {args.prototypes} prototypes, "
        f"crops 2 x {args.global_size} + {args.n_local} x {args.local_size}"
    )
    print(
        f"{'case':10} {'images/s':>9} {'step MiB':>9} {'held MiB':>9} {'process MiB':>12} "
        f"{'GFLOP/img':>10} {'TFLOP/s':>8} {'of peak':>8} {'ops/step':>9} {'syncs':>6}"
    )
    for case in ("pera", "full_view"):
        r = results[case]
        share = f"{r['peak_share']:.1%}" if r.get("peak_share") is not None else "-"
        print(
            f"{case:10} {r['images_per_s']:>9.2f} {r['peak_mem_mib']:>9.0f} "
            f"{r['held_mib']:>9.0f} {r['process_peak_mib']:>12.0f} "
            f"{r['flops_per_image'] / 1e9:>10.1f} {r['tflops']:>8.3f} {share:>8} "
            f"{r['operators_per_step']:>9} {r['syncs_per_step']:>6}"
        )
    ratio_process = results["pera"]["process_peak_mib"] / results["full_view"]["process_peak_mib"]
    flops_ratio = results["pera"]["flops_per_image"] / results["full_view"]["flops_per_image"]
    print(
        f"ratio      {results['ratio_images_per_s']:>8.2f}x {results['ratio_memory']:>8.2f}x "
        f"{'':>9} {ratio_process:>11.2f}x {flops_ratio:>9.2f}x"
    )
    if "max_batch" in results:
        print(f"largest batch: {results['max_batch']} (ratio {results['ratio_max_batch']})")


if __name__ == "__main__":
    main()
