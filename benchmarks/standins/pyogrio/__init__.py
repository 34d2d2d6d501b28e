"""Stand-in for pyogrio on the device machine, where its 33 MB wheel does not fit the transfer.

torchgeo imports pyogrio at module level but the GPU check never reads a vector file (its ROI
is WKT, its labels are rasters and chip folders). ``gpu_check.sh`` puts this folder on the path
only where the real pyogrio is missing; any use of it says so instead of failing obscurely.
"""

from typing import NoReturn

__version__ = "0.0+geopera-standin"


def __getattr__(name: str) -> NoReturn:
    raise ImportError(
        f"pyogrio.{name}: pyogrio is not installed on this machine (the GPU check carries a "
        "stand-in); vector-file I/O is unavailable here: give the ROI as WKT or a bbox"
    )
