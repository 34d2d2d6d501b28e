"""Pretraining straight from a STAC catalog served over HTTP, with forked DataLoader workers."""

import json
from pathlib import Path

from tests.fakes.http import FakeStorage
from tests.fakes.stac import ROI
from tests.pretrain.conftest import TINY, run_cli


def test_pretrain_from_a_served_stac_catalog(served: FakeStorage, tmp_path: Path) -> None:
    out = tmp_path / "run"
    tiles = tmp_path / "tiles"
    proc = run_cli(
        "pretrain",
        "--archive",
        f"{served.url}/catalog.json",
        "--roi",
        ROI,
        "--bands",
        "red",
        "green",
        "blue",
        "--cache",
        str(tiles),
        *TINY,
        "--set",
        "data.patch_size=32",
        "--max-steps",
        "2",
        "--workers",
        "2",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "completed"
    assert (out / "backbone.pth").is_file()
    (source,) = json.loads((out / "inventory.json").read_text())["sources"]
    assert source["selected_bands"] == ["B4", "B3", "B2"]  # common names -> the item's bands
    assert all(f.startswith(f"/vsicurl/{served.url}/landsat/") for f in source["files"])
    assert served.count(".tif") > 0  # the pixels came over HTTP...
    assert list(tiles.glob("*.npy"))  # ...through the tile cache
