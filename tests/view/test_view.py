"""``geopera view``: the page, layers.json and tiles of a predict output and of an embed folder."""

import http.client
import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import morecantile
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from geopera.view.run import prepare
from tests.conftest import CliResult
from tests.pretrain.conftest import geopera_exe
from tests.view.conftest import free_port

TMS = morecantile.tms.get("WebMercatorQuad")


def alpha(png: bytes) -> np.ndarray:
    """The alpha channel of a PNG tile."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))[..., 3]


def inside_tile(bounds: list[float], zoom: int = 15) -> morecantile.Tile:
    """The tile at the centre of a layer's bounds."""
    w, s, e, n = bounds
    return TMS.tile((w + e) / 2, (s + n) / 2, zoom)


def wait_for(url: str, proc: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"geopera view ended: {proc.stderr.read() if proc.stderr else ''}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {seconds} s")


def raw_get(port: int, path: str) -> int:
    """The status of a request sent as written (no client normalises its dots)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    status = conn.getresponse().status
    conn.close()
    return status


def test_a_predict_output_and_an_embed_folder_are_served_and_stop_on_ctrl_c(
    predicted: Path, embedded: Path
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [geopera_exe(), "view", str(predicted), str(embedded), "--no-browser", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(url + "/layers.json", proc)
        page = httpx.get(url + "/")
        assert page.status_code == 200
        assert "/static/maplibre-gl.js" in page.text
        assert httpx.get(url + "/static/maplibre-gl.js").status_code == 200
        layers = {la["name"]: la for la in httpx.get(url + "/layers.json").json()["layers"]}
        pca = layers.pop(next(n for n in layers if n.endswith("embeddings (PCA)")))
        chips = layers.pop(next(n for n in layers if n.endswith(": chips")))
        assert set(layers) == {"classes.tif", "probs.tif"}
        tile = inside_tile(pca["bounds"], 14)
        assert alpha(httpx.get(url + pca["url"].format(z=tile.z, x=tile.x, y=tile.y)).content).any()
        assert httpx.get(url + chips["url"]).json()["features"]
        classes = layers["classes.tif"]
        assert classes["url"].endswith("/{z}/{x}/{y}.png")
        assert classes["legend"]["kind"] == "classes"
        assert [e["label"] for e in classes["legend"]["entries"]]  # the class names
        assert layers["probs.tif"]["legend"]["kind"] == "ramp"
        w, s, e, n = classes["bounds"]
        assert 14 < w < e < 15  # Slovenia, in degrees
        assert 45 < s < n < 46
        tile = inside_tile(classes["bounds"])
        path = classes["url"].format(z=tile.z, x=tile.x, y=tile.y)
        inside = httpx.get(url + path)
        assert inside.headers["content-type"] == "image/png"
        assert alpha(inside.content).any()  # painted pixels
        outside = httpx.get(url + classes["url"].format(z=15, x=0, y=0))
        assert outside.status_code == 200
        assert not alpha(outside.content).any()  # an empty tile, not an error
        for attack in ("/static/../../etc/passwd", "/static/..%2f..%2fetc%2fpasswd",
                       "/tiles/..%2f..%2fetc/1/1/1.png", "/vector/../classes.tif"):  # fmt: skip
            assert raw_get(port, attack) == 404
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert f"http://127.0.0.1:{port}/" in out
    assert "stopped" in out


def test_an_embed_folder_is_searched_by_clicking(embedded: Path, tmp_path: Path) -> None:
    app, _ = prepare([embedded], tmp_path / "scratch", save=tmp_path / "saved")
    client = TestClient(app)
    info = client.get("/layers.json").json()
    assert info["search"] is True
    assert info["save"] is True
    kinds = {la["legend"]["kind"]: la for la in info["layers"]}
    assert set(kinds) == {"rgb", "outline"}  # the PCA of the tokens, the chip footprints
    pca = kinds["rgb"]
    tile = inside_tile(pca["bounds"], 14)
    assert alpha(client.get(pca["url"].format(z=tile.z, x=tile.x, y=tile.y)).content).any()
    chips = client.get(kinds["outline"]["url"]).json()
    assert chips["type"] == "FeatureCollection"
    assert "embedding" not in chips["features"][0]["properties"]
    lon, lat = np.asarray(chips["features"][3]["geometry"]["coordinates"][0]).mean(0)
    answer = client.get(f"/search?lon={lon}&lat={lat}&top=5").json()
    assert answer["id"] == "q1"
    (heatmap,) = answer["layers"]
    assert heatmap["legend"]["kind"] == "ramp"
    tile = inside_tile(heatmap["bounds"], 14)
    assert alpha(client.get(heatmap["url"].format(z=tile.z, x=tile.x, y=tile.y)).content).any()
    top = answer["top"]["features"]
    assert [f["properties"]["rank"] for f in top] == [1, 2, 3, 4, 5]
    scores = [f["properties"]["similarity"] for f in top]
    assert scores == sorted(scores, reverse=True)
    saved = Path(client.post("/save/q1").json()["saved"])
    assert saved.parent == tmp_path / "saved"
    names = sorted(p.name for p in saved.iterdir())
    assert "top_chips.geojson" in names
    assert "query.json" in names
    assert any(n.startswith("similarity_") and n.endswith(".tif") for n in names)
    assert client.post("/save/q9").status_code == 400
    far = client.get("/search?lon=0&lat=0")
    assert far.status_code == 400
    assert "outside the embeddings" in far.json()["detail"]
    # a drawn box: the mean of the tokens inside it, as embed similar answers a polygon
    ring = np.asarray(chips["features"][3]["geometry"]["coordinates"][0])  # (5, 2) lon, lat
    (w, s), (e, n) = ring.min(0), ring.max(0)
    boxed = client.get(f"/search?bbox={w},{s},{e},{n}&top=3").json()
    assert boxed["id"] == "q2"
    assert len(boxed["top"]["features"]) == 3
    query = json.loads((tmp_path / "scratch" / "queries" / "q2" / "query.json").read_text())
    assert query["query"].startswith("POLYGON((")
    assert client.get("/search?bbox=1,2,3").status_code == 400


def test_bad_paths_and_a_busy_port_are_one_line(
    predicted: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    missing = cli("view", str(tmp_path / "nope.tif"), "--no-browser", "--port", str(free_port()))
    assert missing.returncode != 0
    assert "does not exist" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = cli("view", str(predicted), "--no-browser", "--port", str(port))
    assert busy.returncode != 0
    assert f"port {port} on 127.0.0.1 is busy: choose another --port" in busy.stderr
    assert len(busy.stderr.strip().splitlines()) == 1
    chips = tmp_path / "chips.tif"
    chips.write_bytes(b"not a raster")
    bad = cli("view", str(chips), "--no-browser", "--port", str(free_port()))
    assert bad.returncode != 0
    assert len(bad.stderr.strip().splitlines()) == 1


def test_another_host_is_said_out_loud(
    predicted: Path, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self: None)  # the test stops at serving
    result = cli("view", str(predicted), "--no-browser", "--host", "0.0.0.0", "--port",
                 str(free_port()))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "note: listening on 0.0.0.0, not only this machine" in result.stdout


def test_outputs_carry_stac_items_that_pystac_validates(predicted: Path, embedded: Path) -> None:
    import pystac

    catalog = pystac.Catalog.from_file(str(predicted / "catalog.json"))
    items = {item.id: item for item in catalog.get_items()}
    assert set(items) == {"classes.tif", "probs.tif"}
    for item in items.values():
        item.validate()  # core, proj, raster and classification schemas, offline
        assert item.properties["geopera:task"] == "segmentation"
        (via,) = [link for link in item.links if link.rel == "via"]
        assert via.href.endswith("model.ckpt")
    classes = items["classes.tif"].assets["data"].extra_fields["classification:classes"]
    assert {c["value"] for c in classes} <= {1, 2, 3, 4, 8}
    assert "classification:classes" not in items["probs.tif"].assets["data"].extra_fields
    embeddings = pystac.Catalog.from_file(str(embedded / "catalog.json"))
    levels = {}
    for item in embeddings.get_items():
        item.validate()
        levels[item.properties["emb:level"]] = item
        assert item.properties["emb:model"] == json.loads(
            (embedded / "embeddings.json").read_text())["model"]  # fmt: skip
        assert item.properties["emb:dimensions"] > 0
        assert any(link.rel == "via" for link in item.links)  # the backbone card
    assert set(levels) == {"patch", "chip"}


def test_archive_inspect_reads_a_predict_catalog(
    predicted: Path, cli: Callable[..., CliResult]
) -> None:
    result = cli("archive", "inspect", str(predicted / "catalog.json"), "--json")
    assert result.returncode == 0, result.stderr
    sources = json.loads(result.stdout)["sources"]
    assert sorted(len(s["files"]) for s in sources) == [1, 1]  # classes.tif and probs.tif


def test_a_catalog_shows_only_the_files_inside_its_folder(predicted: Path, tmp_path: Path) -> None:
    """A catalog from someone else is data: remote links are not fetched, outside files not read."""
    import shutil

    folder = tmp_path / "catalog"
    folder.mkdir()
    shutil.copy(predicted / "classes.tif", folder / "inside.tif")
    shutil.copy(predicted / "classes.tif", tmp_path / "outside.tif")
    assets = {
        "a": {"href": "./inside.tif"},
        "b": {"href": "../outside.tif"},
        "c": {"href": "https://example.invalid/remote.tif"},
    }
    (folder / "i.json").write_text(json.dumps({"type": "Feature", "assets": assets}))
    links = [{"rel": "item", "href": "./i.json"},
             {"rel": "item", "href": "https://example.invalid/item.json"},
             {"rel": "item", "href": "../../etc/passwd"}]  # fmt: skip
    (folder / "catalog.json").write_text(json.dumps({"type": "Catalog", "links": links}))
    _, session = prepare([folder / "catalog.json"], tmp_path / "scratch")
    assert [layer.path.name for layer in session.layers.values()] == ["inside.tif"]
