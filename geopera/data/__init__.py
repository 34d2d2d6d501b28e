"""Data layer: archive discovery, ROIs, sampling, statistics and the pretraining data module."""

from geopera.data.archive import Archive, Problem, RasterItem, Source, discover
from geopera.data.roi import ROI, load_roi

__all__ = ["ROI", "Archive", "Problem", "RasterItem", "Source", "discover", "load_roi"]
