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

Usage: ``python -m benchmarks.bench_step [--model NAME] [--batch-size B] [--steps N]
[--repeats R] [--device cpu|cuda] [--bf16] [--prototypes K] [--global-size G] [--local-size L]
[--n-local N] [--image-size S] [--depth D] [--max-batch] [--max-batch-limit B]
[--time-budget S] [--json]``
"""

import argparse
import json
import subprocess
import time
from typing import Any

import torch

from benchmarks.common.paths import child_env, module_command
from benchmarks.common.step import (
    Stepper,
    add_throughput,
    largest_batch,
    step_memory,
    step_profile,
)


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


def _child(case: str, args: argparse.Namespace, **overrides: Any) -> dict[str, Any] | None:
    measure = overrides.pop("measure")
    cmd = [*module_command("benchmarks.bench_step"), "--case", case, "--measure", measure]
    skip = {"case", "json", "measure"} | ({"max_batch", "repeats"} if measure != "all" else set())
    for key, value in {**vars(args), **overrides}.items():
        if key in skip or value is None:
            continue
        if isinstance(value, bool):
            if value:
                cmd.append(f"--{key.replace('_', '-')}")
        else:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = child_env()
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
