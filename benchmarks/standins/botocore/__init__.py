"""Stand-in for botocore on the device machine (see ``benchmarks/standins/boto3``).

Only the names LitData imports at module level exist; using any of them says what is missing.
"""

from typing import Any, NoReturn

__version__ = "0.0+geopera-standin"


def missing(name: str) -> NoReturn:
    """Raise the one error every use of the stand-in gives."""
    raise ImportError(
        f"botocore.{name}: botocore is not installed on this machine (the GPU check carries a "
        "stand-in); S3 is unavailable here: stream shards from a local folder"
    )


class Missing:
    """A class whose instances cannot be made: botocore is not here."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        missing(type(self).__name__)


def __getattr__(name: str) -> NoReturn:
    missing(name)
