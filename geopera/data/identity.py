"""Band identities: sensor band tables, and what each band of a raster measures.

A band's identity (:class:`~geopera.core.identity.BandIdentity`) comes from, in this order:

1. STAC metadata (``eo:bands`` common names, kept as the item's ``aliases``);
2. the band's name when it is a common name itself (``red``, ``NIR``, ``vv``...);
3. the sensor's band table (:data:`SENSOR_BANDS`), for the sensor family of the file name or
   STAC item, or, for unnamed families, one recognised from the names (``B8A`` or zero-padded
   ``B04`` are Sentinel-2's);
4. a colour run in the file name (``_RGBN``, ``_RGB``) for bands named ``1..n``.

The user's ``--bands`` mapping, applied by :mod:`geopera.models.bandplan`, comes last and wins.
Centre wavelengths and widths are the sensors' published values (sources beside each table).
"""

import re
from collections.abc import Mapping, Sequence

from geopera.core.identity import COMMON_NAMES, BandIdentity
from geopera.data.bands import SensorFamily


def _table(bands: Mapping[str, tuple[str, float, float]]) -> dict[str, BandIdentity]:
    """Identities from (common name, centre µm, width µm) per band."""
    return {name: BandIdentity(common, c, w) for name, (common, c, w) in bands.items()}


#: Landsat 4-5 TM and 7 ETM+: centres as published with the sensors' calibration (Chander et
#: al., 2009), widths from USGS's band ranges.
_TM = {
    "B1": ("blue", 0.485, 0.07), "B2": ("green", 0.569, 0.08), "B3": ("red", 0.660, 0.06),
    "B4": ("nir", 0.840, 0.14), "B5": ("swir16", 1.676, 0.20), "B6": ("lwir", 11.435, 2.10),
    "B7": ("swir22", 2.223, 0.27),
}  # fmt: skip
_ETM = {
    "B1": ("blue", 0.483, 0.07), "B2": ("green", 0.560, 0.08), "B3": ("red", 0.662, 0.06),
    "B4": ("nir", 0.835, 0.13), "B5": ("swir16", 1.648, 0.20), "B6": ("lwir", 11.335, 2.10),
    "B7": ("swir22", 2.206, 0.26), "B8": ("pan", 0.706, 0.38),
}  # fmt: skip
#: Landsat 8-9 OLI/TIRS: centres from the Landsat 8 Data Users Handbook.
_OLI = {
    "B1": ("coastal", 0.443, 0.02), "B2": ("blue", 0.482, 0.06), "B3": ("green", 0.5613, 0.06),
    "B4": ("red", 0.6546, 0.03), "B5": ("nir08", 0.8646, 0.03), "B6": ("swir16", 1.609, 0.08),
    "B7": ("swir22", 2.201, 0.18), "B8": ("pan", 0.5917, 0.18), "B9": ("cirrus", 1.3737, 0.02),
    "B10": ("lwir11", 10.895, 0.59), "B11": ("lwir12", 12.005, 1.01),
}  # fmt: skip
#: Sentinel-2A MSI: (common name, centre nm, bandwidth nm), ESA's Sentinel-2 User Handbook.
_MSI = {
    "B01": ("coastal", 442.7, 21), "B02": ("blue", 492.4, 66), "B03": ("green", 559.8, 36),
    "B04": ("red", 664.6, 31), "B05": ("rededge", 704.1, 15), "B06": ("rededge", 740.5, 15),
    "B07": ("rededge", 782.8, 20), "B08": ("nir", 832.8, 106), "B8A": ("nir08", 864.7, 21),
    "B09": ("nir09", 945.1, 20), "B10": ("cirrus", 1373.5, 31), "B11": ("swir16", 1613.7, 91),
    "B12": ("swir22", 2202.4, 175),
}  # fmt: skip

#: Band tables by sensor family: band name -> identity.
SENSOR_BANDS: dict[SensorFamily, dict[str, BandIdentity]] = {
    SensorFamily.LANDSAT5: _table(_TM),
    SensorFamily.LANDSAT7: _table(_ETM),
    SensorFamily.LANDSAT8: _table(_OLI),
    SensorFamily.SENTINEL2: {
        name: BandIdentity(common, round(nm / 1000, 5), round(width / 1000, 5))
        for name, (common, nm, width) in _MSI.items()
    },
    SensorFamily.SENTINEL1: {p: BandIdentity(p.lower()) for p in ("VV", "VH", "HH", "HV")},
    # NAIP's bands are 1..4 (no names of their own): red, green, blue, near infrared
    SensorFamily.NAIP: {
        str(i + 1): BandIdentity(c) for i, c in enumerate(("red", "green", "blue", "nir"))
    },
}

#: Words for common names found in band descriptions.
_SYNONYMS = {"near-infrared": "nir", "nearinfrared": "nir", "nir1": "nir", "elevation": "dem"}
_BAND_KEY = re.compile(r"^(?:.*_)?B0*(\d{1,2})(A?)$", re.IGNORECASE)
_COLOURS = {"R": "red", "G": "green", "B": "blue", "N": "nir"}
_COLOUR_RUN = re.compile(r"(?:^|[_\-.])(RGBN|RGB|BGRN|BGR)(?:$|[_\-.])")


def _key(name: str) -> str:
    """A band name without zero padding or a product prefix: ``SR_B04`` -> ``B4``."""
    match = _BAND_KEY.match(name.strip())
    return f"B{int(match.group(1))}{match.group(2).upper()}" if match else name.strip().upper()


def table_identity(family: SensorFamily | str | None, name: str) -> BandIdentity | None:
    """A band's identity from its sensor's table (zero padding ignored), or None."""
    known = family if isinstance(family, SensorFamily) else SensorFamily.of(family)
    table = SENSOR_BANDS.get(known) if known is not None else None
    if table is None:
        return None
    by_key = {_key(n): identity for n, identity in table.items()}
    return by_key.get(_key(name))


def common_identity(text: str | None) -> BandIdentity | None:
    """The identity of a band named (or described) by a common name, else None."""
    if not text:
        return None
    word = re.sub(r"[\s_]+", "", text.strip().lower())
    word = _SYNONYMS.get(word, word)
    return BandIdentity(word) if word in COMMON_NAMES else None


def naming_sensor(names: Sequence[str]) -> SensorFamily | None:
    """The sensor whose band naming these names use, when only one does (``B8A``, ``B04``)."""
    if any(re.fullmatch(r"B(0\d|8A)", n.strip(), re.IGNORECASE) for n in names):
        return SensorFamily.SENTINEL2
    return None


def identify(
    names: Sequence[str],
    family: SensorFamily | str | None = None,
    stem: str = "",
    aliases: Mapping[str, str] | None = None,
) -> list[BandIdentity | None]:
    """What each band of a raster measures (the module docstring's order).

    Args:
        names: Band names in file order.
        family: Sensor family (file name or STAC), or None.
        stem: File name without extension (for a colour run such as ``_RGBN``).
        aliases: STAC common names -> band names.

    Returns:
        One identity per band, None where nothing says.
    """
    sensor = SensorFamily.of(str(family)) if family is not None else None
    sensor = sensor or naming_sensor(names)
    common_of = {band: common for common, band in (aliases or {}).items()}
    run = _COLOUR_RUN.search(stem.upper())
    colours = [_COLOURS[c] for c in run.group(1)] if run else []
    out: list[BandIdentity | None] = []
    for i, name in enumerate(names):
        from_table = table_identity(sensor, name)
        found = common_identity(common_of.get(name)) or common_identity(name) or from_table
        if found is not None and from_table is not None and found.common == from_table.common:
            found = from_table  # the table adds the wavelength
        if found is None and len(colours) == len(names) and name == str(i + 1):
            found = BandIdentity(colours[i])
        out.append(found)
    return out
