"""What rebuilds a fine-tuned model: :class:`FinetunedSpec`, stored inside ``model.ckpt``."""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

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


@dataclass
class FinetunedSpec(_Versioned):
    """What rebuilds a fine-tuned model without its training data or pretrained weights.

    Attributes:
        task: ``segmentation``, ``change`` or ``detection``.
        model: timm architecture of the backbone.
        in_chans: Bands the model takes.
        bands: Their names (the data's), in model order.
        data_bands: 0-based band indices in the training rasters, in model order.
        chip_size: Chip size in pixels (the position-embedding grid).
        decoder: ``upernet``, ``fpn`` or ``dpt`` (segmentation and change).
        decoder_channels: Decoder width.
        fusion: How the two dates meet (change): ``diff`` or ``concat``.
        classes: Class values, in output order.
        norm: The band statistics of the training chips (raw-unit percentiles, moments of the
            scaled values).
        model_kwargs: Extra timm arguments.
        freeze_backbone: Whether the backbone was frozen.
        augment: Whether training used flips and rotations.
        weights: Where the backbone's weights came from.
        ssl_method: Its pretraining method, when known.
        band_rule: ``by-hand``, ``by-identity``, ``by-name``, ``as-is`` or ``adapted`` (see
            :mod:`geopera.models.bandplan`).
        band_identities: What each input measures, in model order (None: unknown; specs
            before format 2).
        optim: The optimiser settings it trained with (the config's ``optim`` and the run's
            ``max_steps``).
        class_weights: Cross-entropy class weights, or None.
        geopera_version: Version that wrote it.
    """

    FORMAT: ClassVar[int] = 2
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
    decoder: str
    decoder_channels: int
    fusion: str
    classes: list[Any]
    norm: BandStats
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    freeze_backbone: bool = False
    augment: bool = True
    weights: str | None = None
    ssl_method: str | None = None
    band_rule: str = "as-is"
    band_identities: list[BandIdentity | None] | None = None
    optim: FinetuneOptim = field(default_factory=FinetuneOptim)
    class_weights: list[float] | None = None
    geopera_version: str | None = None
