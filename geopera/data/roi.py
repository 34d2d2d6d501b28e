"""Regions of interest: read, validate, union, reproject.

An ROI comes from any vector file geopandas reads (GeoJSON, GeoPackage, Shapefile...), a WKT
string (optionally ``EPSG:xxxx;POLYGON(...)``) or a bbox ``minx,miny,maxx,maxy`` in lon/lat.
GeoJSON without a CRS is EPSG:4326 (RFC 7946). Invalid geometries are repaired with
``shapely.make_valid``; what remains must be polygonal and non-empty.
"""

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
import shapely.wkt
from pyproj import CRS as ProjCRS
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from geopera.core.errors import ROIError

_BBOX_RE = re.compile(r"^\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*$")
_EPSG_PREFIX_RE = re.compile(r"^\s*(EPSG:\d+)\s*;\s*(.+)$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class ROI:
    """A polygonal region of interest in a known CRS.

    Attributes:
        geometry: Polygon or MultiPolygon (valid, non-empty).
        crs: Its CRS.
        origin: Where it came from (a path or ``"wkt"``/``"bbox"``), for messages.
    """

    geometry: Polygon | MultiPolygon
    crs: ProjCRS
    origin: str

    def to_crs(self, crs: object) -> Polygon | MultiPolygon:
        """Reproject the ROI.

        Args:
            crs: Anything pyproj accepts (a rasterio CRS, ``"EPSG:32621"``, WKT).

        Returns:
            The geometry in that CRS.

        Raises:
            ValueError: If the ROI falls outside the CRS's domain (e.g. a full-disk projection).
        """
        target = ProjCRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
        series = gpd.GeoSeries([self.geometry], crs=self.crs).to_crs(target)
        geom = series.iloc[0]
        if not np.isfinite(shapely.get_coordinates(geom)).all():
            raise ValueError(f"ROI {self.origin} cannot be represented in {target.name}")
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
        return _polygonal(geom)

    @property
    def bounds_wgs84(self) -> tuple[float, float, float, float]:
        """Lon/lat bounds."""
        b = self.to_crs("EPSG:4326").bounds
        return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))

    @property
    def wkt_wgs84(self) -> str:
        """The ROI as WKT in lon/lat."""
        return self.to_crs("EPSG:4326").wkt


def format_lonlat(bounds: tuple[float, ...] | list[float] | None) -> str:
    """Lon/lat bounds as readable text.

    Args:
        bounds: (west, south, east, north) or None.

    Returns:
        ``"lon W..E, lat S..N"``.
    """
    if bounds is None:
        return "(not representable in lon/lat)"
    return f"lon {bounds[0]:.4f}..{bounds[2]:.4f}, lat {bounds[1]:.4f}..{bounds[3]:.4f}"


def outside_error(roi: "ROI", extents: list[tuple[str, tuple[float, ...] | None]]) -> ROIError:
    """The error for an ROI that intersects no source, with both extents in lon/lat.

    Args:
        roi: The ROI.
        extents: ``(source name, lon/lat bounds)`` pairs.

    Returns:
        The error, to raise.
    """
    listing = "; ".join(f"{name}: {format_lonlat(b)}" for name, b in extents)
    return ROIError(
        f"ROI {roi.origin} ({format_lonlat(roi.bounds_wgs84)}) intersects no source of the "
        f"archive. Source extents: {listing}"
    )


def _polygonal(geom: BaseGeometry) -> Polygon | MultiPolygon:
    """Keep the polygonal parts of a geometry (make_valid may return a collection)."""
    if isinstance(geom, Polygon | MultiPolygon):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon | MultiPolygon)]
    polys: list[Polygon] = []
    for part in parts:
        polys.extend(part.geoms if isinstance(part, MultiPolygon) else [part])
    return MultiPolygon(polys)


def _finish(geom: BaseGeometry, crs: ProjCRS, origin: str) -> ROI:
    if geom is None or geom.is_empty:
        raise ROIError(f"ROI {origin} is empty: it holds no geometry; draw a polygon")
    if not all(math.isfinite(v) for v in geom.bounds):
        raise ROIError(f"ROI {origin} has coordinates that are not finite numbers")
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    poly = _polygonal(geom)
    if poly.is_empty or poly.area == 0:
        raise ROIError(
            f"ROI {origin} has no area (points or lines only, or a degenerate polygon); "
            "an ROI must be a polygon"
        )
    if isinstance(poly, MultiPolygon) and len(poly.geoms) == 1:
        poly = poly.geoms[0]
    return ROI(geometry=poly, crs=crs, origin=origin)


WGS84 = ProjCRS.from_epsg(4326)


def _prefix_crs(text: str) -> ProjCRS:
    """The CRS of an ``EPSG:xxxx;`` prefix (one-line error when PROJ does not know it)."""
    try:
        return ProjCRS.from_user_input(text)
    except Exception as err:  # pyproj.exceptions.CRSError
        raise ROIError(
            f"ROI CRS {text!r} is not one PROJ knows ({err}); write e.g. EPSG:32633;POLYGON(...)"
        ) from err


def load_roi(spec: str | os.PathLike[str]) -> ROI:
    """Read an ROI from a vector file, a WKT string or a lon/lat bbox.

    Args:
        spec: Path to a vector file; ``"minx,miny,maxx,maxy"`` (EPSG:4326); or WKT, optionally
            prefixed ``"EPSG:xxxx;"`` (EPSG:4326 when not).

    Returns:
        The ROI: all geometries unioned, repaired when invalid.

    Raises:
        FileNotFoundError: If a path is given that does not exist.
        ROIError: If the file is unreadable, has no CRS, or the ROI is empty or not polygonal.
    """
    text = str(spec)
    bbox = _BBOX_RE.match(text)
    if bbox:
        minx, miny, maxx, maxy = (float(v) for v in bbox.groups())
        if not (minx < maxx and miny < maxy):
            raise ROIError(f"bbox {text!r} must be minx,miny,maxx,maxy with minx<maxx, miny<maxy")
        return _finish(shapely.box(minx, miny, maxx, maxy), ProjCRS.from_epsg(4326), "bbox")
    prefixed = _EPSG_PREFIX_RE.match(text)
    wkt_text = prefixed.group(2) if prefixed else text
    if re.match(r"^\s*(MULTI)?POLYGON\s*\(", wkt_text, re.IGNORECASE):
        try:
            geom = shapely.wkt.loads(wkt_text)
        except Exception as err:  # shapely raises GEOSException subclasses
            raise ROIError(f"ROI WKT could not be parsed ({err})") from err
        return _finish(geom, _prefix_crs(prefixed.group(1)) if prefixed else WGS84, "wkt")
    path = Path(text)
    try:
        found = path.exists()
    except OSError as err:  # e.g. a name longer than the file system allows
        raise ROIError(
            f"ROI {text!r} is neither a bbox 'minx,miny,maxx,maxy', a WKT polygon (optionally "
            f"prefixed 'EPSG:xxxx;') nor a path this system can look up ({err.strerror})"
        ) from err
    if not found:
        raise FileNotFoundError(
            f"ROI file {text} does not exist; give a vector file (GeoJSON, GeoPackage, "
            "Shapefile), a WKT polygon or a bbox 'minx,miny,maxx,maxy' in lon/lat"
        )
    try:
        frame = gpd.read_file(path)
    except Exception as err:  # pyogrio raises DataSourceError and friends
        raise ROIError(f"ROI file {text} could not be read as vector data ({err})") from err
    if frame.empty:
        raise ROIError(f"ROI file {text} is empty: it holds no features; draw a polygon")
    crs = frame.crs
    if crs is None:
        if path.suffix.lower() in (".geojson", ".json"):
            crs = ProjCRS.from_epsg(4326)
        else:
            raise ROIError(
                f"ROI file {text} has no CRS; add one (e.g. a .prj file) or use GeoJSON in lon/lat"
            )
    geoms = [g for g in frame.geometry if g is not None and not g.is_empty]
    try:
        fixed = [g if g.is_valid else shapely.make_valid(g) for g in geoms]
        return _finish(
            shapely.union_all(fixed) if fixed else None, ProjCRS.from_user_input(crs), text
        )
    except shapely.errors.GEOSException as err:  # e.g. infinite coordinates
        raise ROIError(f"ROI file {text} holds a geometry GEOS cannot use ({err})") from err
