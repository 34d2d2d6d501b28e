"""Device-side transforms: aligned multi-crop views and disjoint patch masks."""

from geopera.transforms.masking import DisjointMasking, MaskSets, disjoint_masks
from geopera.transforms.views import AlignedViews, ColourJitter, ViewsConfig

__all__ = [
    "AlignedViews",
    "ColourJitter",
    "DisjointMasking",
    "MaskSets",
    "ViewsConfig",
    "disjoint_masks",
]
