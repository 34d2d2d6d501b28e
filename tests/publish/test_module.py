"""The generated WeightsEnum module keeps every value exactly (Python literals, not text edits)."""

from pathlib import Path

from geopera.publish.module import load_module, module_text

TRICKY = {
    "model": "vit_small_patch16_224",
    "in_chans": 3,
    "dataset": "null island, true colour, false-colour composites",
    "bands": ['B4 "red"', "B3 'green'", "nullable\\true"],
    "publication": "https://example.org/true/false/null?x=1",
    "license": "CC-BY-4.0",
    "notes": "Zürich, São Paulo, 東京, ½ m",
    "flags": [True, False, None],
    "resolution": [30.0, 0.5],
    "steps": None,
}


def test_meta_round_trips_through_the_generated_module(tmp_path: Path) -> None:
    path = tmp_path / "tricky_weights.py"
    text = module_text(
        "ViTSmall16_Tricky_Weights",
        "TRICKY",
        "file:///w/a'b.pth",
        TRICKY,
        [0.5, 1.5, 2.5],
        [1.0, 2.0, 3.0],
    )
    path.write_text(text, encoding="utf-8")
    module = load_module(path)  # deliberately: this test imports what it generated
    member = module.ViTSmall16_Tricky_Weights.TRICKY
    assert member.meta == TRICKY
    assert member.url == "file:///w/a'b.pth"
    normalize = member.transforms[0]
    assert list(normalize.mean) == [0.5, 1.5, 2.5]
    assert list(normalize.std) == [1.0, 2.0, 3.0]
