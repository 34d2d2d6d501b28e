"""Feature previews: PCA-RGB maps of teacher patch features, and loss curves."""

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from geopera.models.vit import encode_visible
from geopera.transforms.normalise import scale_unit
from geopera.viz.previews import to_rgb


@torch.no_grad()
def feature_pca(task: Any, images: Tensor, sources: Tensor) -> tuple[Tensor, np.ndarray]:
    """Teacher patch features of centre crops, projected on their first 3 principal components.

    Args:
        task: A :class:`~geopera.pretrain.task.PerATask`.
        images: (N, C, H, W) raw patches.
        sources: (N,) source indices.

    Returns:
        The centre crops (N, C, S, S) in [0, 1], and (N, h, w, 3) PCA colours in [0, 1].
    """
    size = task.config.views.global_size
    unit = scale_unit(images.to(task.p2.device), task.p2[sources.long()], task.p98[sources.long()])
    top, left = (unit.shape[-2] - size) // 2, (unit.shape[-1] - size) // 2
    crops = unit[..., top : top + size, left : left + size]  # (N, C, S, S)
    x = (crops - task.views.mean) / task.views.std
    backbone = task.model.teacher_backbone
    grid = size // task.model.token_size
    every = torch.arange(grid * grid, device=x.device).expand(x.shape[0], -1)
    tokens = encode_visible(backbone, x, every)[:, 1:]  # (N, 1 + L, D) -> (N, L, D)
    flat = tokens.reshape(-1, tokens.shape[-1]).float()  # (N*L, D)
    flat = flat - flat.mean(dim=0)
    _, _, v = torch.linalg.svd(flat, full_matrices=False)
    proj = flat @ v[:3].T  # (N*L, 3)
    lo, hi = proj.min(dim=0).values, proj.max(dim=0).values
    colours = ((proj - lo) / torch.clamp(hi - lo, min=1e-6)).reshape(x.shape[0], grid, grid, 3)
    return crops.cpu(), colours.cpu().numpy()


def plot_feature_pca(
    task: Any, images: Tensor, sources: Tensor, path: Path, rgb: Sequence[int] | None
) -> Path:
    """Save the patches beside the PCA-RGB maps of their teacher features.

    Args:
        task: The pretraining task.
        images: (N, C, H, W) raw patches.
        sources: (N,) source indices.
        path: Output PNG.
        rgb: Bands shown as RGB.

    Returns:
        The path written.
    """
    crops, colours = feature_pca(task, images, sources)
    n = crops.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.4), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(to_rgb(crops[i], rgb))
        axes[1, i].imshow(colours[i], interpolation="nearest")
        axes[0, i].axis("off")
        axes[1, i].axis("off")
    axes[0, 0].set_title("patch (centre crop)", fontsize=9, loc="left")
    axes[1, 0].set_title("teacher features, PCA -> RGB", fontsize=9, loc="left")
    fig.suptitle(f"step {task.global_step}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_loss_curves(metrics_csv: Path, path: Path) -> Path | None:
    """Plot the loss and its parts from metrics.csv.

    Args:
        metrics_csv: The run's metrics file.
        path: Output PNG.

    Returns:
        The path written, or None when there are no rows.
    """
    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    steps = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for key in ("loss", "dino_global", "dino_local"):
        axes[0].plot(steps, [float(r[key]) for r in rows], label=key)
    for key, scale in (("koleo", 0.1), ("pixel", 0.01)):
        axes[1].plot(steps, [float(r[key]) * scale for r in rows], label=f"{key} x {scale}")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_title("total and DINO terms", fontsize=10)
    axes[1].set_title("weighted KoLeo and pixel terms", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
