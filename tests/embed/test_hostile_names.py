"""Names from outside in ``embed`` and ``embed similar`` never leave the output folder."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import rasterio

from geopera.embed.run import embed
from tests.conftest import EMBEDDED_SCENE, CliResult
from tests.fakes.hostile import files_under


def test_input_names_become_safe_distinct_outputs(
    shared_data: Path, backbone: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    scene = shared_data / EMBEDDED_SCENE
    hostile = [inputs / "..%2f..%2fCON. .tif", inputs / "..%2F..%2Fcon. .tif"]  # clash once cleaned
    for path in hostile:
        shutil.copy(scene, path)
    out = tmp_path / "deep" / "emb"
    summary = embed([str(p) for p in hostile], out, weights=str(backbone), chip_size=64)
    names = [r.name for r in summary.manifest.rasters]
    assert len({n.casefold() for n in names}) == 2
    assert files_under(tmp_path) == files_under(out) | set(hostile)
    for raster in summary.manifest.rasters:
        assert (out / str(raster.patches)).resolve().parent == out.resolve()


def test_similar_takes_no_file_name_from_embeddings_json(
    embedded: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    tampered = tmp_path / "emb"
    shutil.copytree(embedded, tampered)
    manifest = json.loads((tampered / "embeddings.json").read_text())
    manifest["rasters"][0]["name"] = "../../../escaped"
    (tampered / "embeddings.json").write_text(json.dumps(manifest))
    before = files_under(tmp_path)
    out = tmp_path / "sim"
    with rasterio.open(tampered / manifest["rasters"][0]["patches"]) as ds:
        x, y = ds.xy(ds.height // 2, ds.width // 2)
        crs = ds.crs.to_string()
    args = ["embed", "similar", "--embeddings", str(tampered), "--query", f"POINT({x} {y})"]
    result = cli(*args, "--crs", crs, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert files_under(tmp_path) - before == files_under(out)
    assert [p.name for p in out.glob("similarity_*.tif")] == ["similarity_escaped.tif"]
