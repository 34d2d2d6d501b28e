"""Models: timm ViT backbones with sparse (kept-token) forwards, heads, the PerA model."""

from geopera.models.heads import ProjectionHead
from geopera.models.pera import PerA, PerAConfig, PerASettings
from geopera.models.vit import build_backbone

__all__ = ["PerA", "PerAConfig", "PerASettings", "ProjectionHead", "build_backbone"]
