"""The ``geopera view`` web app (FastAPI) and how it is served (uvicorn, 127.0.0.1 by default).

Routes: ``/`` (the page), ``/static/NAME`` (the page's own files, held in memory),
``/layers.json``, ``/tiles/ID/Z/X/Y.png``, ``/vector/ID`` (GeoJSON), ``/search?lon=&lat=`` or
``/search?bbox=w,s,e,n`` (embed folders) and ``POST /save/QID``. Layers and queries are known
by the ids the server gave; no part of a request is ever joined to a path.
"""

from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Response
from fastapi.responses import HTMLResponse, JSONResponse

from geopera.core.errors import GeoperaError
from geopera.view.layers import Layer
from geopera.view.search import Search
from geopera.view.tiles import tile_png

#: The page's files: name -> media type (the vendored MapLibre is copied there at set-up).
STATIC = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "maplibre-gl.js": "text/javascript",
    "maplibre-gl.css": "text/css",
}


class MissingAssetsError(GeoperaError):
    """The page's MapLibre files were not installed."""


def static_files() -> dict[str, bytes]:
    """The page and its files, read once from the package.

    Raises:
        MissingAssetsError: If MapLibre was not copied into the package (``make env``).
    """
    folder = resources.files("geopera.view") / "static"
    found = {}
    for name in ("index.html", *STATIC):
        file = folder / name
        if not file.is_file():
            raise MissingAssetsError(
                f"{name} is missing from geopera/view/static: run `make env` (it copies "
                "MapLibre GL JS from npm into the package)"
            )
        found[name] = file.read_bytes()
    return found


@dataclass
class Session:
    """What the server shows.

    Attributes:
        layers: The layers, by id.
        search: The click-to-search of an embed folder, or None.
        basemap: A raster tile URL template under the layers, or None.
        vectors: GeoJSON of the vector layers, made on first request.
    """

    layers: dict[str, Layer]
    search: Search | None = None
    basemap: str | None = None
    vectors: dict[str, bytes] = field(default_factory=dict)

    def layer(self, layer_id: str) -> Layer:
        """A layer by id (404 if unknown)."""
        if layer_id not in self.layers:
            raise HTTPException(404, f"no layer {layer_id!r}")
        return self.layers[layer_id]

    def geojson(self, layer: Layer) -> bytes:
        """A vector layer's features in degrees."""
        if layer.id not in self.vectors:
            import geopandas as gpd

            path = layer.path
            frame = gpd.read_parquet(path) if path.suffix == ".parquet" else gpd.read_file(path)
            frame = frame.drop(columns=[c for c in ("embedding",) if c in frame.columns])
            self.vectors[layer.id] = frame.to_crs("EPSG:4326").to_json().encode()
        return self.vectors[layer.id]


def create_app(session: Session) -> FastAPI:
    """The web app of a session."""
    app = FastAPI(title="geopera view", docs_url=None, redoc_url=None, openapi_url=None)
    files = static_files()

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(files["index.html"])

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, "not found")
        return Response(files[name], media_type=STATIC[name])

    @app.get("/layers.json")
    def layers() -> dict[str, Any]:
        search = session.search
        return {
            "layers": [layer.describe() for layer in session.layers.values()],
            "search": search is not None,
            "save": search is not None and search.save_to is not None,
            "basemap": session.basemap,
        }

    @app.get("/tiles/{layer_id}/{z}/{x}/{y}.png")
    def tile(layer_id: str, z: int, x: int, y: int) -> Response:
        layer = session.layer(layer_id)
        if layer.style is None:
            raise HTTPException(404, f"{layer_id} is a vector layer")
        return Response(tile_png(layer, z, x, y), media_type="image/png")

    @app.get("/vector/{layer_id}")
    def vector(layer_id: str) -> Response:
        layer = session.layer(layer_id)
        if layer.style is not None:
            raise HTTPException(404, f"{layer_id} is a raster layer")
        return Response(session.geojson(layer), media_type="application/geo+json")

    _search_routes(app, session)
    return app


def _search_routes(app: FastAPI, session: Session) -> None:
    @app.get("/search")
    def search(
        lon: float | None = None, lat: float | None = None, bbox: str | None = None, top: int = 10
    ) -> JSONResponse:
        if session.search is None:
            raise HTTPException(404, "no embed folder is shown: nothing to search")
        count = max(1, min(top, 100))
        try:
            if bbox is not None:  # a drawn box: west,south,east,north in degrees
                west, south, east, north = (float(v) for v in bbox.split(","))
                answer = session.search.box(west, south, east, north, count)
            elif lon is not None and lat is not None:
                answer = session.search.at(lon, lat, count)
            else:
                raise HTTPException(400, "give lon and lat (a click) or bbox=w,s,e,n (a box)")
        except ValueError as err:  # a bbox that is not four numbers
            return JSONResponse({"detail": f"bbox must be west,south,east,north: {err}"}, 400)
        except GeoperaError as err:  # outside the embeddings, on nodata
            return JSONResponse({"detail": str(err)}, status_code=400)
        for n, layer in enumerate(answer.layers):
            layer.id = f"{answer.id}-{n}"
            session.layers[layer.id] = layer
        return JSONResponse(
            {"id": answer.id, "layers": [la.describe() for la in answer.layers], "top": answer.top}
        )

    @app.post("/save/{qid}")
    def save(qid: str) -> JSONResponse:
        if session.search is None:
            raise HTTPException(404, "nothing to save")
        try:
            return JSONResponse({"saved": str(session.search.save(qid))})
        except GeoperaError as err:
            return JSONResponse({"detail": str(err)}, status_code=400)
