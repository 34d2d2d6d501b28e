"""How a raster layer becomes coloured pixels: one style record per kind of layer.

A style turns the bands it reads (``indexes``) of a tile, as rio-tiler returns them, into RGBA:

* :class:`ClassStyle`: class values, one colour each (a predict class raster);
* :class:`RampStyle`: one band's values on a colour ramp between two values (regression values,
  similarity, probabilities);
* :class:`RGBStyle`: three bands stretched between per-band limits (input rasters, the PCA of
  embeddings).

Each style also says what its legend shows (:meth:`legend`), for ``layers.json``.
"""

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import matplotlib
import numpy as np


def _hex(rgb: np.ndarray) -> str:
    r, g, b = (round(float(v) * 255) for v in rgb[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def class_colours(count: int) -> np.ndarray:
    """(count, 4) RGBA in [0, 1]: tab10 up to 10 classes, tab20 up to 20, then repeating."""
    cmap = matplotlib.colormaps["tab10" if count <= 10 else "tab20"]
    return np.asarray(cmap(np.arange(count) % cmap.N))


@dataclass(frozen=True)
class ClassStyle:
    """Class values, each in its colour; other values transparent.

    Attributes:
        values: The class values, in legend order.
        names: A name per value.
    """

    values: tuple[float, ...]
    names: tuple[str, ...]
    #: Class values are never blended between pixels.
    resampling: ClassVar[Literal["nearest"]] = "nearest"

    @property
    def indexes(self) -> tuple[int, ...]:
        """The band read."""
        return (1,)

    def rgba(self, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(1, H, W) values and (H, W) validity -> (4, H, W) uint8."""
        colours = (class_colours(len(self.values)) * 255).astype(np.uint8)  # (K, 4)
        out = np.zeros((4, *data.shape[1:]), dtype=np.uint8)
        for value, colour in zip(self.values, colours, strict=True):
            hit = valid & (data[0] == value)
            out[:, hit] = colour[:, None]
        return out

    def legend(self) -> dict[str, Any]:
        """One entry per class: its name and colour."""
        colours = class_colours(len(self.values))
        entries = [
            {"label": n, "colour": _hex(c)} for n, c in zip(self.names, colours, strict=True)
        ]
        return {"kind": "classes", "entries": entries}


@dataclass(frozen=True)
class RampStyle:
    """One band on a matplotlib colour ramp from ``low`` to ``high``.

    Attributes:
        band: The band shown (1-based).
        low: The value at the ramp's start.
        high: The value at its end.
        cmap: A matplotlib colour map name.
        label: What the values are.
        reduce_max: Show the largest of the bands ``1..band`` instead (a probability raster's
            confidence).
    """

    #: Continuous values: blended between pixels.
    resampling: ClassVar[Literal["bilinear"]] = "bilinear"

    band: int
    low: float
    high: float
    cmap: str
    label: str
    reduce_max: bool = False

    @property
    def indexes(self) -> tuple[int, ...]:
        """The bands read."""
        return tuple(range(1, self.band + 1)) if self.reduce_max else (self.band,)

    def rgba(self, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(N, H, W) values and (H, W) validity -> (4, H, W) uint8."""
        values = data.max(0) if self.reduce_max else data[0]  # (H, W)
        scaled = (values.astype(np.float64) - self.low) / max(self.high - self.low, 1e-12)
        colours = matplotlib.colormaps[self.cmap](np.clip(scaled, 0, 1))  # (H, W, 4)
        out = (np.moveaxis(colours, -1, 0) * 255).astype(np.uint8)
        out[3] = np.where(valid & np.isfinite(values), 255, 0)
        return out

    def legend(self) -> dict[str, Any]:
        """The ramp's colours at five stops and its two ends."""
        stops = matplotlib.colormaps[self.cmap](np.linspace(0, 1, 5))
        return {
            "kind": "ramp",
            "label": self.label,
            "low": self.low,
            "high": self.high,
            "colours": [_hex(c) for c in stops],
        }


@dataclass(frozen=True)
class RGBStyle:
    """Three bands as red, green and blue, each stretched between its limits.

    Attributes:
        bands: The bands shown as R, G, B (1-based).
        low: Per band, the value shown black.
        high: Per band, the value shown full.
        label: How the bands were chosen, for the legend.
    """

    #: Continuous values: blended between pixels.
    resampling: ClassVar[Literal["bilinear"]] = "bilinear"

    bands: tuple[int, int, int]
    low: tuple[float, float, float]
    high: tuple[float, float, float]
    label: str

    @property
    def indexes(self) -> tuple[int, ...]:
        """The bands read."""
        return self.bands

    def rgba(self, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(3, H, W) values and (H, W) validity -> (4, H, W) uint8."""
        low = np.asarray(self.low)[:, None, None]
        span = np.maximum(np.asarray(self.high)[:, None, None] - low, 1e-12)
        rgb = (np.clip((data.astype(np.float64) - low) / span, 0, 1) * 255).astype(np.uint8)
        alpha = np.where(valid, 255, 0).astype(np.uint8)[None]
        return np.concatenate([rgb, alpha])

    def legend(self) -> dict[str, Any]:
        """The bands shown and how they were chosen."""
        return {"kind": "rgb", "label": self.label, "bands": list(self.bands)}


Style = ClassStyle | RampStyle | RGBStyle
