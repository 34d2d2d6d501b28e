"""Per-source band scaling on the device.

Raw values are scaled to [0, 1] per band with the source's 2nd/98th percentiles (robust for any
sensor and dtype) and clamped; the views then standardise with the mean and std of the scaled
data (:class:`~geopera.core.normalisation.BandStats`, computed in one place for every stage).
"""

import torch
from torch import Tensor


def scale_unit(image: Tensor, p2: Tensor, p98: Tensor) -> Tensor:
    """Scale raw values to [0, 1] per band with the 2nd/98th percentiles (clamped).

    NaN pixels (quality control lets a few through) become 0, the low end, and +/-Inf the ends:
    one NaN pixel would otherwise make the whole step's loss NaN.

    Args:
        image: (B, C, H, W) raw values, in any dtype (stored integers are converted to float32
            here, on the image's device).
        p2: (C,) shared, or (B, C) per-sample lower percentiles.
        p98: (C,) or (B, C) upper percentiles.

    Returns:
        (B, C, H, W) in [0, 1].
    """
    lo = (
        p2[..., None, None] if p2.ndim == 2 else p2.view(1, -1, 1, 1)
    )  # -> broadcast to (B, C, 1, 1)
    hi = p98[..., None, None] if p98.ndim == 2 else p98.view(1, -1, 1, 1)
    if not image.is_floating_point():
        image = image.float()
    scaled = ((image - lo) / torch.clamp(hi - lo, min=1e-6)).clamp(0.0, 1.0)
    return torch.nan_to_num(scaled, nan=0.0)
