"""Stand-in for boto3 on the device machine, where boto3 and botocore (14 MB) do not fit.

LitData imports boto3 at module level for S3, but the GPU check streams shards from the local
disk only. ``gpu_check.sh`` puts this folder on the path only where the real boto3 is missing;
any use of it says so instead of failing obscurely.
"""

from typing import NoReturn

__version__ = "0.0+geopera-standin"


def __getattr__(name: str) -> NoReturn:
    raise ImportError(
        f"boto3.{name}: boto3 is not installed on this machine (the GPU check carries a "
        "stand-in); S3 is unavailable here: stream shards from a local folder"
    )
