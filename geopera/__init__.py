"""geopera: PerA self-supervised pretraining from uncurated geospatial raster archives."""

__version__ = "0.1.0"
