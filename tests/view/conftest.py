"""A predict output folder for the view tests, and a server on 127.0.0.1 that stops by itself."""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

from geopera.cli.main import main
from geopera.view.run import prepare
from tests.finetune.conftest import TINY_VIT

SLOVENIA = ("a_pretrain", "sentinel2_eolearn_slovenia")


@pytest.fixture(scope="session")
def predicted(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of ``geopera predict segmentation``: classes.tif, probs.tif, STAC items."""
    root = tmp_path_factory.mktemp("predicted")
    images = shared_data.joinpath(*SLOVENIA, "S2L1C_reference_scene*.tif")
    labels = shared_data / "b_segmentation" / "eolearn_slovenia_lulc" / "LULC.tif"
    code = main(["finetune", "segmentation", "--images", str(images), "--labels", str(labels),
                 "--set", "data.chip_size=32", "--set", "data.block_chips=1",
                 "--set", "data.ignore_value=0", "--max-steps", "2", "--out", str(root / "m"),
                 *TINY_VIT])  # fmt: skip
    assert code == 0
    out = root / "out"
    scene = shared_data.joinpath(*SLOVENIA, "S2L1C_reference_scene0.tif")
    outputs = ["--output", str(out / "classes.tif"), "--probabilities", str(out / "probs.tif")]
    code = main(["predict", "segmentation", "--model", str(root / "m"), "--input", str(scene),
                 *outputs])  # fmt: skip
    assert code == 0
    return out


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serving(paths: list[Path], scratch: Path, save: Path | None = None) -> Iterator[str]:
    """``geopera view``'s app on 127.0.0.1 in a thread; stopped when the block ends."""
    app, _ = prepare(paths, scratch, save)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the view server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
