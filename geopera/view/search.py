"""Click-to-search in ``geopera view``: the similarity search of ``embed similar``, in the server.

The chip embeddings are loaded once (:class:`~geopera.embed.similar.ChipIndex`); a click is a
point query. Its answer (a similarity COG per patch raster and the top chips) is written to the
session's scratch folder under a query id the server gives (``q1``, ``q2``...), shown as layers,
and copied on request into ``--save`` under that id: the same files ``embed similar`` writes.
"""

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geopera.core.contracts import EmbeddingSet
from geopera.core.outputs import staged_folder
from geopera.embed.similar import ChipIndex, query_vector, write_answer
from geopera.view.layers import Layer, ViewError, raster_layer


@dataclass
class Answer:
    """One query's answer.

    Attributes:
        id: The query id.
        layers: The similarity heatmaps, as layers.
        top: The top chips as a GeoJSON FeatureCollection (degrees), ranked.
    """

    id: str
    layers: list[Layer]
    top: dict[str, Any]


class Search:
    """Point queries against one ``embed`` folder.

    Args:
        folder: The embed folder.
        scratch: Where answers are written.
        save_to: Where saved answers go (None: saving is off).
    """

    def __init__(self, folder: Path, scratch: Path, save_to: Path | None) -> None:
        self.folder = folder
        self.manifest = EmbeddingSet.read(folder / EmbeddingSet.FILE)
        self.index = ChipIndex.load(self.manifest, folder)
        self.scratch = scratch
        self.save_to = save_to
        self.answers: dict[str, Answer] = {}
        self.session = time.strftime("%Y%m%d-%H%M%S")

    def at(self, lon: float, lat: float, top: int = 10) -> Answer:
        """The answer to a click at (lon, lat): the token under it.

        Raises:
            EmbedError: If the point is outside the embeddings or on nodata.
        """
        return self.answer(f"POINT({lon} {lat})", top)

    def box(self, west: float, south: float, east: float, north: float, top: int = 10) -> Answer:
        """The answer to a drawn box (degrees): the mean of the tokens inside it.

        Raises:
            EmbedError: If the box holds no valid token.
        """
        ring = f"{west} {south}, {east} {south}, {east} {north}, {west} {north}, {west} {south}"
        return self.answer(f"POLYGON(({ring}))", top)

    def answer(self, query: str, top: int) -> Answer:
        """The answer to a WKT query in degrees (the files ``embed similar`` writes).

        Raises:
            EmbedError: If the query is outside the embeddings or only on nodata.
        """
        vector = query_vector(self.manifest, self.folder, query, "EPSG:4326")
        qid = f"q{len(self.answers) + 1}"
        work = self.scratch / qid
        work.mkdir(parents=True)
        written = write_answer(self.manifest, self.folder, vector, top, work, self.index)
        (work / "query.json").write_text(
            json.dumps({"query": query, "crs": "EPSG:4326", "top": top})
        )
        layers = []
        for name in written:
            if name.endswith(".tif"):
                (layer,) = raster_layer(work / name)
                layer.name = f"{qid}: {name}"
                layers.append(layer)
        top_chips = json.loads((work / "top_chips.geojson").read_text()) if self.index else {
            "type": "FeatureCollection", "features": []
        }  # fmt: skip
        answer = Answer(qid, layers, top_chips)
        self.answers[qid] = answer
        return answer

    def save(self, qid: str) -> Path:
        """Copy an answer into ``save_to/query-<session start>-<qid>`` (a new folder).

        Raises:
            ViewError: If saving is off, or the id is not one of this session's answers.
        """
        if self.save_to is None:
            raise ViewError("saving is off: start geopera view with --save DIR")
        if qid not in self.answers:  # ids are the server's own, never a path
            raise ViewError(f"no query {qid!r} in this session")
        out = self.save_to / f"query-{self.session}-{qid}"
        with staged_folder(out) as work:
            for file in sorted((self.scratch / qid).iterdir()):
                shutil.copy2(file, work / file.name)
        return out
