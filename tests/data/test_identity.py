"""Band identities: the sensor tables against the published ones, and a raster's bands."""

import pytest

from geopera.core.identity import COMMON_NAMES, BandIdentity, rgb_indices
from geopera.data.identity import identify, table_identity
from geopera.data.sensors import SENSORS, from_stac, from_stem, sensor

#: Published centre wavelengths (µm), written here from the sources, not from the module:
#: Landsat 8 Data Users Handbook (OLI/TIRS); Chander, Markham & Helder 2009, Table 1 (TM, ETM+);
#: ESA Sentinel-2 User Handbook, Sentinel-2A MSI; Planet's PlanetScope product specification
#: (the middle of each band range). Landsat 9 and HLS L30 carry OLI's bands, HLS S30 MSI's.
OLI = {
    "B1": 0.443, "B2": 0.482, "B3": 0.5613, "B4": 0.6546, "B5": 0.8646, "B6": 1.609,
    "B7": 2.201, "B8": 0.5917, "B9": 1.3737, "B10": 10.895, "B11": 12.005,
}  # fmt: skip
MSI = {
    "B01": 0.4427, "B02": 0.4924, "B03": 0.5598, "B04": 0.6646, "B05": 0.7041, "B06": 0.7405,
    "B07": 0.7828, "B08": 0.8328, "B8A": 0.8647, "B09": 0.9451, "B10": 1.3735, "B11": 1.6137,
    "B12": 2.2024,
}  # fmt: skip
PUBLISHED = {
    "landsat9": OLI,
    "hlsl30": OLI,
    "hlss30": MSI,
    "planetscope": {
        "coastal_blue": 0.443, "blue": 0.490, "green_i": 0.531, "green": 0.565, "yellow": 0.610,
        "red": 0.665, "rededge": 0.705, "nir": 0.865,
    },
    "landsat8": {
        "B1": 0.443, "B2": 0.482, "B3": 0.5613, "B4": 0.6546, "B5": 0.8646, "B6": 1.609,
        "B7": 2.201, "B8": 0.5917, "B9": 1.3737, "B10": 10.895, "B11": 12.005,
    },
    "landsat7": {
        "B1": 0.483, "B2": 0.560, "B3": 0.662, "B4": 0.835, "B5": 1.648, "B6": 11.335,
        "B7": 2.206, "B8": 0.706,
    },
    "landsat5": {
        "B1": 0.485, "B2": 0.569, "B3": 0.660, "B4": 0.840, "B5": 1.676, "B6": 11.435,
        "B7": 2.223,
    },
    "sentinel2": MSI,
}  # fmt: skip
#: USGS's band ranges (µm): a centre must lie inside its band.
RANGES = {
    "landsat8": {"B2": (0.45, 0.51), "B4": (0.64, 0.67), "B5": (0.85, 0.88)},
    "landsat7": {"B3": (0.63, 0.69), "B4": (0.77, 0.90), "B7": (2.09, 2.35)},
    "landsat5": {"B3": (0.63, 0.69), "B4": (0.76, 0.90), "B7": (2.08, 2.35)},
}


@pytest.mark.parametrize("family", list(PUBLISHED))
def test_sensor_table_matches_the_published_centres_within_5_nm(family: str) -> None:
    record = sensor(family)
    assert record is not None
    table = record.bands
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


def test_every_sensor_record_is_complete() -> None:
    families = [s.family for s in SENSORS]
    assert len(set(families)) == len(families)
    for record in SENSORS:
        assert record.family.isalnum(), record.family  # source names split on "_"
        assert record.reference, record.family
        assert record.bands
        for count, names in record.layouts.items():
            assert len(names) == count
            assert all(record.identity(n) is not None for n in names)


@pytest.mark.parametrize(
    ("stem", "family"),
    [
        ("LC09_L2SP_044034_20220101_20220103_02_T1_SR_B4", "landsat9"),
        ("LC08_L2SP_044034_20220101_20220103_02_T1_SR_B4", "landsat8"),
        ("LE07_L1TP_044034_20010101_20200917_02_T1_B3", "landsat7"),
        ("HLS.L30.T10SEG.2021001T184251.v2.0.B04", "hlsl30"),
        ("HLS.S30.T10SEG.2021001T184251.v2.0.B8A", "hlss30"),
        ("20230615_101010_12_2455_3B_AnalyticMS_SR_8b", "planetscope"),
        ("20190901_174519_0f4e_3B_AnalyticMS_SR", "planetscope"),
        ("T33TWM_20230101T100000_B04", "sentinel2"),
        ("m_3807504_ne_18_060_20181104", None),
    ],
)
def test_file_names_name_their_sensor(stem: str, family: str | None) -> None:
    found = from_stem(stem)
    assert (found.family if found else None) == family


def test_stac_items_name_their_sensor_the_specific_first() -> None:
    def family(*texts: str) -> str | None:
        found = from_stac(texts)
        return found.family if found else None

    assert family("landsat-9", "landsat-c2-l2") == "landsat9"
    assert family("landsat-8", "landsat-c2-l2") == "landsat8"
    assert family("LANDSAT-8", "HLSL30_2.0") == "hlsl30"  # the collection beats the platform
    assert family("sentinel-2b", "HLSS30_2.0") == "hlss30"
    assert family("PlanetScope", "PSScene") == "planetscope"
    assert family("sentinel-2a", "sentinel-2-l2a") == "sentinel2"
    assert family("unknown") is None


def test_rgb_comes_from_identities_never_from_names() -> None:
    landsat7 = identify(["B1", "B2", "B3", "B4"], "landsat7")
    assert rgb_indices(landsat7) == [2, 1, 0]  # B4 is near infrared here
    landsat8 = identify(["B2", "B3", "B4", "B5"], "landsat8")
    assert rgb_indices(landsat8) == [2, 1, 0]
    superdove = identify(list(PUBLISHED["planetscope"]), "planetscope")
    assert rgb_indices(superdove) == [5, 3, 1]  # green at 565 nm, not green I at 531
    earth_search = identify(["blue", "green", "red", "nir08", "rededge1"], "sentinel2")
    assert [i.center_um for i in earth_search if i] == [0.4924, 0.5598, 0.6646, 0.8647, 0.7041]
    assert rgb_indices(earth_search) == [2, 1, 0]
    assert rgb_indices(identify(["1", "2", "3"], None, "scene")) is None
