"""Preview figures: a patch's two aligned views and its three disjoint masks."""

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from torch import Tensor

from geopera.transforms.masking import MaskSets


def to_rgb(image: Tensor, rgb: Sequence[int] | None = None) -> np.ndarray:
    """A displayable (H, W, 3) array from a (C, H, W) image, stretched per band to 2-98 %.

    Args:
        image: (C, H, W) tensor (any scale).
        rgb: Band indices shown as R, G, B (default: the first three, or band 0 as gray).

    Returns:
        (H, W, 3) float array in [0, 1].
    """
    if rgb is None:
        rgb = [0, 1, 2] if image.shape[0] >= 3 else [0, 0, 0]
    x = image[list(rgb)].float().cpu().numpy()  # (3, H, W)
    lo = np.percentile(x, 2, axis=(1, 2), keepdims=True)
    hi = np.percentile(x, 98, axis=(1, 2), keepdims=True)
    x = np.clip((x - lo) / np.maximum(hi - lo, 1e-6), 0, 1)
    return np.transpose(x, (1, 2, 0))  # (3, H, W) -> (H, W, 3)


def mask_overlay(masks: MaskSets, row: int, grid: tuple[int, int]) -> np.ndarray:
    """An (h, w, 3) colour image of one crop's patch sets.

    Student patches are orange, mask-token patches blue, teacher patches green; patches seen by
    nobody are black.

    Args:
        masks: The crop batch's mask sets.
        row: Which crop row.
        grid: Patch rows and columns.

    Returns:
        (rows, cols, 3) float array.
    """
    colours = {
        "student": (0.95, 0.55, 0.1),
        "token": (0.2, 0.45, 0.9),
        "teacher": (0.2, 0.7, 0.3),
    }
    out = np.zeros((grid[0] * grid[1], 3))
    for name, colour in colours.items():
        selected = masks.boolean(name)[row].cpu().numpy()
        out[selected] = colour
    return out.reshape(grid[0], grid[1], 3)


def plot_views_and_masks(
    patch: Tensor,
    student_view: Tensor,
    teacher_view: Tensor,
    masks: MaskSets,
    token_size: int,
    path: str | Path,
    rgb: Sequence[int] | None = None,
    title: str = "",
) -> Path:
    """Save a figure: the patch, the student and teacher views, and the three masks.

    Args:
        patch: (C, H, W) the sampled patch.
        student_view: (C, S, S) one global crop, student view.
        teacher_view: (C, S, S) the same crop, teacher view.
        masks: Masks of the global crops; row 0 is drawn.
        token_size: ViT token (patch) size in pixels, for the grid.
        path: Output PNG path (folders are created).
        rgb: Band indices shown as R, G, B.
        title: Figure title.

    Returns:
        The path written.
    """
    grid = (student_view.shape[-2] // token_size, student_view.shape[-1] // token_size)
    overlay = mask_overlay(masks, 0, grid)
    up = np.kron(overlay, np.ones((token_size, token_size, 1)))  # (h, w, 3) -> (S, S, 3)
    student_rgb, teacher_rgb = to_rgb(student_view, rgb), to_rgb(teacher_view, rgb)
    seen_s = masks.boolean("student")[0].reshape(grid).cpu().numpy()
    seen_t = masks.boolean("teacher")[0].reshape(grid).cpu().numpy()
    block = np.ones((token_size, token_size))
    panels = [
        ("sampled patch", to_rgb(patch, rgb)),
        ("student view (one crop)", student_rgb),
        ("teacher view (same crop)", teacher_rgb),
        ("masks: student / token / teacher", up),
        ("what the student sees", student_rgb * np.kron(seen_s, block)[..., None]),
        ("what the teacher sees", teacher_rgb * np.kron(seen_t, block)[..., None]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.4))
    for ax, (name, image) in zip(axes, panels, strict=True):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
