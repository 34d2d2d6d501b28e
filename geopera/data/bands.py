"""Band names and presets.

Bands are named from, in this order: band-separate file names (``*_B2.TIF`` -> ``B2``), the
raster's band descriptions, the sensor's layout for the band count
(:attr:`geopera.data.sensors.Sensor.layouts`), or ``1..N``.
"""

import re
from collections.abc import Mapping, Sequence

from geopera.core.errors import BandSelectionError
from geopera.core.identity import rgb_indices
from geopera.data.identity import identify
from geopera.data.sensors import sensor

#: Band-suffix pattern for band-separate files: scene prefix, band token, optional tail.
BAND_FILE_RE = re.compile(
    r"^(?P<scene>.+?)[_\-.](?P<band>B\d{1,2}A?|VV|VH|HH|HV)(?P<tail>_[A-Za-z0-9]+)?$",
    re.IGNORECASE,
)


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
    known = sensor(family)
    layout = known.layout(count) if known is not None else None
    return layout or [str(i + 1) for i in range(count)]


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
    aliases: Mapping[str, str] | None = None,
) -> list[str]:
    """Turn a band request into concrete band names of one source.

    Args:
        requested: ``None`` (all bands), a preset name (``"rgb"``), or band names, common names
            known to the source's STAC metadata, or 1-based indices, as strings.
        available: Band names of the source, in file order.
        family: Sensor family of the source.
        source_name: Source name, for error messages.
        aliases: Common names -> band names, from STAC metadata.

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
        rgb = rgb_indices(identify(available, family, aliases=aliases))
        if rgb is not None:
            return [available[i] for i in rgb]
        if len(available) in (3, 4) and family is None:
            return list(available[:3])
        raise BandSelectionError(
            f"preset {requested[0].lower()!r} needs bands identified as red, green and blue; "
            f"source {source_name!r} has {', '.join(available)}: name the bands explicitly, "
            f"e.g. --bands {' '.join(available[:3])}"
        )
    out: list[str] = []
    for band in ((aliases or {}).get(b, b) for b in requested):
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
