"""Perfectly aligned multi-crop views, made on the device with Kornia.

For each crop pair, one ``RandomResizedCrop`` and one set of horizontal/vertical flips (Kornia
augmentation modules) cut the same ground from every image; the student and the teacher views of
the pair are that same crop with different colour changes. The two views therefore cover exactly
the same pixels and differ only in colour.

Inputs are images scaled to [0, 1] per band (geopera uses each source's 2nd/98th percentiles).
Colour changes use Kornia's functional ops: brightness and contrast act on every band, saturation,
hue and grayscale only on a declared RGB triplet (skipped when there is none). After the colour
changes each view is standardised with per-band mean and std.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import kornia.augmentation as K
import kornia.enhance as E
import torch
from kornia.color import rgb_to_grayscale
from torch import Tensor, nn


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
        student_jitter_p: Probability of colour jitter on the student view.
        teacher_jitter_p: Probability of colour jitter on the teacher view.
        grayscale_p: Probability of grayscale on the student view (RGB only).
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


def _on_rows(x: Tensor, selected: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """Apply ``fn`` to the selected rows of ``x`` only (out of place).

    Args:
        x: (N, ...) batch.
        selected: (N,) boolean.
        fn: Maps (n, ...) rows to (n, ...).

    Returns:
        (N, ...) with the selected rows replaced.
    """
    rows = selected.nonzero().squeeze(1)
    if rows.numel() == 0:
        return x
    return x.index_copy(0, rows, fn(x.index_select(0, rows)))


def _grayscale(rgb: Tensor) -> Tensor:
    """(n, 3, H, W) RGB -> the same shape, every channel the luminance."""
    return rgb_to_grayscale(rgb).expand_as(rgb)


class ColourJitter(nn.Module):
    """Per-sample colour jitter in random order, for any number of bands.

    Args:
        brightness: Multiplicative brightness strength (every band).
        contrast: Contrast strength, blending with the image mean (every band).
        saturation: Saturation strength (RGB triplet only).
        hue: Hue shift strength in turns (RGB triplet only).
        p: Probability of jittering a sample.
        grayscale_p: Probability of replacing the RGB triplet by its grayscale.
        rgb: Indices of the R, G, B bands, or None.
    """

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

    def _apply_rgb(self, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        if self.rgb is None:
            return x
        out = x.clone()
        out[:, self.rgb] = fn(x[:, self.rgb])
        return out

    def _jitter(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Brightness, contrast, saturation and hue in random order on every row of ``x``."""
        n = x.shape[0]
        jittered = x
        order = torch.randperm(4, generator=generator, device=x.device).tolist()
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

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Jitter a batch.

        Args:
            x: (N, C, H, W) images in [0, 1].
            generator: Random generator on ``x``'s device.

        Returns:
            (N, C, H, W) images in [0, 1].
        """
        apply = torch.rand(x.shape[0], device=x.device, generator=generator) < self.p
        out = _on_rows(x, apply, lambda rows: self._jitter(rows, generator))
        if self.grayscale_p > 0 and self.rgb is not None:
            gray = torch.rand(x.shape[0], device=x.device, generator=generator) < self.grayscale_p
            out = _on_rows(out, gray, partial(self._apply_rgb, fn=_grayscale))
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
        self.global_geometry = K.AugmentationSequential(
            K.RandomResizedCrop(
                (c.global_size, c.global_size), scale=c.global_scale, ratio=c.ratio
            ),
            K.RandomHorizontalFlip(p=0.5),
            K.RandomVerticalFlip(p=0.5),
        )
        self.local_geometry = K.AugmentationSequential(
            K.RandomResizedCrop((c.local_size, c.local_size), scale=c.local_scale, ratio=c.ratio),
            K.RandomHorizontalFlip(p=0.5),
            K.RandomVerticalFlip(p=0.5),
        )
        jitter = {"brightness": c.brightness, "contrast": c.contrast, "saturation": c.saturation}
        self.student_colour = ColourJitter(
            **jitter, hue=c.hue, p=c.student_jitter_p, grayscale_p=c.grayscale_p, rgb=rgb
        )
        self.teacher_colour = ColourJitter(**jitter, hue=c.hue, p=c.teacher_jitter_p, rgb=rgb)

    def _standardise(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def _pairs(
        self, x: Tensor, geometry: nn.Module, count: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        if count == 0:
            size = self.config.local_size
            empty = x.new_zeros(0, x.shape[1], size, size)
            return empty, empty
        crops = torch.cat(
            [geometry(x) for _ in range(count)]
        )  # count x (B, C, S, S) -> (count*B, ...)
        student = self._standardise(self.student_colour(crops, generator))
        teacher = self._standardise(self.teacher_colour(crops, generator))
        return student, teacher

    def forward(self, x: Tensor, seed: int | None = None) -> CropPairs:
        """Make the crop pairs of a batch.

        Args:
            x: (B, C, H, W) images scaled to [0, 1] per band.
            seed: Seed for reproducible views (Kornia draws crop parameters from torch's
                global generator, which is forked so the caller's stream is untouched).

        Returns:
            The student and teacher views, global and local, crop-major.
        """
        if x.ndim != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"expected (B, {self.mean.shape[1]}, H, W) images, got {tuple(x.shape)}"
            )
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            generator = None
            if seed is not None:
                torch.manual_seed(seed)
                generator = torch.Generator(device=x.device).manual_seed(seed)
            sg, tg = self._pairs(x, self.global_geometry, self.config.n_global, generator)
            sl, tl = self._pairs(x, self.local_geometry, self.config.n_local, generator)
        return CropPairs(sg, tg, sl, tl)
