"""What a band measures: its common name and wavelength (the record every stage shares).

Band *names* are each sensor's own (``B4`` on Landsat 8 is red, on Landsat 7 near infrared);
a :class:`BandIdentity` says what the band measures, so that a backbone trained on one sensor
finds its bands on another. Identities are worked out by :mod:`geopera.data.identity` and
matched by :mod:`geopera.models.bandplan`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Common names: STAC's ``eo:common_name`` vocabulary, SAR polarisations, and a few others.
COMMON_NAMES = frozenset(
    {
        "coastal", "blue", "green", "yellow", "red", "pan", "rededge", "nir", "nir08", "nir09",
        "cirrus", "swir16", "swir22", "lwir", "lwir11", "lwir12",
        "vv", "vh", "hh", "hv", "dem",
    }
)  # fmt: skip


@dataclass(frozen=True)
class BandIdentity:
    """What one band measures.

    Attributes:
        common: Common name (see :data:`COMMON_NAMES`), or None when not known.
        center_um: Centre wavelength in micrometres, or None (SAR, DEM, unknown).
        width_um: Full width at half maximum in micrometres, or None.
    """

    common: str | None = None
    center_um: float | None = None
    width_um: float | None = None

    def label(self) -> str:
        """``red (0.665 µm)``, ``vv``, or ``?`` for messages."""
        name = self.common or "?"
        return f"{name} ({self.center_um:.3f} µm)" if self.center_um is not None else name

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (None where unknown)."""
        return {"common": self.common, "center_um": self.center_um, "width_um": self.width_um}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BandIdentity":
        """Read :meth:`to_dict`'s output."""
        return cls(data.get("common"), data.get("center_um"), data.get("width_um"))


#: Centre wavelengths (µm) that pick one band where several share a colour (PlanetScope's two
#: greens): the middle of the colour's visible range.
RGB_CENTRES = {"red": 0.655, "green": 0.56, "blue": 0.485}


def rgb_indices(identities: Sequence[BandIdentity | None]) -> list[int] | None:
    """Indices of the red, green and blue bands by their identities, or None if one is missing.

    Band names never decide (``B4`` is red on Landsat 8 and near infrared on Landsat 7); where
    several bands share a colour, the one whose centre is nearest the colour's middle is taken.

    Args:
        identities: One identity (or None) per band, in band order.

    Returns:
        ``[r, g, b]`` indices, or None.
    """
    found: list[int] = []
    for colour, centre in RGB_CENTRES.items():
        bands = {
            i: abs((b.center_um if b.center_um is not None else centre) - centre)
            for i, b in enumerate(identities)
            if b is not None and b.common == colour
        }
        if not bands:
            return None
        found.append(min(bands, key=bands.__getitem__))
    return found
