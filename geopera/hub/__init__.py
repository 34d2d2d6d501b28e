"""Publishing backbones in TorchGeo's model-registry format."""

from geopera.hub.publish import PublishError, publish, register

__all__ = ["PublishError", "publish", "register"]
