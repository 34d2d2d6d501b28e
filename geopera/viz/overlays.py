"""Overlay figures of fine-tuned predictions on validation chips."""

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle
from torch import Tensor

from geopera.core.identity import BandIdentity, rgb_indices
from geopera.viz.previews import to_rgb


def display_bands(identities: Sequence[BandIdentity | None] | None, count: int) -> list[int]:
    """Band indices shown as R, G, B.

    The bands identified as red, green and blue, else the first three bands, else band 0 as
    gray; never by band name (``B4`` is near infrared on Landsat 5 and 7).

    Args:
        identities: What each band measures (None where unknown, or None for all).
        count: How many bands the image has.
    """
    found = rgb_indices(identities) if identities else None
    return found or ([0, 1, 2] if count >= 3 else [0, 0, 0])


def _class_image(mask: np.ndarray, k: int) -> np.ndarray:
    colours = plt.get_cmap("tab10" if k <= 10 else "tab20")(np.arange(k) % 20)[:, :3]
    out = np.full((*mask.shape, 3), 0.5)  # unlabelled: gray
    valid = mask >= 0
    out[valid] = colours[mask[valid]]
    return out


def plot_segmentation(
    image: Tensor,
    truth: Tensor,
    prediction: Tensor,
    class_names: Sequence[str],
    path: Path,
    rgb: Sequence[int] | None = None,
    after: Tensor | None = None,
) -> None:
    """Image (and second date), truth and prediction side by side, with a class legend.

    Args:
        image: (C, H, W) raw chip (before, for change).
        truth: (H, W) class indices, -1 unlabelled.
        prediction: (H, W) class indices.
        class_names: One name per class index.
        path: Output PNG.
        rgb: Bands shown as R, G, B.
        after: (C, H, W) second date (change detection).
    """
    k = len(class_names)
    panels: list[tuple[str, np.ndarray]] = [
        ("image" if after is None else "before", to_rgb(image, rgb))
    ]
    if after is not None:
        panels.append(("after", to_rgb(after, rgb)))
    panels += [
        ("truth (gray: unlabelled)", _class_image(truth.cpu().numpy(), k)),
        ("prediction", _class_image(prediction.cpu().numpy(), k)),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for ax, (title, array) in zip(axes, panels, strict=True):
        ax.imshow(array, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    colours = plt.get_cmap("tab10" if k <= 10 else "tab20")(np.arange(k) % 20)
    handles = [Rectangle((0, 0), 1, 1, color=colours[i]) for i in range(k)]
    fig.legend(handles, list(class_names), loc="lower center", ncol=min(k, 6), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_values(
    image: Tensor,
    target: Tensor,
    prediction: Tensor,
    name: str,
    path: Path,
    rgb: Sequence[int] | None = None,
) -> None:
    """Image, target and predicted values side by side, on the target's colour scale.

    Args:
        image: (C, H, W) raw chip.
        target: (H, W) values, NaN where unknown.
        prediction: (H, W) values.
        name: What the values are (the colour bar's label).
        path: Output PNG.
        rgb: Bands shown as R, G, B.
    """
    truth = target.cpu().numpy()
    known = truth[np.isfinite(truth)]
    low, high = (float(known.min()), float(known.max())) if len(known) else (None, None)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    axes[0].imshow(to_rgb(image, rgb), interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    panels = (("target (blank: unknown)", truth), ("prediction", prediction.cpu().numpy()))
    for ax, (title, values) in zip(axes[1:], panels, strict=True):
        shown = ax.imshow(values, cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
        ax.set_title(title, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(shown, ax=list(axes), shrink=0.8, label=name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_detection(
    image: Tensor,
    truth: Tensor,
    boxes: Tensor,
    scores: Tensor,
    path: Path,
    rgb: Sequence[int] | None = None,
    min_score: float = 0.5,
) -> None:
    """Truth boxes (green) and predicted boxes above ``min_score`` (red) on a chip.

    Args:
        image: (C, H, W) raw chip.
        truth: (N, 4) xyxy truth boxes.
        boxes: (M, 4) xyxy predicted boxes.
        scores: (M,) their scores.
        path: Output PNG.
        rgb: Bands shown as R, G, B.
        min_score: Score threshold for drawing.
    """
    fig, ax = plt.subplots(figsize=(4.5, 4.8))
    ax.imshow(to_rgb(image, rgb))
    for colour, xyxy in (("lime", truth), ("red", boxes[scores >= min_score])):
        for x0, y0, x1, y1 in xyxy.tolist():
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=1.2))
    ax.set_title(f"truth (green) and predictions >= {min_score} (red)", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
