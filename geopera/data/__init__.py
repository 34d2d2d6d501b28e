"""Data layer: archive discovery, ROIs, sampling, statistics and the pretraining data module."""

from geopera.data.roi import ROI, load_roi
from geopera.data.sources.discover import discover
from geopera.data.sources.model import Archive, Problem, RasterItem, Source

__all__ = ["ROI", "Archive", "Problem", "RasterItem", "Source", "discover", "load_roi"]
