"""PerA losses, one per file: DINO class-token loss with centring, KoLeo, pixel MSE."""

from geopera.losses.dino import DINOLoss
from geopera.losses.koleo import koleo_loss
from geopera.losses.pixel import patchify, pixel_loss

__all__ = ["DINOLoss", "koleo_loss", "patchify", "pixel_loss"]
