"""Models: timm ViT backbones with sparse (kept-token) forwards, heads, the PerA model."""

from geopera.models.heads import ProjectionHead
from geopera.models.pera import PerA, PerAConfig
from geopera.models.vit import build_backbone

__all__ = ["PerA", "PerAConfig", "ProjectionHead", "build_backbone"]
