"""A tiny backbone folder (``backbone.pth`` and ``backbone.json``) to measure with."""

import argparse
from pathlib import Path

import torch

from geopera.core.contracts import BackboneCard
from geopera.models.loading import build_vit


def write_backbone(folder: Path, args: argparse.Namespace) -> Path:
    """A random ViT/16 backbone of the requested size, as a run folder would hold it."""
    kwargs = {"depth": args.depth, "embed_dim": args.dim, "num_heads": max(1, args.dim // 64)}
    vit = build_vit("vit_small_patch16_224", 3, args.chip, kwargs)
    torch.save(vit.state_dict(), folder / "backbone.pth")
    card = BackboneCard(
        model="vit_small_patch16_224",
        in_chans=3,
        token_size=16,
        img_size=args.chip,
        model_kwargs=kwargs,
    )
    card.write(folder / BackboneCard.FILE)
    return folder
