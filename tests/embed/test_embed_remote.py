"""`geopera embed --archive` on a STAC catalog served over HTTP: one output per item, by its id."""

import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd

from tests.fakes.http import FakeStorage
from tests.fakes.stac import LANDSAT, ROI


def test_embed_a_served_stac_catalog(served: FakeStorage, tmp_path: Path) -> None:
    out = tmp_path / "emb"
    exe = Path(sys.executable).with_name("geopera")
    proc = subprocess.run(
        [
            str(exe),
            "embed",
            "--weights",
            "vit_small_patch16_224",
            "--archive",
            f"{served.url}/catalog.json",
            "--roi",
            ROI,
            "--level",
            "chip",
            "--chip-size",
            "64",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.stem for p in out.glob("*.parquet")) == sorted(LANDSAT)  # named by item id
    manifest = json.loads((out / "embeddings.json").read_text())
    assert len(manifest["rasters"]) == 2
    chips = gpd.read_parquet(out / f"{LANDSAT[0]}.parquet")
    assert len(chips) > 0
    assert served.count(".tif") > 0  # read over HTTP
