"""Perfectly aligned multi-crop views, made on the device for a whole batch at once.

For each crop pair, one random resized crop (torchvision's box rule) and one set of
horizontal/vertical flips cut the same ground from every image; the student and the teacher views
of the pair are that same crop with different colour changes. The two views therefore cover
exactly the same pixels and differ only in colour.

Boxes, flips and colour factors are drawn on the device in batched form, the crops of all images
are cut and resized by one ``grid_sample`` call per crop size, and colour changes apply to a
fixed share of the rows chosen at random: no operator count grows with the batch, no device
value is read on the host, and shapes are the same at every step (what ``torch.compile`` and
CUDA graphs need).

Inputs are images scaled to [0, 1] per band (geopera uses each source's 2nd/98th percentiles).
Colour changes use Kornia's functional ops: brightness and contrast act on every band, saturation,
hue and grayscale only on a declared RGB triplet (skipped when there is none). After the colour
changes each view is standardised with per-band mean and std.
"""

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import kornia.enhance as E
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from torch import Tensor, nn

from geopera.transforms.crops import crop_grids, random_boxes


@dataclass(frozen=True)
class ViewsConfig:
    """Crop counts, sizes, scales and colour settings (defaults: the paper's recipe).

    Attributes:
        global_size: Global crop size in pixels.
        local_size: Local crop size in pixels.
        n_global: Global crop pairs per image.
        n_local: Local crop pairs per image.
        global_scale: Area fraction range of global crops.
        local_scale: Area fraction range of local crops.
        ratio: Aspect ratio range of crops.
        brightness: Brightness jitter strength.
        contrast: Contrast jitter strength.
        saturation: Saturation jitter strength (RGB only).
        hue: Hue jitter strength in turns (RGB only).
        student_jitter_p: Share of the student views colour-jittered (a fixed share of the
            crops, chosen at random per step: static shapes on the device).
        teacher_jitter_p: Share of the teacher views colour-jittered.
        grayscale_p: Share of the student views turned grey (RGB only).
    """

    global_size: int = 224
    local_size: int = 96
    n_global: int = 2
    n_local: int = 8
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    student_jitter_p: float = 0.8
    teacher_jitter_p: float = 0.1
    grayscale_p: float = 0.1


def _uniform(n: int, spread: float, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """(n,) factors uniform in [1 - spread, 1 + spread]."""
    u = torch.rand(n, device=like.device, dtype=like.dtype, generator=generator)
    return 1 - spread + 2 * spread * u


def _on_share(
    x: Tensor, share: float, fn: Callable[[Tensor], Tensor], generator: torch.Generator | None
) -> Tensor:
    """Apply ``fn`` to a random ``share`` of the rows of ``x`` (out of place).

    The number of rows is fixed, ``round(share * N)`` (at least one when ``share`` > 0), and the
    rows are a random permutation's first: the work and the shapes are the same at every step,
    and no device value is read on the host (a per-row coin would need either a data-dependent
    row count or the change computed on every row).

    Args:
        x: (N, ...) batch.
        share: Share of the rows changed, in [0, 1].
        fn: Maps (n, ...) rows to (n, ...).
        generator: Random generator on ``x``'s device.

    Returns:
        (N, ...) with the chosen rows replaced.
    """
    n = x.shape[0]
    count = min(n, max(1, round(share * n))) if share > 0 else 0
    if count == 0:
        return x
    if count == n:
        return fn(x)
    rows = torch.randperm(n, device=x.device, generator=generator)[:count]  # (count,)
    return x.index_copy(0, rows, fn(x.index_select(0, rows)))


def _grayscale(rgb: Tensor) -> Tensor:
    """(n, 3, H, W) RGB -> the same shape, every channel the luminance."""
    return rgb_to_grayscale(rgb).expand_as(rgb)


class ColourJitter(nn.Module):
    """Per-sample colour jitter in random order, for any number of bands.

    A random share ``p`` of the rows is jittered (``round(p * N)`` rows, chosen on the device),
    and a share ``grayscale_p`` turned grey: the work and the shapes are the same at every step
    and no device value is read on the host. The order of the four changes is drawn on the host
    (``order_rng``) once per batch.

    Args:
        brightness: Multiplicative brightness strength (every band).
        contrast: Contrast strength, blending with the image mean (every band).
        saturation: Saturation strength (RGB triplet only).
        hue: Hue shift strength in turns (RGB triplet only).
        p: Share of the samples jittered.
        grayscale_p: Share of the samples whose RGB triplet is replaced by its grayscale.
        rgb: Indices of the R, G, B bands, or None.
    """

    rgb_index: Tensor

    def __init__(
        self,
        brightness: float,
        contrast: float,
        saturation: float,
        hue: float,
        p: float,
        grayscale_p: float = 0.0,
        rgb: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if rgb is not None and len(rgb) != 3:
            raise ValueError(f"rgb must name exactly 3 band indices, got {list(rgb)}")
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.hue = hue
        self.p = p
        self.grayscale_p = grayscale_p
        self.rgb = list(rgb) if rgb is not None else None
        # a device buffer: indexing with a Python list would copy it to the device every call
        self.register_buffer("rgb_index", torch.tensor(self.rgb or [], dtype=torch.long), False)

    def _apply_rgb(self, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        if self.rgb is None:
            return x
        rgb = x.index_select(1, self.rgb_index)  # (N, C, H, W) -> (N, 3, H, W)
        return x.index_copy(1, self.rgb_index, fn(rgb))

    def _jitter(self, x: Tensor, generator: torch.Generator | None, order: list[int]) -> Tensor:
        """Brightness, contrast, saturation and hue in the given order on every row of ``x``."""
        n = x.shape[0]
        jittered = x
        for op in order:
            if op == 0 and self.brightness > 0:
                f = _uniform(n, self.brightness, x, generator)
                jittered = E.adjust_brightness_accumulative(jittered, f)
            elif op == 1 and self.contrast > 0:
                f = _uniform(n, self.contrast, x, generator)
                jittered = E.adjust_contrast_with_mean_subtraction(jittered, f)
            elif op == 2 and self.saturation > 0 and self.rgb is not None:
                f = _uniform(n, self.saturation, x, generator)
                jittered = self._apply_rgb(jittered, partial(E.adjust_saturation, factor=f))
            elif op == 3 and self.hue > 0 and self.rgb is not None:
                turns = (torch.rand(n, device=x.device, generator=generator) * 2 - 1) * self.hue
                radians = turns * 2 * math.pi
                jittered = self._apply_rgb(jittered, partial(E.adjust_hue, factor=radians))
        return jittered

    def forward(
        self,
        x: Tensor,
        generator: torch.Generator | None = None,
        order_rng: random.Random | None = None,
    ) -> Tensor:
        """Jitter a batch.

        Args:
            x: (N, C, H, W) images in [0, 1].
            generator: Random generator on ``x``'s device.
            order_rng: Host random generator for the order of the changes (default: Python's).

        Returns:
            (N, C, H, W) images in [0, 1].
        """
        order = (order_rng or random).sample(range(4), 4)
        out = _on_share(x, self.p, lambda rows: self._jitter(rows, generator, order), generator)
        if self.grayscale_p > 0 and self.rgb is not None:
            grey = partial(self._apply_rgb, fn=_grayscale)
            out = _on_share(out, self.grayscale_p, grey, generator)
        return out.clamp(0.0, 1.0)


@dataclass
class CropPairs:
    """The views of one batch, crop-major (rows ``k * B + b`` are crop ``k`` of image ``b``).

    Attributes:
        student_global: (n_global * B, C, Sg, Sg).
        teacher_global: (n_global * B, C, Sg, Sg).
        student_local: (n_local * B, C, Sl, Sl).
        teacher_local: (n_local * B, C, Sl, Sl).
    """

    student_global: Tensor
    teacher_global: Tensor
    student_local: Tensor
    teacher_local: Tensor


class AlignedViews(nn.Module):
    """Make the multi-crop pairs of PerA on the device.

    Args:
        config: Crop and colour settings.
        mean: (C,) per-band mean of the [0, 1]-scaled data, for standardisation.
        std: (C,) per-band standard deviation of the [0, 1]-scaled data.
        rgb: Indices of the R, G, B bands, or None to skip saturation, hue and grayscale.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        config: ViewsConfig,
        mean: Sequence[float] | Tensor,
        std: Sequence[float] | Tensor,
        rgb: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        c = config
        jitter = {"brightness": c.brightness, "contrast": c.contrast, "saturation": c.saturation}
        self.student_colour = ColourJitter(
            **jitter, hue=c.hue, p=c.student_jitter_p, grayscale_p=c.grayscale_p, rgb=rgb
        )
        self.teacher_colour = ColourJitter(**jitter, hue=c.hue, p=c.teacher_jitter_p, rgb=rgb)

    def _standardise(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def _crops(
        self,
        x: Tensor,
        size: int,
        scale: tuple[float, float],
        count: int,
        generator: torch.Generator | None,
    ) -> Tensor:
        """``count`` random resized crops of every image, flipped at random, crop-major.

        Args:
            x: (B, C, H, W) images.
            size: Crop side S.
            scale: Area share range of the crops.
            count: Crops per image.
            generator: Random generator on ``x``'s device.

        Returns:
            (count * B, C, S, S).
        """
        b, c, height, width = x.shape
        boxes = random_boxes(
            count * b, height, width, scale, self.config.ratio, x.device, generator
        )
        flips = torch.rand(count * b, 2, device=x.device, generator=generator) < 0.5
        grid = crop_grids(boxes, flips, height, width, size, count)  # (B, count * S, S, 2)
        crops = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        crops = crops.view(b, c, count, size, size).permute(2, 0, 1, 3, 4)  # (count, B, C, S, S)
        return crops.reshape(count * b, c, size, size)

    def _pairs(
        self,
        x: Tensor,
        size: int,
        scale: tuple[float, float],
        count: int,
        generator: torch.Generator | None,
        order_rng: random.Random,
    ) -> tuple[Tensor, Tensor]:
        if count == 0:
            empty = x.new_zeros(0, x.shape[1], size, size)
            return empty, empty
        crops = self._crops(x, size, scale, count, generator)
        student = self._standardise(self.student_colour(crops, generator, order_rng))
        teacher = self._standardise(self.teacher_colour(crops, generator, order_rng))
        return student, teacher

    def forward(self, x: Tensor, seed: int | None = None) -> CropPairs:
        """Make the crop pairs of a batch.

        Crop boxes, flips and colour factors are drawn on the device for the whole batch; the
        number of operators does not depend on the batch size and no device value is read on
        the host.

        Args:
            x: (B, C, H, W) images scaled to [0, 1] per band.
            seed: Seed for reproducible views, drawn from generators of their own (torch's
                global generators are untouched); without it, from torch's global generators.

        Returns:
            The student and teacher views, global and local, crop-major.
        """
        if x.ndim != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"expected (B, {self.mean.shape[1]}, H, W) images, got {tuple(x.shape)}"
            )
        generator = None
        if seed is None:  # a host draw from torch's CPU generator: no device value is read
            order_rng = random.Random(int(torch.randint(2**62, (1,))))
        else:
            generator = torch.Generator(device=x.device).manual_seed(seed)
            order_rng = random.Random(seed)
        c = self.config
        sg, tg = self._pairs(x, c.global_size, c.global_scale, c.n_global, generator, order_rng)
        sl, tl = self._pairs(x, c.local_size, c.local_scale, c.n_local, generator, order_rng)
        return CropPairs(sg, tg, sl, tl)
