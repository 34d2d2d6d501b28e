"""The band rule of every stage.

By hand, by identity, by name, and file order only as a last resort, when one side's identities
are unknown.
"""

import warnings

import pytest

from geopera.core.errors import BandSelectionError, GeoperaNote
from geopera.data.identity import identify
from geopera.models.bandplan import (
    Bands,
    adapt_extra,
    parse_mapping,
    plan_bands,
    plan_for,
)
from geopera.models.loading import BackboneSource

S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
L8_RGB = ["B4", "B3", "B2"]
L8_OLI = ["B1", "B2", "B3", "B4", "B5", "B6", "B7"]


def _landsat_rgb() -> Bands:
    return Bands(L8_RGB, identify(L8_RGB, "landsat8"))


def test_a_landsat_backbone_finds_red_green_blue_in_a_sentinel2_scene() -> None:
    plan = plan_bands(_landsat_rgb(), Bands(S2, identify(S2)), 3)
    assert plan.rule == "by-identity"
    assert plan.names == ["B04", "B03", "B02"]
    assert plan.channels is None  # every input, in order
    assert [i.common for i in plan.identities if i] == ["red", "green", "blue"]
    assert "B01 (coastal)" in plan.notes[0]  # the bands left unused are named


def test_bands_are_never_put_in_file_order_when_both_sides_know_them() -> None:
    # a NAIP tile: bands 1..4 without descriptions, R G B N by its name; file order is R G B,
    # but the backbone wants them as Landsat's B4 B3 B2 listed in another order
    backbone = Bands(["B2", "B3", "B4"], identify(["B2", "B3", "B4"], "landsat8"))  # b, g, r
    naip = Bands(["1", "2", "3", "4"], identify(["1", "2", "3", "4"], None, "tile_RGBN"))
    plan = plan_bands(backbone, naip, 3)
    assert plan.rule == "by-identity"
    assert plan.indices == [2, 1, 0]  # blue, green, red: not 0, 1, 2


def test_a_sentinel2_backbone_keeps_the_seven_bands_it_shares_with_landsat8() -> None:
    plan = plan_bands(Bands(S2, identify(S2)), Bands(L8_OLI, identify(L8_OLI, "landsat8")), 13)
    assert plan.rule == "by-identity"
    # coastal, blue, green, red, nir08 (B8A <- B5), swir16, swir22
    assert plan.channels == [0, 1, 2, 3, 8, 11, 12]
    assert plan.names == ["B1", "B2", "B3", "B4", "B5", "B6", "B7"]
    assert "B05 (rededge)" in plan.notes[0]
    assert "B08 (nir)" in plan.notes[0]  # 33 nm from Landsat's nir08: not the same band


def test_inputs_the_data_lacks_are_an_error_where_the_stage_needs_them_all() -> None:
    with pytest.raises(BandSelectionError, match=r"lack the backbone's B05 \(rededge\)"):
        plan_bands(
            Bands(S2, identify(S2)), Bands(L8_OLI, identify(L8_OLI, "landsat8")), 13, None, False
        )
    nothing = Bands(["vv", "vh"], identify(["vv", "vh"]))
    with pytest.raises(BandSelectionError, match="--bands"):
        plan_bands(_landsat_rgb(), nothing, 3)  # SAR for an optical backbone: nothing shared


def test_nearest_wavelength_matches_bands_without_a_common_name() -> None:
    backbone = Bands(["x"], identify(["B8A"], "sentinel2"))  # nir08, 0.8647 um
    data = Bands(["a", "b"], [None, identify(["B5"], "landsat8")[0]])  # Landsat nir08
    assert plan_bands(backbone, data, 1).indices == [1]
    far = Bands(["a"], identify(["B4"], "landsat8"))  # red: far from nir08
    with pytest.raises(BandSelectionError):
        plan_bands(backbone, far, 1)


def test_by_name_when_the_backbone_knows_only_names() -> None:
    plan = plan_bands(Bands(L8_RGB), Bands(["B1", "B2", "B3", "B4", "B5"]), 3)
    assert plan.rule == "by-name"
    assert plan.indices == [3, 2, 1]


def test_file_order_only_when_identities_are_unknown_and_it_says_so() -> None:
    source = BackboneSource("vit_small_patch16_224", in_chans=3, bands=L8_RGB, state_dict={})
    source.identities = identify(L8_RGB, "landsat8")
    with pytest.warns(GeoperaNote, match="identities are unknown.*adapt_input_conv"):
        plan = plan_for(source, Bands(["1", "2", "3", "4", "5"], [None] * 5))
    assert plan.rule == "adapted"
    assert plan.indices == [0, 1, 2, 3, 4]


def test_random_initialisation_takes_the_data_bands_silently() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = plan_for(BackboneSource("vit_small_patch16_224"), Bands(["a", "b", "c", "d"]))
    assert plan.rule == "as-is"
    assert plan.names == ["a", "b", "c", "d"]


def test_bands_by_hand() -> None:
    mapping = parse_mapping(["red=B04", "green=B03", "B2=B02"])
    plan = plan_bands(_landsat_rgb(), Bands(S2, identify(S2)), 3, mapping)
    assert plan.rule == "by-hand"
    assert plan.names == ["B04", "B03", "B02"]
    assert not any("as you asked" in n for n in plan.notes)  # each input got its own kind
    forced = plan_bands(_landsat_rgb(), Bands(S2, identify(S2)), 3, {"red": "B08"})
    assert "puts B08 (nir) into the backbone's B4 (red) input" in forced.notes[0]
    assert forced.channels == [0]
    with pytest.raises(BandSelectionError, match="has no band 'swir'"):
        plan_bands(_landsat_rgb(), Bands(S2), 3, {"swir": "B11"})
    with pytest.raises(BandSelectionError, match="the data has no band 'B99'"):
        plan_bands(_landsat_rgb(), Bands(S2), 3, {"red": "B99"})
    with pytest.raises(BandSelectionError, match="must be SLOT=BAND"):
        parse_mapping(["red"])


def test_extra_bands_start_from_the_nearest_wavelength_input() -> None:
    backbone, data = _landsat_rgb(), Bands(S2, identify(S2))
    plan = adapt_extra(plan_bands(backbone, data, 3), backbone, data)
    assert plan.names[:3] == ["B04", "B03", "B02"]
    assert plan.names[3:] == ["B01", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
    assert plan.channels is not None
    # B01 (443 nm) starts from blue (input 2); B05 (704 nm) from red (input 0)
    assert plan.channels[3] == 2
    assert plan.channels[4] == 0
    assert plan.notes[-1].startswith("new inputs for B01 (coastal), B05 (rededge)")
    assert plan.notes[-1].endswith("each from the weights of the nearest band")
