"""What each band of a raster measures, from its names, its sensor and its metadata.

A band's identity (:class:`~geopera.core.identity.BandIdentity`) comes from, in this order:

1. STAC metadata (``eo:bands`` common names, kept as the item's ``aliases``);
2. the band's name when it is a common name itself (``red``, ``NIR``, ``vv``...);
3. the sensor's record (:mod:`geopera.data.sensors`), for the sensor of the file name or STAC
   item, or, for unnamed families, one recognised from the names (``B8A`` or zero-padded
   ``B04`` are Sentinel-2's);
4. a colour run in the file name (``_RGBN``, ``_RGB``) for bands named ``1..n``.

The user's ``--bands`` mapping, applied by :mod:`geopera.models.bandplan`, comes last and wins.
"""

import re
from collections.abc import Mapping, Sequence

from geopera.core.identity import COMMON_NAMES, BandIdentity
from geopera.data.sensors import naming_sensor, sensor

#: Words for common names found in band descriptions.
_SYNONYMS = {"near-infrared": "nir", "nearinfrared": "nir", "nir1": "nir", "elevation": "dem"}
_COLOURS = {"R": "red", "G": "green", "B": "blue", "N": "nir"}
_COLOUR_RUN = re.compile(r"(?:^|[_\-.])(RGBN|RGB|BGRN|BGR)(?:$|[_\-.])")


def table_identity(family: str | None, name: str) -> BandIdentity | None:
    """A band's identity from its sensor's record (zero padding ignored), or None."""
    known = sensor(family)
    return known.identity(name) if known is not None else None


def common_identity(text: str | None) -> BandIdentity | None:
    """The identity of a band named (or described) by a common name, else None."""
    if not text:
        return None
    word = re.sub(r"[\s_]+", "", text.strip().lower())
    word = _SYNONYMS.get(word, word)
    return BandIdentity(word) if word in COMMON_NAMES else None


def identify(
    names: Sequence[str],
    family: str | None = None,
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
    known = sensor(family) or naming_sensor(names)
    common_of = {band: common for common, band in (aliases or {}).items()}
    run = _COLOUR_RUN.search(stem.upper())
    colours = [_COLOURS[c] for c in run.group(1)] if run else []
    out: list[BandIdentity | None] = []
    for i, name in enumerate(names):
        from_table = known.identity(name) if known is not None else None
        found = common_identity(common_of.get(name)) or common_identity(name) or from_table
        if found is not None and from_table is not None and found.common == from_table.common:
            found = from_table  # the table adds the wavelength
        if found is None and len(colours) == len(names) and name == str(i + 1):
            found = BandIdentity(colours[i])
        out.append(found)
    return out
