"""Frozen features of one backbone on a labelled set, cached per (backbone, data).

The backbone comes from ``--weights`` (every kind fine-tuning accepts) and is fitted to the
data's bands by the band rule of :mod:`geopera.models.loading`; pretrained weights whose bands
the data lacks are refused (an adapted patch embedding would judge a different model). Inputs
are normalised as in fine-tuning: per-band 2nd/98th percentiles of the data scale raw values to
[0, 1], then the scaled bands are standardised with the data's mean and std.

The cache key hashes the weights' tensors, the band plan, the input size and the data's pixels
and labels, so a second protocol on the same backbone and data costs no forward pass, and a
changed file never reuses stale features. Cache files hold tensors only and are read with
``weights_only=True``.
"""

import hashlib
import json
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from geopera.core.cache import cache_dir
from geopera.core.errors import BandSelectionError
from geopera.core.normalisation import BandStats
from geopera.core.outputs import save_torch_atomic
from geopera.core.ranks import (
    RankError,
    fabric_for,
    launch,
    launch_rank,
    launched_outside,
    share,
    together,
)
from geopera.data.labelled.sets import LabelledSet
from geopera.models.bandplan import BandPlan, Bands, plan_for, tell_notes
from geopera.models.loading import BackboneSource, build_vit, load_into, resolve_weights
from geopera.transforms.normalise import scale_unit

#: Architecture of a timm-name or missing ``--weights`` (random initialisation).
DEFAULT_MODEL = "vit_small_patch16_224"
#: Seed of randomly initialised baselines (the same random backbone on every call).
RANDOM_INIT_SEED = 0
#: Bumped when the features' definition changes (invalidates caches).
#: 2: images standardised with :class:`~geopera.core.normalisation.BandStats`.
FEATURE_VERSION = 2


@dataclass
class Features:
    """A backbone's frozen features of every image of a labelled set.

    Attributes:
        pooled: (N, D) class tokens after the final norm.
        tokens: (N, D, h, w) patch tokens (only for sets with per-pixel masks), else None.
        band_rule: How the data's bands fed the backbone (``by-name``, ``as-is``).
        band_names: The bands used, in backbone order.
        model: timm architecture.
        origin: Where the weights came from.
        cached: Whether they were read from the cache.
    """

    pooled: Tensor
    tokens: Tensor | None
    band_rule: str
    band_names: list[str]
    model: str
    origin: str
    cached: bool = False


def default_cache() -> Path:
    """``$GEOPERA_CACHE/features``, else ``$XDG_CACHE_HOME/geopera/features`` (``~/.cache``)."""
    return cache_dir("features")


def _weights_hash(source: BackboneSource) -> str:
    h = hashlib.sha256(json.dumps([source.model, source.model_kwargs], sort_keys=True).encode())
    if source.state_dict is None:
        h.update(f"random-init-seed-{RANDOM_INIT_SEED}".encode())
    else:
        for key in sorted(source.state_dict):
            h.update(key.encode())
            tensor = source.state_dict[key].detach().cpu().contiguous()
            h.update(tensor.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _statistics(images: Tensor) -> BandStats:
    """The band statistics of (N, C, S, S) images (a strided subset of 200k pixels per band)."""
    c = images.shape[1]
    flat = images.transpose(0, 1).reshape(c, -1)  # (N, C, S, S) -> (C, N*S*S)
    return BandStats.of_pixels(flat[:, :: max(1, flat.shape[1] // 200_000)].double().numpy())


def extract(
    weights: str,
    data: LabelledSet,
    cache: Path | None = None,
    device: torch.device | None = None,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    mapping: dict[str, str] | None = None,
    devices: int = 1,
    num_nodes: int = 1,
) -> Features:
    """The frozen features of ``weights`` on every image of ``data``.

    Args:
        weights: Anything ``--weights`` accepts.
        data: The labelled set.
        cache: Cache folder (None: no cache).
        device: Where the forward passes run (default CPU).
        batch_size: Images per forward pass.
        progress: Called with (images done, total).
        mapping: ``--bands`` pairs (backbone band or common name -> data band), or None.
        devices: Processes per node sharing the forward passes, batch by batch.
        num_nodes: Nodes (started by torchrun or srun; see :mod:`geopera.core.ranks`).

    Returns:
        The features (CPU, float32; the same for any number of processes).

    Raises:
        BandSelectionError: If pretrained weights need bands the data lacks.
        ValueError: If the images are smaller than one token.
    """
    source = resolve_weights(weights, DEFAULT_MODEL)
    plan = _plan(weights, source, data, mapping)
    vit, size = _random_vit(source, len(plan.indices), data)
    dense = data.masks is not None
    meta: dict[str, Any] = {
        "band_rule": plan.rule,
        "band_names": plan.names,
        "model": source.model,
        "origin": source.origin,
    }
    file = None
    if cache is not None:
        parts = [FEATURE_VERSION, _weights_hash(source), plan.indices, plan.channels, size, dense]
        key = hashlib.sha256(json.dumps([*parts, data.fingerprint()]).encode()).hexdigest()
        file = cache / f"{key[:32]}.pt"
    several = devices * num_nodes > 1 or launched_outside()
    # ranks must agree on extracting: under torchrun/srun each node may see another cache
    if file is not None and file.is_file() and not launched_outside():
        stored = torch.load(file, map_location="cpu", weights_only=True)
        return Features(stored["pooled"], stored.get("tokens"), cached=True, **meta)
    load_into(vit, source, len(plan.indices), plan.channels)
    vit = vit.to(device or torch.device("cpu")).eval().requires_grad_(False)
    top = (data.images.shape[-1] - size) // 2
    images = data.images[:, plan.indices, top : top + size, top : top + size]  # (N, C', s, s)
    stats = _statistics(images)
    if several:
        sizes = (batch_size, devices, num_nodes)
        pooled, tokens = _forward_ranks(vit, images, stats, sizes, dense)
    else:
        pooled, tokens = _forward(vit, images, stats, batch_size, dense, progress)
    features = Features(pooled, tokens, **meta)
    if file is not None and launch_rank() == 0:
        file.parent.mkdir(parents=True, exist_ok=True)
        stored = {"pooled": features.pooled}
        if features.tokens is not None:
            stored["tokens"] = features.tokens
        save_torch_atomic(stored, file)
    return features


def _plan(
    weights: str, source: BackboneSource, data: LabelledSet, mapping: dict[str, str] | None
) -> BandPlan:
    """The bands the backbone reads; evaluation never adapts weights to bands of unknown kind."""
    plan = plan_for(source, Bands(data.band_names, data.band_identities()), mapping, tell=False)
    if plan.rule == "adapted":
        needed = source.bands or f"{source.in_chans} bands"
        raise BandSelectionError(
            f"{weights}: the weights were trained on {needed}; {data.origin} has bands "
            f"{data.band_names} of unknown kind: give images with those bands (named in their "
            "band descriptions), or map them with --bands SLOT=BAND"
        )
    tell_notes(plan)
    return plan


def _random_vit(
    source: BackboneSource, in_chans: int, data: LabelledSet
) -> tuple[VisionTransformer, int]:
    """The seeded ViT at the size the features are computed at (a whole number of tokens).

    Random baselines are one fixed random backbone: the same seed on every call.

    Returns:
        The ViT (weights not loaded yet) and the image size.
    """
    side = data.images.shape[-1]
    torch.manual_seed(RANDOM_INIT_SEED)
    vit = build_vit(source.model, in_chans, side, source.model_kwargs)
    token = int(vit.patch_embed.patch_size[0])
    size = side - side % token
    if size < token:
        raise ValueError(
            f"{data.origin}: images of {side} px are smaller than one "
            f"{token} px token of {source.model}"
        )
    if size != side:  # the position grid of the cropped size
        torch.manual_seed(RANDOM_INIT_SEED)
        vit = build_vit(source.model, in_chans, size, source.model_kwargs)
    return vit, size


def _forward(
    vit: VisionTransformer,
    images: Tensor,
    stats: BandStats,
    batch_size: int,
    dense: bool,
    progress: Callable[[int, int], None] | None,
) -> tuple[Tensor, Tensor | None]:
    """Class tokens (N, D) and, for dense probes, patch tokens (N, D, h, w) of the images."""
    device = next(vit.parameters()).device
    p2, p98, mean, std = (
        torch.tensor(v, dtype=torch.float32, device=device)
        for v in (stats.p2, stats.p98, stats.mean, stats.std)
    )
    token = int(vit.patch_embed.patch_size[0])
    pooled, tokens = [], []
    n = images.shape[0]
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            x = images[start : start + batch_size].to(device)
            x = (scale_unit(x, p2, p98) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
            out = vit.forward_features(x)  # (B, prefix + h*w, D)
            pooled.append(out[:, 0].float().cpu())
            if dense:
                grid = x.shape[-1] // token
                patches = out[:, vit.num_prefix_tokens :]  # (B, h*w, D)
                b, _, d = patches.shape
                # (B, h*w, D) -> (B, h, w, D) -> (B, D, h, w)
                tokens.append(patches.reshape(b, grid, grid, d).permute(0, 3, 1, 2).float().cpu())
            if progress is not None:
                progress(min(start + batch_size, n), n)
    return torch.cat(pooled), torch.cat(tokens) if dense else None


def _forward_ranks(
    vit: VisionTransformer,
    images: Tensor,
    stats: BandStats,
    sizes: tuple[int, int, int],
    dense: bool,
) -> tuple[Tensor, Tensor | None]:
    """:func:`_forward` with the batches dealt over processes (each batch as one process has it).

    geopera starts the processes on one node; under torchrun or srun this process is one of
    them. Every rank ends with all the features (gathered batch by batch, so no shared folder).

    Args:
        vit: The backbone (its device is the ranks' kind of device).
        images: (N, C, s, s) raw.
        stats: Their band statistics.
        sizes: Images per batch, processes per node, and nodes.
        dense: Keep the patch tokens too.

    Returns:
        The features, as :func:`_forward` returns them.

    Raises:
        ValueError: If there are more processes than batches.
        RankError: If a rank failed (named).
    """
    batch_size, devices, num_nodes = sizes
    batches = math.ceil(images.shape[0] / batch_size)
    if devices * num_nodes > batches:
        raise ValueError(
            f"{devices * num_nodes} processes for {batches} batches of {batch_size} images: "
            f"give at most {batches} --devices x --num-nodes, or a smaller --batch-size"
        )
    fabric = fabric_for(next(vit.parameters()).device, devices, num_nodes)
    job = pickle.dumps((vit.cpu(), images, stats, batch_size, dense))
    result = launch(fabric, _forward_share, job, "evaluate")
    if isinstance(result, str):
        raise RankError(result)
    pooled, tokens = result  # numpy: tensors from spawned ranks would share memory with them
    return torch.from_numpy(pooled), torch.from_numpy(tokens) if tokens is not None else None


def _forward_share(fabric: Any, job: bytes) -> tuple[Any, Any | None]:
    """One rank: its batches' features, then everyone's (gathered), as numpy arrays."""
    vit, images, stats, batch_size, dense = pickle.loads(job)  # ours, above
    vit = vit.to(fabric.device)
    starts = list(range(0, images.shape[0], batch_size))
    rank, world = fabric.global_rank, fabric.world_size

    def work() -> list[tuple[Tensor, Tensor | None]]:
        return [
            _forward(vit, images[s : s + batch_size], stats, batch_size, dense, None)
            for s in share(starts, rank, world)
        ]

    mine = together(fabric, work)
    pooled = _gathered(fabric, [p for p, _ in mine], starts, images.shape[0])
    tokens = _gathered(fabric, [t for _, t in mine], starts, images.shape[0]) if dense else None
    return pooled.numpy(), tokens.numpy() if tokens is not None else None


def _gathered(fabric: Any, mine: list[Any], starts: list[int], n: int) -> Tensor:
    """Every rank's batches, in image order: (N, ...) from each rank's (B_i, ...) batches.

    Batches are dealt round-robin (:func:`~geopera.core.ranks.share`), so gathering step ``b``
    of every rank gives batches ``b * world .. b * world + world - 1``, in order.
    """
    world = fabric.world_size
    batch = starts[1] - starts[0] if len(starts) > 1 else n
    shape = mine[0].shape[1:]  # every rank has a batch: checked before the launch
    parts = []
    for b in range(math.ceil(len(starts) / world)):
        local = torch.zeros((batch, *shape), dtype=mine[0].dtype)
        if b < len(mine):
            local[: mine[b].shape[0]] = mine[b]
        every = [torch.empty_like(local.to(fabric.device)) for _ in range(world)]
        torch.distributed.all_gather(every, local.to(fabric.device))  # world x (batch, ...)
        for r, start in enumerate(starts[b * world : (b + 1) * world]):
            parts.append(every[r][: min(batch, n - start)].cpu())
    return torch.cat(parts)
