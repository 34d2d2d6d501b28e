"""A frozen backbone that turns raw raster chips into a grid of patch-token embeddings.

The backbone comes from ``--weights`` (every kind fine-tuning accepts) and is fitted to the
raster's bands with the band rule of :mod:`geopera.models.loading`. Embedding needs the bands
the weights were trained on: an adapted patch embedding (a different band count) is refused.

Inputs are normalised as in fine-tuning: per-band 2nd/98th percentiles scale raw values to
[0, 1], then the scaled bands are standardised; both statistics come from the raster itself
(valid pixels; rasters over 1024 px are read through a grid of 16 x 16 windows of 64 px).
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from geopera.core.errors import BandSelectionError, note
from geopera.core.identity import BandIdentity
from geopera.core.normalisation import BandStats
from geopera.models.bandplan import plan_for, raster_bands
from geopera.models.loading import (
    BackboneSource,
    build_frozen_vit,
    resolve_weights,
)
from geopera.transforms.normalise import scale_unit

#: The architecture of ``--weights`` when none is given (random initialisation).
DEFAULT_MODEL = "vit_small_patch16_224"
#: Rasters up to this size are read whole for the normalisation statistics; larger ones through
#: a STATS_GRID x STATS_GRID grid of STATS_WINDOW px windows.
STATS_SIDE = 1024
STATS_GRID = 16
STATS_WINDOW = 64
#: Valid pixels (at most) that the statistics are computed from.
STATS_PIXELS = 100_000


def raster_normalisation(path: str, bands: list[int], nodata: float | None = None) -> BandStats:
    """Statistics of the selected bands, from the whole raster or a grid of windows on it.

    Args:
        path: The raster.
        bands: 1-based band indices.
        nodata: Nodata value for a file that sets none (the file's own comes first).

    Returns:
        The statistics.

    Raises:
        ValueError: If the raster has no valid pixel.
    """
    with rasterio.open(path) as ds:
        nodata = ds.nodata if ds.nodata is not None else nodata
        if max(ds.width, ds.height) <= STATS_SIDE:
            data = ds.read(bands).astype(np.float64)  # (C, H, W)
        else:  # windows on an even grid: a bounded cost on rasters of any size
            size = min(STATS_WINDOW, ds.width, ds.height)
            rows = np.linspace(0, ds.height - size, STATS_GRID).astype(int)
            cols = np.linspace(0, ds.width - size, STATS_GRID).astype(int)
            data = np.concatenate(
                [
                    ds.read(bands, window=Window(int(c), int(r), size, size)).astype(np.float64)
                    for r in rows
                    for c in cols
                ],
                axis=2,
            )  # (C, size, size * n)
        valid = np.isfinite(data).all(0)
        if nodata is not None:
            valid &= ~(data == nodata).all(0)
    pixels = data[:, valid]  # (C, n)
    if pixels.shape[1] == 0:
        raise ValueError(f"{path} has no valid pixel (all nodata); nothing to embed")
    if pixels.shape[1] > STATS_PIXELS:  # a seeded subset: percentiles of 1M values are slow
        keep = np.random.default_rng(0).choice(pixels.shape[1], STATS_PIXELS, replace=False)
        pixels = pixels[:, keep]
    return BandStats.of_pixels(pixels)


class Embedder:
    """Raw chips -> patch tokens, with a frozen ViT.

    Args:
        vit: The backbone (timm, ``dynamic_img_size=True``), in eval mode.
        norm: The input normalisation.
        device: Where the forward passes run.
    """

    def __init__(self, vit: VisionTransformer, norm: BandStats, device: torch.device) -> None:
        self.vit = vit.to(device).eval().requires_grad_(False)
        self.device = device
        self.token_size = int(vit.patch_embed.patch_size[0])
        self.dim = int(vit.embed_dim)
        self.norm = norm
        self._p2 = torch.tensor(norm.p2, dtype=torch.float32, device=device)
        self._p98 = torch.tensor(norm.p98, dtype=torch.float32, device=device)
        self._mean = torch.tensor(norm.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._std = torch.tensor(norm.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    @torch.inference_mode()
    def tokens(self, raw: Tensor) -> Tensor:
        """Patch tokens of raw chips.

        Args:
            raw: (B, C, S, S) raw pixel values, S a multiple of the token size.

        Returns:
            (B, D, S / p, S / p) float32 on the CPU.
        """
        x = raw.to(self.device, torch.float32)
        x = (scale_unit(x, self._p2, self._p98) - self._mean) / self._std  # (B, C, S, S)
        out = self.vit.forward_features(x)  # (B, prefix + N, D)
        grid = x.shape[-1] // self.token_size
        patches = out[:, self.vit.num_prefix_tokens :]  # (B, N, D)
        b, n, d = patches.shape
        if n != grid * grid:  # pragma: no cover - timm contract
            raise RuntimeError(f"expected {grid * grid} patch tokens, got {n}")
        # (B, N, D) -> (B, h, w, D) -> (B, D, h, w)
        return patches.reshape(b, grid, grid, d).permute(0, 3, 1, 2).float().cpu()


@dataclass
class EmbedderInfo:
    """What the embedder is, for the outputs' metadata.

    Attributes:
        weights: Where the weights came from.
        model: timm architecture.
        bands: 1-based band indices read from the raster.
        band_names: Their names.
        band_rule: How they were matched to the backbone's inputs (see
            :mod:`geopera.models.bandplan`).
        ssl_method: Pretraining method, when known.
        channels: Per model input, the backbone input it starts from (None: all, in order).
        band_identities: What each model input measures (None where unknown).
        notes: What the user should know about the plan (told once the embedder is built).
    """

    weights: str
    model: str
    bands: list[int]
    band_names: list[str]
    band_rule: str
    ssl_method: str | None
    channels: list[int] | None = None
    band_identities: list[BandIdentity | None] | None = None
    notes: list[str] = field(default_factory=list)


def plan_raster(
    source: BackboneSource, path: str, mapping: dict[str, str] | None = None
) -> EmbedderInfo:
    """The bands of one raster that the backbone reads (the band rule, no adaptation).

    Args:
        source: The resolved ``--weights``.
        path: The raster (its band names and identities decide the bands read).
        mapping: ``--bands`` pairs (backbone band or common name -> raster band), or None.

    Returns:
        The description of the embedder for this raster.

    Raises:
        BandSelectionError: If the raster lacks the bands the weights were trained on.
    """
    data = raster_bands(path)
    plan = plan_for(source, data, mapping, tell=False)
    if plan.rule == "adapted":
        needed = source.bands or f"{source.in_chans} bands"
        raise BandSelectionError(
            f"{path} has bands {data.names} of unknown kind; the weights ({source.origin}) were "
            f"trained on {needed}: name the raster's bands in its band descriptions, or map "
            "them with --bands SLOT=BAND"
        )
    return EmbedderInfo(
        weights=source.origin,
        model=source.model,
        bands=[i + 1 for i in plan.indices],
        band_names=plan.names,
        band_rule=plan.rule,
        ssl_method=source.ssl_method,
        channels=plan.channels,
        band_identities=plan.identities if any(plan.identities) else None,
        notes=plan.notes,
    )


def load_embedder(
    weights: str | None,
    path: str,
    chip_size: int,
    device: torch.device,
    nodata: float | None = None,
) -> tuple[Embedder, EmbedderInfo]:
    """The embedder of ``--weights`` for one raster (see :func:`plan_raster`).

    Args:
        weights: Anything ``--weights`` accepts (None: a random ``vit_small_patch16_224``).
        path: The raster.
        chip_size: Chip size in pixels (a multiple of the token size).
        device: Where to run.
        nodata: Nodata value for a file that sets none (the file's own comes first).

    Returns:
        The embedder and its description.
    """
    source = resolve_weights(weights, DEFAULT_MODEL)
    info = plan_raster(source, path)
    vit = build_frozen_vit(source, len(info.bands), chip_size, info.channels)
    for text in info.notes:
        note(text)
    return Embedder(vit, raster_normalisation(path, info.bands, nodata), device), info


def token_grid(height: int, width: int, token_size: int) -> tuple[int, int]:
    """Rows and columns of whole tokens in a raster (a trailing partial token is dropped)."""
    return height // token_size, width // token_size


def describe(info: EmbedderInfo, norm: BandStats) -> dict[str, Any]:
    """Plain metadata of an embedder."""
    identities = [i.to_dict() if i else None for i in info.band_identities or []]
    fields = {k: v for k, v in info.__dict__.items() if k != "notes"}
    return {**fields, "band_identities": identities or None, "normalisation": norm.__dict__}
