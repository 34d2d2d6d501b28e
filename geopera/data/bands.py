"""Band names and presets.

Bands are named from, in this order: band-separate file names (``*_B2.TIF`` -> ``B2``), the
raster's band descriptions, a known sensor layout for the band count, or ``1..N``.
"""

import re
from collections.abc import Sequence
from enum import StrEnum

from geopera.core.errors import BandSelectionError

#: Band-suffix pattern for band-separate files: scene prefix, band token, optional tail.
BAND_FILE_RE = re.compile(
    r"^(?P<scene>.+?)[_\-.](?P<band>B\d{1,2}A?|VV|VH|HH|HV)(?P<tail>_[A-Za-z0-9]+)?$",
    re.IGNORECASE,
)


class SensorFamily(StrEnum):
    """The sensor families geopera recognises, from file names or STAC metadata.

    A raster item's ``family`` is one of these values, or its file name's leading token when the
    sensor is not recognised. Members compare equal to their string values.
    """

    LANDSAT8 = "landsat8"
    LANDSAT7 = "landsat7"
    LANDSAT5 = "landsat5"
    SENTINEL2 = "sentinel2"
    SENTINEL1 = "sentinel1"
    NAIP = "naip"

    @property
    def names_bands(self) -> bool:
        """Whether the family has a band naming of its own (``B4``, ``B04``, ``VV``).

        NAIP has none: its bands are generic imagery (1..4, or the file's descriptions).
        """
        return self is not SensorFamily.NAIP

    @classmethod
    def of(cls, name: str | None) -> "SensorFamily | None":
        """The member named ``name``, or None for a file-name token or None."""
        try:
            return cls(name) if name is not None else None
        except ValueError:
            return None

    @classmethod
    def from_stem(cls, stem: str) -> "SensorFamily | None":
        """The family recognised from the leading token of a file name, or None."""
        for family, pattern in _STEM_PATTERNS.items():
            if pattern.match(stem):
                return family
        return None

    @classmethod
    def from_stac(cls, text: str) -> "SensorFamily | None":
        """The family named by a STAC platform, constellation, collection or item id, or None."""
        for family, pattern in _STAC_PATTERNS.items():
            if pattern.search(text):
                return family
        return None


#: Leading tokens of file names (Landsat product ids, Sentinel product ids and MGRS tiles).
_STEM_PATTERNS: dict[SensorFamily, re.Pattern[str]] = {
    SensorFamily.LANDSAT8: re.compile(r"^L[COTE]0?[89]", re.I),
    SensorFamily.LANDSAT7: re.compile(r"^L[ET]0?7", re.I),
    SensorFamily.LANDSAT5: re.compile(r"^L[TM]0?[45]", re.I),
    SensorFamily.SENTINEL2: re.compile(r"^S2[AB]?|^T\d{2}[A-Z]{3}", re.I),
    SensorFamily.SENTINEL1: re.compile(r"^S1[AB]?", re.I),
}

#: STAC platform / constellation / collection patterns.
_STAC_PATTERNS: dict[SensorFamily, re.Pattern[str]] = {
    SensorFamily.SENTINEL2: re.compile(r"sentinel-?2", re.I),
    SensorFamily.SENTINEL1: re.compile(r"sentinel-?1", re.I),
    SensorFamily.LANDSAT8: re.compile(r"landsat-?[89]|landsat-c2", re.I),
    SensorFamily.LANDSAT7: re.compile(r"landsat-?7", re.I),
    SensorFamily.LANDSAT5: re.compile(r"landsat-?[45]", re.I),
    SensorFamily.NAIP: re.compile(r"naip", re.I),
}

_S2_BANDS = [
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
]

#: Stacked-file band layouts by sensor family and band count (when files carry no descriptions).
KNOWN_LAYOUTS: dict[tuple[str, int], list[str]] = {
    ("sentinel2", 13): _S2_BANDS,
    ("sentinel2", 12): [b for b in _S2_BANDS if b != "B10"],  # L2A drops the cirrus band
}

#: RGB presets by sensor family (band names in R, G, B order).
RGB_PRESETS: dict[str, list[str]] = {
    "landsat8": ["B4", "B3", "B2"],
    "landsat7": ["B3", "B2", "B1"],
    "landsat5": ["B3", "B2", "B1"],
    "sentinel2": ["B04", "B03", "B02"],
}

PRESETS = ("rgb",)


_STEM_BANDS_RE = re.compile(r"((?:B\d{1,2}A?){2,})", re.IGNORECASE)


def default_band_names(
    family: str | None, count: int, descriptions: Sequence[str | None], stem: str = ""
) -> list[str]:
    """Name the bands of a stacked raster.

    Args:
        family: Sensor family or None.
        count: Number of bands.
        descriptions: Band descriptions from the raster (may be None).
        stem: File name without extension; a run such as ``B2B3B4`` names the bands.

    Returns:
        One name per band.
    """
    if descriptions and all(descriptions) and len(set(descriptions)) == count:
        return [str(d) for d in descriptions]
    run = _STEM_BANDS_RE.search(stem)
    if run:
        names = re.findall(r"B\d{1,2}A?", run.group(1), re.IGNORECASE)
        if len(names) == count:
            return names
    if family is not None and (family, count) in KNOWN_LAYOUTS:
        return list(KNOWN_LAYOUTS[(family, count)])
    return [str(i + 1) for i in range(count)]


def _natural_key(name: str) -> tuple[str, int]:
    match = re.match(r"^([A-Za-z]*)(\d*)", name)
    prefix, digits = (match.group(1), match.group(2)) if match else (name, "")
    return (prefix.upper(), int(digits) if digits else -1)


def sort_band_names(names: Sequence[str]) -> list[str]:
    """Sort band names naturally (``B2 < B10``).

    Args:
        names: Band names.

    Returns:
        The names in natural order.
    """
    return sorted(names, key=_natural_key)


def resolve_bands(
    requested: Sequence[str] | str | None,
    available: Sequence[str],
    family: str | None,
    source_name: str,
) -> list[str]:
    """Turn a band request into concrete band names of one source.

    Args:
        requested: ``None`` (all bands), a preset name (``"rgb"``), or band names / 1-based
            indices as strings.
        available: Band names of the source, in file order.
        family: Sensor family of the source, for presets.
        source_name: Source name, for error messages.

    Returns:
        Band names, in the requested order.

    Raises:
        BandSelectionError: If a band or preset is unknown for this source.
    """
    if requested is None:
        return list(available)
    if isinstance(requested, str):
        requested = [requested]
    if len(requested) == 1 and requested[0].lower() in PRESETS:
        preset = requested[0].lower()
        if family in RGB_PRESETS and set(RGB_PRESETS[family]) <= set(available):
            return list(RGB_PRESETS[family])
        if len(available) in (3, 4) and family is None:
            return list(available[:3])
        raise BandSelectionError(
            f"preset {preset!r} is not defined for source {source_name!r} "
            f"(bands {', '.join(available)}); name the bands explicitly, e.g. --bands "
            f"{' '.join(available[:3])}"
        )
    out: list[str] = []
    for band in requested:
        if band in available:
            out.append(band)
        elif band.isdigit() and 1 <= int(band) <= len(available):
            out.append(available[int(band) - 1])
        else:
            raise BandSelectionError(
                f"band {band!r} not found in source {source_name!r}; its bands are "
                f"{', '.join(available)} (names, or 1-based indices 1..{len(available)})"
            )
    return out


def rgb_indices(family: str, bands: Sequence[str]) -> list[int] | None:
    """Indices of the R, G, B bands among the selected bands, when they are known.

    Args:
        family: Sensor family of the source (or its file-name token).
        bands: Selected band names, in order.

    Returns:
        ``[r, g, b]`` indices, or None (colour changes then skip saturation, hue, grayscale).
    """
    preset = RGB_PRESETS.get(family)
    if preset is not None:
        return [list(bands).index(b) for b in preset] if set(preset) <= set(bands) else None
    if list(bands[:3]) == ["1", "2", "3"] and len(bands) in (3, 4):
        return [0, 1, 2]  # generic 3/4-band imagery (RGB, RGBN)
    return None
