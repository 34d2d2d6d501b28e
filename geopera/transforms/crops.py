"""Random resized crops for a whole batch on the device: boxes drawn at once, one sampling grid."""

import math

import torch
from torch import Tensor


def random_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    device: torch.device,
    generator: torch.Generator | None = None,
    tries: int = 10,
) -> Tensor:
    """Random resized-crop boxes, drawn on the device for a whole batch at once.

    The rule of torchvision's ``RandomResizedCrop``: up to ``tries`` candidates of a random area
    share and log-uniform aspect ratio; the first that fits the image is used; when none fits,
    the whole image cropped centrally to the nearest allowed ratio. Sides and offsets are whole
    pixels.

    Args:
        n: Number of boxes.
        height: Image height H.
        width: Image width W.
        scale: Area share range.
        ratio: Aspect ratio (width / height) range.
        device: Device of the boxes.
        generator: Random generator on ``device``.
        tries: Candidates per box.

    Returns:
        (n, 4) boxes ``x0, y0, w, h`` in pixels.
    """
    area = (
        height
        * width
        * torch.empty(n, tries, device=device).uniform_(scale[0], scale[1], generator=generator)
    )  # (n, tries)
    log_r = torch.empty(n, tries, device=device).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    w = torch.sqrt(area * torch.exp(log_r)).round()
    h = torch.sqrt(area / torch.exp(log_r)).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # (n, tries)
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)  # (n, 1), 0 when none fits
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]  # (n,)
    found = fits.any(dim=1)
    aspect = width / height
    fw = width if ratio[0] <= aspect <= ratio[1] else min(width, round(height * ratio[1]))
    fh = height if ratio[0] <= aspect <= ratio[1] else min(height, round(width / ratio[0]))
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    u = torch.rand(2, n, device=device, generator=generator)
    x0 = torch.floor(u[0] * (width - w + 1))
    y0 = torch.floor(u[1] * (height - h + 1))
    return torch.stack([x0, y0, w, h], dim=1)


def crop_grids(
    boxes: Tensor, flips: Tensor, height: int, width: int, size: int, count: int
) -> Tensor:
    """Sampling grids that cut ``count`` boxes per image and resize each to ``size``.

    Args:
        boxes: (count * B, 4) boxes ``x0, y0, w, h``, crop-major.
        flips: (count * B, 2) booleans: horizontal, vertical.
        height: Image height H.
        width: Image width W.
        size: Output side S.
        count: Crops per image.

    Returns:
        (B, count * S, S, 2) grids for ``grid_sample`` (``align_corners=False``): crop ``k`` of
        image ``b`` fills rows ``k * S ... (k + 1) * S`` of the output of image ``b``.
    """
    x0, y0, w, h = boxes.unbind(1)  # (count * B,) each
    sign = 1.0 - 2.0 * flips.to(boxes.dtype)  # (count * B, 2): -1 flips the axis
    centre_x = (x0 + w / 2) / width * 2 - 1  # normalised [-1, 1] centre
    centre_y = (y0 + h / 2) / height * 2 - 1
    unit = (torch.arange(size, device=boxes.device, dtype=boxes.dtype) + 0.5) / size * 2 - 1
    gx = centre_x[:, None] + sign[:, :1] * (w / width)[:, None] * unit  # (count * B, S)
    gy = centre_y[:, None] + sign[:, 1:] * (h / height)[:, None] * unit
    grid = torch.stack(
        [gx[:, None, :].expand(-1, size, -1), gy[:, :, None].expand(-1, -1, size)], dim=-1
    )  # (count * B, S, S, 2)
    b = grid.shape[0] // count
    grid = grid.view(count, b, size, size, 2).permute(1, 0, 2, 3, 4)  # -> (B, count, S, S, 2)
    return grid.reshape(b, count * size, size, 2)
