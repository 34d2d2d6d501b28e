"""Pixel loss at the mask-token positions: the student predicts the pixels it did not see."""

from torch import Tensor


def patchify(images: Tensor, patch: int) -> Tensor:
    """Cut images into flattened patches, channel-last within each patch.

    Args:
        images: (N, C, H, W), H and W multiples of ``patch``.
        patch: Patch size p.

    Returns:
        (N, L, p * p * C) with L = (H / p) * (W / p).
    """
    n, c, h, w = images.shape
    rows, cols = h // patch, w // patch
    x = images.reshape(n, c, rows, patch, cols, patch)  # (N, C, h, p, w, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # -> (N, h, w, p, p, C)
    return x.reshape(n, rows * cols, patch * patch * c)  # -> (N, h*w, p*p*C)


def pixel_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Squared error summed over the pixel values of a patch, averaged over patches and rows.

    Args:
        prediction: (N, n_m, p * p * C) pixel-head outputs at the mask-token positions.
        target: (N, n_m, p * p * C) normalised student-view pixels there.

    Returns:
        A scalar.
    """
    return (prediction - target).pow(2).sum(dim=-1).mean()
