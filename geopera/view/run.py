"""``geopera view``: discover the layers, start the server, stop on Ctrl-C."""

import contextlib
import errno
import socket
import tempfile
import threading
import webbrowser
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from geopera.view.discover import discover
from geopera.view.layers import ViewError
from geopera.view.search import Search
from geopera.view.server import Session, create_app

#: Hosts that only this machine reaches.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_port(host: str, port: int) -> None:
    """Refuse a port that is taken (one line), before any work.

    Raises:
        ViewError: If ``host:port`` cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            why = "is busy" if err.errno == errno.EADDRINUSE else f"cannot be used ({err.strerror})"
            raise ViewError(f"port {port} on {host} {why}: choose another --port") from err


def prepare(
    paths: list[Path], scratch: Path, save: Path | None = None, basemap: str | None = None
) -> tuple[FastAPI, Session]:
    """The app for ``paths`` (layers found, PCA computed, chips loaded).

    Args:
        paths: geopera outputs, rasters, vector files, folders or STAC catalogs.
        scratch: The session's scratch folder (PCA rasters, query answers).
        save: Where saved query answers go, or None.
        basemap: A raster tile URL template under the layers, or None.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    found = discover(paths, scratch)
    search = None
    if found.embeddings:
        search = Search(found.embeddings[0], scratch / "queries", save)
    session = Session({layer.id: layer for layer in found.layers}, search, basemap)
    return create_app(session), session


def view(
    paths: list[Path],
    host: str = "127.0.0.1",
    port: int = 8765,
    browser: bool = True,
    basemap: str | None = None,
    save: Path | None = None,
) -> None:
    """Serve the map until Ctrl-C.

    Raises:
        ViewError: On a busy port, or paths that cannot be shown.
    """
    check_port(host, port)
    with tempfile.TemporaryDirectory(prefix="geopera-view-") as scratch:
        app, session = prepare(paths, Path(scratch), save, basemap)
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
        print(f"geopera view: {url} ({len(session.layers)} layers); Ctrl-C stops")
        if host not in LOOPBACK:
            print(
                f"note: listening on {host}, not only this machine: anyone who reaches it on "
                f"port {port} sees these files' layers"
            )
        if browser:
            threading.Timer(1.0, webbrowser.open, [url]).start()
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn stops, then raises it again
            server.run()
    print("geopera view: stopped")
