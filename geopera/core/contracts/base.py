"""Reading and writing of versioned JSON contracts: format versions, upgrades, nested records.

Every file carries its ``format_version``. A contract reads its formats from 1 to the current
one (a released format that changes a field's meaning gets an upgrade in ``_upgrade``); a file
without a version, or of a version newer than this geopera knows, is refused with a clear message.
"""

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from geopera.core.errors import GeoperaError
from geopera.core.outputs import write_json


class ContractError(GeoperaError):
    """A stage's file cannot be read: unknown format version, or missing/unknown fields."""


@dataclass
class _Versioned:
    """Shared reading and writing of a versioned JSON contract."""

    #: Current format version (written by this geopera).
    FORMAT: ClassVar[int] = 1
    #: The oldest format it reads (a format no release wrote is not kept readable).
    OLDEST: ClassVar[int] = 1
    #: What the file is, for messages.
    KIND: ClassVar[str] = "file"
    #: The file's name in the folder that holds it ("" for a contract stored inside another file).
    FILE: ClassVar[str] = ""
    #: Readers of nested records by field name (applied to the field's JSON value).
    NESTED: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    @classmethod
    def _upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        """Turn an older format's fields into the current ones (subclasses)."""
        return data

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (``format_version`` included)."""
        return {"format_version": self.FORMAT, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        """JSON text (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "") -> Self:
        """Read a dict of any known format version.

        Args:
            data: The fields, with ``format_version``.
            origin: Where it came from, for messages.

        Returns:
            The contract.

        Raises:
            ContractError: On an unknown version, or missing or unknown fields.
        """
        where = f" in {origin}" if origin else ""
        if not isinstance(data, dict):
            raise ContractError(
                f"{cls.KIND}{where} must be a JSON object, got {type(data).__name__}"
            )
        data = dict(data)
        version = data.pop("format_version", None)
        if version is None:
            raise ContractError(
                f"{cls.KIND}{where} has no format_version: it was not written by geopera (or "
                "was edited); write it again with the command that makes it"
            )
        if not isinstance(version, int) or not cls.OLDEST <= version <= cls.FORMAT:
            newer = isinstance(version, int) and version > cls.FORMAT
            raise ContractError(
                f"{cls.KIND}{where} has format_version {version!r}; this geopera reads formats "
                f"{cls.OLDEST} to {cls.FORMAT}: "
                + ("upgrade geopera to read it" if newer else "write it again with this geopera")
            )
        data = cls._upgrade(data, version)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        required = {
            n
            for n, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if unknown or missing:
            problems = [f"missing {', '.join(missing)}"] if missing else []
            problems += [f"unknown {', '.join(unknown)}"] if unknown else []
            raise ContractError(
                f"{cls.KIND}{where} (format {version}) is not valid: {'; '.join(problems)}"
            )
        for name, read in cls.NESTED.items():
            if data.get(name) is not None:
                data[name] = read(data[name])
        return cls(**data)

    @classmethod
    def from_json(cls, text: str, origin: str = "") -> Self:
        """Read JSON text (see :meth:`from_dict`).

        Raises:
            ContractError: If the text is not JSON or not a valid contract.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ContractError(f"{cls.KIND} {origin} is not valid JSON: {err}") from err
        return cls.from_dict(data, origin)

    @classmethod
    def read(cls, path: Path) -> Self:
        """Read a file.

        Raises:
            FileNotFoundError: If it does not exist.
            ContractError: If it is not a valid contract.
        """
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the {cls.KIND} is needed")
        return cls.from_json(path.read_text(), str(path))

    def write(self, path: Path) -> None:
        """Write the current format atomically."""
        write_json(path, self.to_dict())
