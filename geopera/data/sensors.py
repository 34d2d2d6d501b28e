"""Sensors as records: everything geopera knows about one sensor, in one place.

A :class:`Sensor` holds a sensor's bands with their identities (common name, centre wavelength
and width, from the published tables cited beside each), how its files and STAC items are
recognised, its stacked-file layouts by band count, and the other names its bands go by (STAC
asset keys such as ``red`` or ``nir08``). Every stage reads these records: discovery names
sources by ``family``, :mod:`geopera.data.identity` looks bands up, and the RGB bands of any
stage come from the identities (:func:`geopera.core.identity.rgb_indices`), never from band
names. Adding a sensor is one record in :data:`SENSORS` (see docs/extending.md).
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from geopera.core.identity import BandIdentity

_BAND_KEY = re.compile(r"^(?:.*_)?B0*(\d{1,2})(A?)$", re.IGNORECASE)


def band_key(name: str) -> str:
    """A band name without zero padding or a product prefix: ``SR_B04`` -> ``B4``."""
    match = _BAND_KEY.match(name.strip())
    if match:
        return f"B{int(match.group(1))}{match.group(2).upper()}"
    return re.sub(r"[\s-]+", "_", name.strip()).upper()


def _bands(
    table: Mapping[str, tuple[str | None, float | None, float | None]],
) -> dict[str, BandIdentity]:
    """Identities from (common name, centre µm, width µm) per band name, in band order."""
    return {name: BandIdentity(common, c, w) for name, (common, c, w) in table.items()}


@dataclass(frozen=True)
class Sensor:
    """What geopera knows about one sensor.

    Attributes:
        family: The short name sources are named by (``landsat9`` -> ``landsat9_30m``); letters
            and digits only.
        title: The sensor's name for people.
        bands: Band name -> identity, in the sensor's band order.
        stem: Matches the leading part of the sensor's file names, or None.
        stac: Searched in a STAC item's platform, constellation, collection and id, or None.
        layouts: Band names of a stacked file without band descriptions, by band count.
        aliases: Other names of its bands (STAC asset keys, lower case) -> band name.
        names_bands: Whether the sensor has a band naming of its own; NAIP's bands are ``1..4``.
        reference: Where the wavelengths come from.
    """

    family: str
    title: str
    bands: Mapping[str, BandIdentity]
    stem: re.Pattern[str] | None = None
    stac: re.Pattern[str] | None = None
    layouts: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    names_bands: bool = True
    reference: str = ""

    def identity(self, name: str) -> BandIdentity | None:
        """The identity of a band of this sensor (padding, prefixes and aliases allowed)."""
        name = self.aliases.get(name.strip().lower(), name)
        by_key = {band_key(n): identity for n, identity in self.bands.items()}
        return by_key.get(band_key(name))

    def layout(self, count: int) -> list[str] | None:
        """Band names of a stacked file of ``count`` bands without descriptions, or None."""
        names = self.layouts.get(count)
        return list(names) if names is not None else None


#: Landsat 8 OLI/TIRS, centres from the Landsat 8 Data Users Handbook (LSDS-1574).
_OLI = _bands({
    "B1": ("coastal", 0.443, 0.02), "B2": ("blue", 0.482, 0.06), "B3": ("green", 0.5613, 0.06),
    "B4": ("red", 0.6546, 0.03), "B5": ("nir08", 0.8646, 0.03), "B6": ("swir16", 1.609, 0.08),
    "B7": ("swir22", 2.201, 0.18), "B8": ("pan", 0.5917, 0.18), "B9": ("cirrus", 1.3737, 0.02),
    "B10": ("lwir11", 10.895, 0.59), "B11": ("lwir12", 12.005, 1.01),
})  # fmt: skip
#: Landsat 7 ETM+, centres as published with its calibration (Chander et al., 2009), widths from
#: USGS's band ranges.
_ETM = _bands({
    "B1": ("blue", 0.483, 0.07), "B2": ("green", 0.560, 0.08), "B3": ("red", 0.662, 0.06),
    "B4": ("nir", 0.835, 0.13), "B5": ("swir16", 1.648, 0.20), "B6": ("lwir", 11.335, 2.10),
    "B7": ("swir22", 2.206, 0.26), "B8": ("pan", 0.706, 0.38),
})  # fmt: skip
#: Landsat 4-5 TM, from the same sources as ETM+.
_TM = _bands({
    "B1": ("blue", 0.485, 0.07), "B2": ("green", 0.569, 0.08), "B3": ("red", 0.660, 0.06),
    "B4": ("nir", 0.840, 0.14), "B5": ("swir16", 1.676, 0.20), "B6": ("lwir", 11.435, 2.10),
    "B7": ("swir22", 2.223, 0.27),
})  # fmt: skip
#: Sentinel-2A MSI, centres and bandwidths in nm from ESA's Sentinel-2 User Handbook.
_MSI = _bands({
    name: (common, round(nm / 1000, 5), round(width / 1000, 5))
    for name, (common, nm, width) in {
        "B01": ("coastal", 442.7, 21), "B02": ("blue", 492.4, 66), "B03": ("green", 559.8, 36),
        "B04": ("red", 664.6, 31), "B05": ("rededge", 704.1, 15), "B06": ("rededge", 740.5, 15),
        "B07": ("rededge", 782.8, 20), "B08": ("nir", 832.8, 106), "B8A": ("nir08", 864.7, 21),
        "B09": ("nir09", 945.1, 20), "B10": ("cirrus", 1373.5, 31),
        "B11": ("swir16", 1613.7, 91), "B12": ("swir22", 2202.4, 175),
    }.items()
})  # fmt: skip
#: Sentinel-2 asset keys of STAC APIs (Earth Search's ``red``, ``nir08``...; Planetary
#: Computer's keys are the band names themselves).
_S2_KEYS = {
    "coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05",
    "rededge2": "B06", "rededge3": "B07", "nir": "B08", "nir08": "B8A", "nir09": "B09",
    "cirrus": "B10", "swir16": "B11", "swir22": "B12",
}  # fmt: skip
#: PlanetScope (Dove Classic 4-band and SuperDove 8-band): centres and widths in nm from Planet's
#: PlanetScope product specification (band ranges: the centre is their middle).
_PLANETSCOPE = _bands({
    name: (common, round(nm / 1000, 4), round(width / 1000, 4))
    for name, (common, nm, width) in {
        "coastal_blue": ("coastal", 443, 21), "blue": ("blue", 490, 50),
        "green_i": ("green", 531, 36), "green": ("green", 565, 36),
        "yellow": ("yellow", 610, 20), "red": ("red", 665, 30),
        "rededge": ("rededge", 705, 16), "nir": ("nir", 865, 40),
    }.items()
})  # fmt: skip
_S2_NAMES = tuple(_MSI)
_L2_NAMES = tuple(n for n in _S2_NAMES if n != "B10")  # L2A drops the cirrus band

LANDSAT9 = Sensor(
    "landsat9", "Landsat 9 OLI-2/TIRS-2", _OLI, re.compile(r"^L[COTE]0?9", re.I),
    re.compile(r"landsat-?9", re.I),
    reference="OLI-2 and TIRS-2 are built to OLI's and TIRS's band specification (Landsat 9 "
    "Data Users Handbook, LSDS-2082): the table is OLI's",
)  # fmt: skip
LANDSAT8 = Sensor(
    "landsat8", "Landsat 8 OLI/TIRS", _OLI, re.compile(r"^L[COTE]0?8", re.I),
    re.compile(r"landsat-?8|landsat-c2", re.I), reference="Landsat 8 Data Users Handbook",
)  # fmt: skip
LANDSAT7 = Sensor(
    "landsat7", "Landsat 7 ETM+", _ETM, re.compile(r"^L[ET]0?7", re.I),
    re.compile(r"landsat-?7", re.I), reference="Chander et al. (2009); USGS band ranges",
)  # fmt: skip
LANDSAT5 = Sensor(
    "landsat5", "Landsat 4-5 TM", _TM, re.compile(r"^L[TM]0?[45]", re.I),
    re.compile(r"landsat-?[45]", re.I), reference="Chander et al. (2009); USGS band ranges",
)  # fmt: skip
HLS_L30 = Sensor(
    "hlsl30", "Harmonized Landsat Sentinel-2, L30 (Landsat 8-9 OLI)", _OLI,
    re.compile(r"^HLS\.L30\.", re.I), re.compile(r"hls-?l30", re.I),
    reference="HLS v2.0 User Guide (LP DAAC): L30 bands are OLI's, named B01-B11",
)  # fmt: skip
HLS_S30 = Sensor(
    "hlss30", "Harmonized Landsat Sentinel-2, S30 (Sentinel-2 MSI)", _MSI,
    re.compile(r"^HLS\.S30\.", re.I), re.compile(r"hls-?s30", re.I),
    reference="HLS v2.0 User Guide (LP DAAC): S30 bands are MSI's",
)  # fmt: skip
SENTINEL2 = Sensor(
    "sentinel2", "Sentinel-2 MSI", _MSI, re.compile(r"^S2[AB]?|^T\d{2}[A-Z]{3}", re.I),
    re.compile(r"sentinel-?2", re.I), layouts={13: _S2_NAMES, 12: _L2_NAMES}, aliases=_S2_KEYS,
    reference="Sentinel-2 User Handbook (ESA), Sentinel-2A",
)  # fmt: skip
SENTINEL1 = Sensor(
    "sentinel1", "Sentinel-1 C-SAR", {p: BandIdentity(p.lower()) for p in ("VV", "VH", "HH", "HV")},
    re.compile(r"^S1[AB]?", re.I), re.compile(r"sentinel-?1", re.I),
    reference="polarisations; no wavelength",
)  # fmt: skip
PLANETSCOPE = Sensor(
    "planetscope", "PlanetScope (Dove Classic 4-band, SuperDove 8-band)", _PLANETSCOPE,
    re.compile(r"^\d{8}_\d{6}(?:_\d{2})?_[0-9a-f]{4}_[13]B_", re.I),
    re.compile(r"planetscope|psscene", re.I),
    layouts={4: ("blue", "green", "red", "nir"), 8: tuple(_PLANETSCOPE)},
    reference="Planet, PlanetScope product specification (band ranges)",
)  # fmt: skip
NAIP = Sensor(
    "naip", "NAIP (USDA aerial imagery)",
    {str(i + 1): BandIdentity(c) for i, c in enumerate(("red", "green", "blue", "nir"))},
    stac=re.compile(r"naip", re.I), names_bands=False,
    reference="band order red, green, blue, near infrared; the cameras change by state and year, "
    "and no single table of centres applies: common names only",
)  # fmt: skip

#: Every sensor, in the order names are matched (the more specific first: HLS before Landsat
#: and Sentinel-2, Landsat 9 before 8).
SENSORS: tuple[Sensor, ...] = (
    HLS_L30, HLS_S30, LANDSAT9, LANDSAT8, LANDSAT7, LANDSAT5, SENTINEL2, SENTINEL1,
    PLANETSCOPE, NAIP,
)  # fmt: skip


def sensor(family: str | None) -> Sensor | None:
    """The sensor of a family name, or None (a file-name token, or None)."""
    return next((s for s in SENSORS if s.family == family), None)


def from_stem(stem: str) -> Sensor | None:
    """The sensor recognised from a file name (without extension), or None."""
    return next((s for s in SENSORS if s.stem is not None and s.stem.match(stem)), None)


def stem_family(stem: str) -> str | None:
    """The family of the sensor recognised from a file name, or None."""
    found = from_stem(stem)
    return found.family if found is not None else None


def from_stac(texts: Iterable[str | None]) -> Sensor | None:
    """The sensor named by any of a STAC item's platform, constellation, collection or id."""
    words = [t for t in texts if t]
    for candidate in SENSORS:
        if candidate.stac is not None and any(candidate.stac.search(t) for t in words):
            return candidate
    return None


def naming_sensor(names: Sequence[str]) -> Sensor | None:
    """The sensor whose band naming these names use, when only one does (``B8A``, ``B04``)."""
    if any(re.fullmatch(r"B(0\d|8A)", n.strip(), re.IGNORECASE) for n in names):
        return SENTINEL2
    return None
