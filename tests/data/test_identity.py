"""Band identities: the sensor tables against the published ones, and a raster's bands."""

import pytest

from geopera.core.identity import COMMON_NAMES, BandIdentity
from geopera.data.bands import SensorFamily
from geopera.data.identity import SENSOR_BANDS, identify, table_identity

#: Published centre wavelengths (µm), written here from the sources, not from the module:
#: Landsat 8 Data Users Handbook (OLI/TIRS); Chander, Markham & Helder 2009, Table 1 (TM, ETM+);
#: ESA Sentinel-2 User Handbook, Sentinel-2A MSI.
PUBLISHED = {
    SensorFamily.LANDSAT8: {
        "B1": 0.443, "B2": 0.482, "B3": 0.5613, "B4": 0.6546, "B5": 0.8646, "B6": 1.609,
        "B7": 2.201, "B8": 0.5917, "B9": 1.3737, "B10": 10.895, "B11": 12.005,
    },
    SensorFamily.LANDSAT7: {
        "B1": 0.483, "B2": 0.560, "B3": 0.662, "B4": 0.835, "B5": 1.648, "B6": 11.335,
        "B7": 2.206, "B8": 0.706,
    },
    SensorFamily.LANDSAT5: {
        "B1": 0.485, "B2": 0.569, "B3": 0.660, "B4": 0.840, "B5": 1.676, "B6": 11.435,
        "B7": 2.223,
    },
    SensorFamily.SENTINEL2: {
        "B01": 0.4427, "B02": 0.4924, "B03": 0.5598, "B04": 0.6646, "B05": 0.7041,
        "B06": 0.7405, "B07": 0.7828, "B08": 0.8328, "B8A": 0.8647, "B09": 0.9451,
        "B10": 1.3735, "B11": 1.6137, "B12": 2.2024,
    },
}  # fmt: skip
#: USGS's band ranges (µm): a centre must lie inside its band.
RANGES = {
    SensorFamily.LANDSAT8: {"B2": (0.45, 0.51), "B4": (0.64, 0.67), "B5": (0.85, 0.88)},
    SensorFamily.LANDSAT7: {"B3": (0.63, 0.69), "B4": (0.77, 0.90), "B7": (2.09, 2.35)},
    SensorFamily.LANDSAT5: {"B3": (0.63, 0.69), "B4": (0.76, 0.90), "B7": (2.08, 2.35)},
}


@pytest.mark.parametrize("family", list(PUBLISHED))
def test_sensor_table_matches_the_published_centres_within_5_nm(family: SensorFamily) -> None:
    table = SENSOR_BANDS[family]
    assert set(table) == set(PUBLISHED[family])  # every band, no other
    for name, centre in PUBLISHED[family].items():
        found = table[name].center_um
        assert found is not None
        assert abs(found - centre) <= 0.005, (family, name, found, centre)
    for name, (lo, hi) in RANGES.get(family, {}).items():
        assert lo <= (table[name].center_um or 0) <= hi
    assert all(i.common in COMMON_NAMES for i in table.values())


def test_common_names_follow_each_sensors_own_numbering() -> None:
    assert (table_identity("landsat8", "B4") or BandIdentity()).common == "red"
    assert (table_identity("landsat7", "B4") or BandIdentity()).common == "nir"
    assert (table_identity("landsat5", "B1") or BandIdentity()).common == "blue"
    assert (table_identity("sentinel2", "B4") or BandIdentity()).common == "red"  # padding
    assert (table_identity("sentinel1", "VH") or BandIdentity()).common == "vh"
    assert table_identity(None, "B4") is None


def test_identify_in_order_stac_names_table_stem() -> None:
    s2 = identify(["B02", "B8A"])  # Sentinel-2's naming, without a family
    assert [i.common for i in s2 if i] == ["blue", "nir08"]
    assert identify(["B4"], "landsat8")[0] == table_identity("landsat8", "B4")
    assert [i.common for i in identify(["Red", "NIR", "x"]) if i] == ["red", "nir"]
    assert identify(["Red", "NIR", "x"])[2] is None
    rgbn = identify(["1", "2", "3", "4"], None, "id_000051_naip_RGBN")
    assert [i.common for i in rgbn if i] == ["red", "green", "blue", "nir"]
    stac = identify(["visual_1", "B03"], "sentinel2", aliases={"red": "visual_1"})
    assert [i.common for i in stac if i] == ["red", "green"]
    assert [i.common for i in identify(["1", "2", "3"], None, "rmnp-rgb") if i] == [
        "red",
        "green",
        "blue",
    ]
    assert identify(["1", "2", "3"], None, "scene") == [None, None, None]  # nothing says
