"""``geopera publish``: a run's backbone as a TorchGeo ``WeightsEnum`` member."""

from geopera.publish.module import register
from geopera.publish.run import PublishError, publish

__all__ = ["PublishError", "publish", "register"]
