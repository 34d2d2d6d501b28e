"""One PerA (or full-view) training step, measured.

The stepper, its memory, profile and rate, and the largest batch that fits; shared by
``bench_step`` and the device check.
"""

import argparse
import gc
import resource
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


#: Dense bf16 peak TFLOP/s by device name (the vendor's data sheets; no sparsity).
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
