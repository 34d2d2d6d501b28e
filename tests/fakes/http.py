"""A local stand-in for object storage and a STAC API, on 127.0.0.1.

:class:`FakeStorage` serves a folder over HTTP/1.1 with ``Range`` support (single ranges and
``multipart/byteranges``), an optional per-request latency (to stand for object storage), request
counting per path, and faults injected per path: ``500`` / ``503`` / ``429`` / ``404`` answers,
``slow:S`` (sleep S seconds before answering), ``truncate`` (announce the full length, send half
and close), ``redirect:URL`` (a 302 to URL); and 403 for the requests whose query string
:attr:`FakeStorage.refuse` rejects (expired signatures). With ``items=[...]`` it also answers
as a minimal STAC API: a landing page with the item-search conformance classes and
``POST /search`` (``intersects`` bbox test, ``collections``, ``limit``, paging through ``next``
links with a ``token``).

Used by the STAC tests and by ``benchmarks/bench_remote.py``.
"""

import contextlib
import itertools
import json
import re
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import shapely
import shapely.geometry

_RANGE_RE = re.compile(r"(\d*)-(\d*)")


class FakeStorage:
    """Serve ``root`` on ``http://127.0.0.1:PORT`` in a background thread.

    Args:
        root: Folder to serve.
        latency: Seconds to wait before answering each request.
        items: STAC items (dicts) for the fake ``/search`` endpoint; None for no API.

    Attributes:
        url: Base URL (no trailing slash).
        requests: Count of requests per path (``GET``/``HEAD``/``POST`` alike).
        ranges: Count of requested byte ranges per path.
        faults: Per path, a queue of faults for the next requests.
    """

    def __init__(self, root: Path, latency: float = 0.0, items: list[dict[str, Any]] | None = None):
        self.root = Path(root)
        self.latency = latency
        self.items = items
        self.requests: Counter[str] = Counter()
        self.ranges: Counter[str] = Counter()
        #: Query strings of the requests (signed URLs), counted.
        self.queries: Counter[str] = Counter()
        self.faults: dict[str, deque[str]] = defaultdict(deque)
        #: Refuses (403) a file request whose query string it returns True for (an expired
        #: signature); None serves every request.
        self.refuse: Callable[[str], bool] | None = None
        #: Requests answered 403 by ``refuse``.
        self.refused = 0
        self.searches: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        storage = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle(self) -> None:
                # GDAL hangs up once it has the headers it needs
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                    super().handle()

            def do_HEAD(self) -> None:
                storage._serve(self, head=True)

            def do_GET(self) -> None:
                storage._serve(self, head=False)

            def do_POST(self) -> None:
                storage._search(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeStorage":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def inject(self, path: str, *faults: str) -> None:
        """Queue faults for the next requests of a path (``/items/a/B2.tif``)."""
        with self._lock:
            self.faults[path].extend(faults)

    def count(self, suffix: str = "") -> int:
        """Requests to paths that end with ``suffix``."""
        return sum(n for p, n in self.requests.items() if p.endswith(suffix))

    def _fault(self, path: str) -> str | None:
        with self._lock:
            queue = self.faults.get(path)
            return queue.popleft() if queue else None

    def _serve(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path, _, query = h.path.partition("?")
        with self._lock:
            self.requests[path] += 1
            self.queries[query] += 1
        if self.latency:
            time.sleep(self.latency)
        if path in ("", "/") and self.items is not None:
            self._json(h, self._landing())
            return
        fault = self._fault(path)
        if fault is not None and fault.startswith("slow:"):
            time.sleep(float(fault[5:]))
            fault = None
        if fault is not None and fault.isdigit():
            self._status(h, int(fault))
            return
        if fault is not None and fault.startswith("redirect:"):
            self._redirect(h, fault[len("redirect:") :])
            return
        if self.refuse is not None and self.refuse(query):
            with self._lock:
                self.refused += 1
            self._status(h, 403)
            return
        file = (self.root / path.lstrip("/")).resolve()
        if not file.is_file() or self.root.resolve() not in file.parents:
            self._status(h, 404)
            return
        data = file.read_bytes()
        spec = h.headers.get("Range")
        if spec is None or not spec.startswith("bytes="):
            self._send(h, 200, data, "application/octet-stream", head, fault)
            return
        parts = []
        for one in spec[len("bytes=") :].split(","):
            m = _RANGE_RE.fullmatch(one.strip())
            if m is None:
                self._status(h, 416)
                return
            last = len(data) - 1
            start = int(m.group(1)) if m.group(1) else len(data) - int(m.group(2))
            stop = min(int(m.group(2)) if m.group(1) and m.group(2) else last, last)
            parts.append((start, stop))
        with self._lock:
            self.ranges[path] += len(parts)
        if len(parts) == 1:
            start, stop = parts[0]
            extra = {"Content-Range": f"bytes {start}-{stop}/{len(data)}"}
            body = data[start : stop + 1]
            self._send(h, 206, body, "application/octet-stream", head, fault, extra)
            return
        boundary = "fakestorageboundary"
        body = b""
        for start, stop in parts:
            body += (
                (
                    f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                    f"Content-Range: bytes {start}-{stop}/{len(data)}\r\n\r\n"
                ).encode()
                + data[start : stop + 1]
                + b"\r\n"
            )
        body += f"--{boundary}--\r\n".encode()
        self._send(h, 206, body, f"multipart/byteranges; boundary={boundary}", head, fault)

    def _send(
        self,
        h: BaseHTTPRequestHandler,
        code: int,
        body: bytes,
        ctype: str,
        head: bool,
        fault: str | None,
        extra: dict[str, str] | None = None,
    ) -> None:
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        if fault == "truncate":
            h.send_header("Connection", "close")
        h.end_headers()
        if head:
            return
        if fault == "truncate":
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        h.wfile.write(body)

    def _status(self, h: BaseHTTPRequestHandler, code: int) -> None:
        body = f"fake storage: {code}\n".encode()
        h.send_response(code)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _redirect(self, h: BaseHTTPRequestHandler, location: str) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def _json(self, h: BaseHTTPRequestHandler, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    # --- the minimal STAC API -------------------------------------------------------------------

    def _landing(self) -> dict[str, Any]:
        return {
            "type": "Catalog",
            "id": "fake-api",
            "description": "fake STAC API",
            "stac_version": "1.0.0",
            "conformsTo": [
                "https://api.stacspec.org/v1.0.0/core",
                "https://api.stacspec.org/v1.0.0/item-search",
                "https://api.stacspec.org/v1.0.0/item-search#query",
            ],
            "links": [
                {"rel": "self", "href": self.url + "/"},
                {"rel": "root", "href": self.url + "/"},
                {
                    "rel": "search",
                    "href": self.url + "/search",
                    "method": "POST",
                    "type": "application/geo+json",
                },
            ],
        }

    def _search(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests[h.path] += 1
        length = int(h.headers.get("Content-Length", 0))
        body = json.loads(h.rfile.read(length) or b"{}")
        self.searches.append(body)
        fault = self._fault(h.path)
        if fault is not None and fault.isdigit():
            self._status(h, int(fault))
            return
        if self.items is None or h.path.split("?")[0] != "/search":
            self._status(h, 404)
            return
        found = list(self.items)
        if body.get("intersects"):
            geom = shapely.geometry.shape(body["intersects"])
            found = [i for i in found if shapely.box(*i["bbox"][:4]).intersects(geom)]
        if body.get("collections"):
            found = [i for i in found if i.get("collection") in body["collections"]]
        limit = int(body.get("limit", 10))
        offset = int(body.get("token", 0))
        page = found[offset : offset + limit]
        links = []
        if offset + limit < len(found):
            links.append(
                {
                    "rel": "next",
                    "href": self.url + "/search",
                    "method": "POST",
                    "body": {**body, "token": offset + limit},
                    "merge": False,
                }
            )
        self._json(h, {"type": "FeatureCollection", "features": page, "links": links})


def sign_with_token(href: str) -> str:
    """A URL-signing hook for tests (``tests.fakes.http:sign_with_token``): adds a token."""
    return f"{href}?token=test-token"


_TOKENS = itertools.count(1)
#: The tokens :func:`sign_with_fresh_token` handed out, in order.
ISSUED: list[int] = []


def sign_with_fresh_token(href: str) -> str:
    """A hook that signs with a new token each call (``token=N``, N counting up).

    Like a service whose signatures expire: a test refuses the old ones with
    :attr:`FakeStorage.refuse`.
    """
    token = next(_TOKENS)
    ISSUED.append(token)
    return f"{href}?token={token}"
