"""What rebuilds a fine-tuned model: :class:`FinetunedSpec`, stored inside ``model.ckpt``."""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from geopera.core.contracts.backbone import read_identities
from geopera.core.contracts.base import ContractError, _Versioned
from geopera.core.identity import BandIdentity
from geopera.core.normalisation import BandStats


@dataclass
class FinetuneOptim:
    """AdamW with warm-up and cosine decay; optional layer-wise learning-rate decay.

    The ``optim`` section of a fine-tuning config (these defaults are the config's), and what a
    fine-tuned model records it trained with.

    Attributes:
        lr: Base rate of the backbone.
        head_lr_scale: The head trains at ``lr * head_lr_scale``.
        layer_decay: Layer-wise decay of the backbone's rate, or None.
        weight_decay: AdamW weight decay (not on norms, biases and tokens).
        warmup_steps: Linear warm-up steps.
        balance_classes: Cross-entropy weights from the class frequencies.
        max_steps: Steps of the cosine schedule (set from ``trainer.max_steps``).
    """

    lr: float = 1e-4
    head_lr_scale: float = 10.0
    layer_decay: float | None = None
    weight_decay: float = 0.05
    warmup_steps: int = 10
    balance_classes: bool = False
    max_steps: int = 200

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FinetuneOptim":
        """Read the settings a checkpoint stored (missing keys take today's defaults).

        Args:
            data: The stored mapping.

        Returns:
            The settings.

        Raises:
            ContractError: On keys this geopera does not know.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ContractError(f"fine-tuned model spec: unknown optim {', '.join(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class TaskSection:
    """A task's own part of a fine-tuned model's spec; each task subclasses it with its fields.

    The common part (:class:`FinetunedSpec`) is the same for every task; this part is read by
    the class the spec's ``task`` names (``Head`` of the task class), so that a new task brings
    its fields without changing the spec's format.
    """

    @classmethod
    def from_dict(cls, data: Any, origin: str = "") -> Self:
        """Read the stored fields.

        Args:
            data: The stored mapping.
            origin: Where it came from, for messages.

        Returns:
            The section.

        Raises:
            ContractError: If it is not a mapping of exactly this section's fields.
        """
        where = f" in {origin}" if origin else ""
        if not isinstance(data, dict):
            raise ContractError(f"the task section{where} must be a JSON object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        missing = sorted(
            n
            for n, f in fields.items()
            if n not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )
        if unknown or missing:
            problems = [f"missing {', '.join(missing)}"] if missing else []
            problems += [f"unknown {', '.join(unknown)}"] if unknown else []
            raise ContractError(
                f"the {cls.__name__} section{where} is not valid: {'; '.join(problems)}"
            )
        return cls(**data)


@dataclass
class FinetunedSpec(_Versioned):
    """What rebuilds a fine-tuned model without its training data or pretrained weights.

    Attributes:
        task: The task's name in :data:`geopera.finetune.registry.TASKS`.
        model: timm architecture of the backbone.
        in_chans: Bands the model takes.
        bands: Their names (the data's), in model order.
        data_bands: 0-based band indices in the training rasters, in model order.
        chip_size: Chip size in pixels (the position-embedding grid).
        classes: Class values, in output order (empty for a task without classes).
        head: The task's own section (its head's settings), read by the task's class.
        norm: The band statistics of the training chips (raw-unit percentiles, moments of the
            scaled values).
        model_kwargs: Extra timm arguments.
        freeze_backbone: Whether the backbone was frozen.
        augment: Whether training used flips and rotations.
        weights: Where the backbone's weights came from.
        ssl_method: Its pretraining method, when known.
        band_rule: ``by-hand``, ``by-identity``, ``by-name``, ``as-is`` or ``adapted`` (see
            :mod:`geopera.models.bandplan`).
        band_identities: What each input measures, in model order (None: unknown).
        optim: The optimiser settings it trained with (the config's ``optim`` and the run's
            ``max_steps``).
        geopera_version: Version that wrote it.
    """

    FORMAT: ClassVar[int] = 3
    OLDEST: ClassVar[int] = 3
    KIND: ClassVar[str] = "fine-tuned model spec"
    #: Stored as the ``spec`` hyper-parameter of this file.
    FILE: ClassVar[str] = "model.ckpt"
    NESTED: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "norm": BandStats.from_dict,
        "optim": lambda data: FinetuneOptim.from_dict(data),
        "band_identities": read_identities,
    }

    task: str
    model: str
    in_chans: int
    bands: list[str]
    data_bands: list[int]
    chip_size: int
    classes: list[Any]
    norm: BandStats
    head: TaskSection
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    freeze_backbone: bool = False
    augment: bool = True
    weights: str | None = None
    ssl_method: str | None = None
    band_rule: str = "as-is"
    band_identities: list[BandIdentity | None] | None = None
    optim: FinetuneOptim = field(default_factory=FinetuneOptim)
    geopera_version: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.head, TaskSection):
            raise ContractError(
                f"the {self.task} spec's head section is not read: read a stored spec with "
                "geopera.finetune.checkpoint.read_spec (its task's class reads the section)"
            )
