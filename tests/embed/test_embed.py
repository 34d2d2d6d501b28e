"""`geopera embed` and `geopera embed similar` on a real 13-band Sentinel-2 scene."""

import json
import math
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch

from geopera.embed.run import embed
from geopera.models.loading import build_vit
from tests.conftest import TINY_VIT, CliResult
from tests.pretrain.conftest import geopera_exe, run_cli

SCENE = "c_change_detection/oscd_bercy/T1_S2L1C_13bands_10m.tif"


@pytest.mark.slow
def test_done_when_vit_small_on_a_sentinel2_scene(shared_data: Path, tmp_path: Path) -> None:
    """The issue's check, through the CLI: patch COG + chip GeoParquet, then a similarity map."""
    scene = shared_data / SCENE
    out = tmp_path / "emb"
    proc = run_cli(
        "embed",
        "--weights",
        "vit_small_patch16_224",
        "--input",
        str(scene),
        "--level",
        "both",
        "--chip-size",
        "64",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with rasterio.open(scene) as src, rasterio.open(out / f"{scene.stem}.tif") as cog:
        assert cog.crs == src.crs
        assert cog.count == 384  # ViT-S embedding width
        assert (cog.width, cog.height) == (src.width // 16, src.height // 16)
        px = abs(src.transform.a) * 16
        for a, b in zip(cog.bounds, src.bounds, strict=True):
            assert abs(a - b) <= px + 1e-9  # within one token of the input's bounds
        assert cog.transform.a == pytest.approx(src.transform.a * 16)
        assert cog.dtypes[0] == "float16"
        assert cog.profile.get("tiled")
        tokens = cog.read()
    chips = gpd.read_parquet(out / f"{scene.stem}.parquet")
    rows, cols = math.ceil(tokens.shape[1] / 4), math.ceil(tokens.shape[2] / 4)
    assert len(chips) == rows * cols  # every chip of the scene has valid tokens
    assert chips.crs == rasterio.open(scene).crs
    assert {len(e) for e in chips["embedding"]} == {384}
    # a chip's embedding is the mean of its patch tokens
    first = chips[chips["chip_id"] == f"{scene.stem}:0:0"].iloc[0]
    expected = tokens[:, :4, :4].astype(np.float32).reshape(384, -1).mean(1)
    assert np.allclose(first["embedding"], expected, atol=1e-2)
    manifest = json.loads((out / "embeddings.json").read_text())
    assert manifest["rasters"][0]["band_rule"] == "as-is"

    sim = tmp_path / "sim"
    with rasterio.open(out / f"{scene.stem}.tif") as cog:
        x, y = cog.xy(5, 7)  # centre of token (row 5, col 7)
    proc = run_cli(
        "embed",
        "similar",
        "--embeddings",
        str(out),
        "--query",
        f"POINT({x} {y})",
        "--top",
        "3",
        "--out",
        str(sim),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with rasterio.open(sim / f"similarity_{scene.stem}.tif") as s:
        assert (s.width, s.height, s.crs) == (tokens.shape[2], tokens.shape[1], cog.crs)
        values = s.read(1)
    assert values[5, 7] == pytest.approx(1.0, abs=1e-3)
    assert np.nanmax(values) <= 1.0 + 1e-3
    top = gpd.read_file(sim / "top_chips.geojson")
    assert list(top["rank"]) == [1, 2, 3]
    assert top["similarity"].is_monotonic_decreasing


def test_tokens_equal_a_direct_timm_forward(
    shared_data: Path, tmp_path: Path, backbone: Path
) -> None:
    """Band rule by name, recorded normalisation, timm forward: the COG holds those tokens."""
    scene = shared_data / SCENE
    summary = embed([str(scene)], tmp_path / "e", weights=str(backbone), chip_size=64)
    entry = summary.manifest.rasters[0]
    assert entry.band_names == ["B04", "B03", "B02"]
    assert entry.bands == [4, 3, 2]
    assert entry.band_rule == "by-identity"  # B04, B03, B02: Sentinel-2's red, green, blue
    norm = entry.normalisation
    with rasterio.open(scene) as src:
        raw = src.read([4, 3, 2], window=rasterio.windows.Window(64, 128, 64, 64))
    x = torch.from_numpy(raw.astype(np.float32))[None]  # (1, 3, 64, 64)
    lo, hi = torch.tensor(norm.p2).view(1, 3, 1, 1), torch.tensor(norm.p98).view(1, 3, 1, 1)
    x = ((x - lo) / (hi - lo)).clamp(0, 1)
    x = (x - torch.tensor(norm.mean).view(1, 3, 1, 1)) / torch.tensor(norm.std).view(1, 3, 1, 1)
    vit = build_vit("vit_small_patch16_224", 3, 64, TINY_VIT)
    vit.load_state_dict(torch.load(backbone / "backbone.pth", weights_only=True))
    with torch.no_grad():
        direct = vit.eval().forward_features(x)[0, 1:].reshape(4, 4, 32)  # (h, w, D)
    with rasterio.open(tmp_path / "e" / f"{scene.stem}.tif") as cog:
        stored = cog.read(window=rasterio.windows.Window(4, 8, 4, 4)).astype(np.float32)
    assert np.allclose(stored.transpose(1, 2, 0), direct.numpy(), atol=2e-2, rtol=1e-2)


def test_int8_keeps_the_values_within_one_step(
    shared_data: Path, tmp_path: Path, backbone: Path
) -> None:
    scene = shared_data / SCENE
    embed([str(scene)], tmp_path / "f", weights=str(backbone), chip_size=64, level="patch")
    embed(
        [str(scene)],
        tmp_path / "q",
        weights=str(backbone),
        chip_size=64,
        level="patch",
        dtype="int8",
    )
    with rasterio.open(tmp_path / "f" / f"{scene.stem}.tif") as f:
        full = f.read().astype(np.float32)
    with rasterio.open(tmp_path / "q" / f"{scene.stem}.tif") as q:
        assert q.dtypes[0] == "int8"
        scales = np.array(q.scales)[:, None, None]
        offsets = np.array(q.offsets)[:, None, None]
        back = q.read().astype(np.float32) * scales + offsets
    assert not (tmp_path / "q" / f"{scene.stem}.parquet").exists()
    assert np.all(np.abs(back - full) <= scales * 0.5 + np.abs(full) * 1e-3 + 1e-3)


def test_interrupted_run_resumes_to_the_same_result(
    shared_data: Path, tmp_path: Path, backbone: Path
) -> None:
    scene = str(shared_data / SCENE)
    args = {"weights": str(backbone), "chip_size": 64, "batch_size": 6}
    embed([scene], tmp_path / "whole", **args)

    def stop_in_row_three(done: int, total: int) -> None:
        if done > 12:  # two rows of six chips are saved
            raise KeyboardInterrupt

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        embed([scene], out, progress=stop_in_row_three, **args)
    assert not out.exists()  # nothing presented as complete
    rows = sorted((tmp_path / ".resumed.partial" / "rows").rglob("*.npz"))
    assert len(rows) == 2
    with pytest.raises(Exception, match="interrupted run left"):
        embed([scene], out, **args)
    with pytest.raises(Exception, match="these differ: chip_size"):
        embed([scene], out, resume=True, **{**args, "chip_size": 32})
    summary = embed([scene], out, resume=True, **args)
    assert summary.resumed_rows == 2
    assert not (tmp_path / ".resumed.partial").exists()
    name = Path(scene).stem
    with (
        rasterio.open(tmp_path / "whole" / f"{name}.tif") as a,
        rasterio.open(out / f"{name}.tif") as b,
    ):
        assert np.array_equal(a.read(), b.read(), equal_nan=True)
    left = gpd.read_parquet(tmp_path / "whole" / f"{name}.parquet")
    right = gpd.read_parquet(out / f"{name}.parquet")
    assert left.drop(columns="embedding").equals(right.drop(columns="embedding"))


def test_roi_masks_tokens_and_chips(shared_data: Path, tmp_path: Path, backbone: Path) -> None:
    scene = shared_data / SCENE
    with rasterio.open(scene) as src:
        left, bottom, right, top = src.bounds
    mid_x = (left + right) / 2
    roi = f"EPSG:4326;POLYGON(({left} {bottom}, {mid_x} {bottom}, {mid_x} {top}, {left} {top}, {left} {bottom}))"  # noqa: E501
    summary = embed([str(scene)], tmp_path / "r", weights=str(backbone), chip_size=64, roi=roi)
    with rasterio.open(tmp_path / "r" / f"{scene.stem}.tif") as cog:
        data = cog.read(1)
        xs = np.array([cog.xy(0, c)[0] for c in range(cog.width)])
    inside = xs < mid_x
    assert not np.isnan(data[:, inside]).any()
    assert np.isnan(data[:, ~inside]).all()
    chips = gpd.read_parquet(tmp_path / "r" / f"{scene.stem}.parquet")
    assert len(chips) == summary.manifest.rasters[0].chips_written
    assert (chips.geometry.bounds["minx"] < mid_x).all()


@pytest.mark.slow
def test_bad_input_is_one_line_and_writes_nothing(
    shared_data: Path, tmp_path: Path, backbone: Path, cli: Callable[..., CliResult]
) -> None:
    scene = str(shared_data / SCENE)
    out = tmp_path / "out"
    cases = [
        (["--weights", str(backbone), "--roi", "10,10,10.1,10.1"], "does not overlap"),
        (["--weights", str(backbone), "--chip-size", "40"], "not a multiple of the backbone"),
    ]
    for i, (extra, message) in enumerate(cases):  # one real process; the rest in this one
        run = run_cli if i == 0 else cli
        proc = run("embed", "--input", scene, "--out", str(out), "--no-progress", *extra)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not out.exists()
        assert not list(tmp_path.glob(".out*"))
    # a backbone whose bands the raster lacks (by name, and another count)
    card = json.loads((backbone / "backbone.json").read_text())
    sar = [{"common": p, "center_um": None, "width_um": None} for p in ("hh", "hv", "vv")]
    other = tmp_path / "other"
    other.mkdir()
    (other / "backbone.pth").write_bytes((backbone / "backbone.pth").read_bytes())
    (other / "backbone.json").write_text(
        json.dumps({**card, "bands": ["HH", "HV", "VV"], "band_identities": sar})
    )
    proc = cli("embed", "--input", scene, "--out", str(out), "--weights", str(other))
    assert proc.returncode == 2
    assert "lack the backbone's HH (hh), HV (hv), VV (vv)" in proc.stderr
    assert not out.exists()
    # an existing output folder is refused, and replaced only with --overwrite
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    again = ["embed", "--input", scene, "--out", str(out), "--weights", str(backbone)]
    again += ["--chip-size", "64", "--level", "chip", "--no-progress"]
    proc = cli(*again)
    assert proc.returncode == 2
    assert "pass --overwrite" in proc.stderr
    assert (out / "mine.txt").read_text() == "keep"
    proc = cli(*again, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "T1_S2L1C_13bands_10m.parquet",
        "T1_S2L1C_13bands_10m.parquet.item.json",  # its STAC item
        "catalog.json",
        "embeddings.json",
    ]
    # a query outside the extent, or an unknown chip id
    for query in ("POINT(50 10)", "nowhere:1:2"):
        proc = cli(
            "embed",
            "similar",
            "--embeddings",
            str(out),
            "--query",
            query,
            "--crs",
            "EPSG:4326",
            "--out",
            str(tmp_path / "s"),
        )
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "s").exists()


def test_chips_are_read_while_the_model_computes_and_rows_saved_behind(
    shared_data: Path, tmp_path: Path, backbone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geopera.embed.forward as embed_chips
    import geopera.embed.run as embed_run
    from geopera.embed.backbone import Embedder

    model_running = threading.Event()
    read_during_model = threading.Event()
    saved_on: set[str] = set()
    real_read, real_tokens, real_save = embed_chips.read_strip, Embedder.tokens, embed_run.save_row

    def watched_read(*args: Any) -> Any:  # the real functions, observed
        if model_running.is_set() and threading.current_thread() is not threading.main_thread():
            read_during_model.set()
        return real_read(*args)

    def slow_tokens(self: Embedder, raw: torch.Tensor) -> torch.Tensor:
        model_running.set()
        read_during_model.wait(timeout=10)  # returns at once when the reader is ahead
        model_running.clear()
        return real_tokens(self, raw)

    def watched_save(*args: Any) -> None:
        saved_on.add(threading.current_thread().name)
        real_save(*args)

    monkeypatch.setattr(embed_chips, "read_strip", watched_read)
    monkeypatch.setattr(Embedder, "tokens", slow_tokens)
    monkeypatch.setattr(embed_run, "save_row", watched_save)
    scene = str(shared_data / SCENE)
    summary = embed(
        [scene], tmp_path / "e", weights=str(backbone), chip_size=64, batch_size=4, pipeline=True
    )
    assert read_during_model.is_set()
    assert saved_on == {"geopera-writer"}
    assert (summary.out / f"{Path(scene).stem}.tif").is_file()


def test_a_second_embed_into_the_same_out_is_refused_with_the_first_pid(
    shared_data: Path, tmp_path: Path, backbone: Path, cli: Callable[..., CliResult]
) -> None:
    out = tmp_path / "e"
    args = ["embed", "--input", str(shared_data / SCENE), "--out", str(out)]
    args += ["--weights", str(backbone), "--chip-size", "64", "--no-progress"]
    first = subprocess.Popen(  # a real process, held while it embeds
        [geopera_exe(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lock = tmp_path / ".e.lock"
    deadline = time.time() + 120
    while not lock.is_file() and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert lock.is_file(), "the first run never took the lock"
    second = cli(*args, "--resume")  # even --resume may not write beside a live run
    assert second.returncode == 2
    assert f"in use by process {first.pid}" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert (out / "embeddings.json").is_file()
    assert not lock.exists()  # released
