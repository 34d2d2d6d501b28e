"""PerA: teacher-student contrastive learning on perfectly aligned, disjointly masked views.

One step, given the views of a batch (see :mod:`geopera.transforms.views`):

1. masks: per crop, disjoint student / mask-token / teacher patch sets;
2. teacher (EMA, no gradient): class token + teacher patches of the teacher view, every block,
   class head; centred and sharpened into probabilities;
3. student: global crops run class token + student patches through depth // 2 blocks, then the
   mask tokens join; local crops run class token + student patches; class head on the class
   token, pixel head at the mask-token positions;
4. loss: DINO cross-entropy crop by crop, KoLeo on each global crop's student outputs, pixel
   squared error at the mask-token positions.

Both encoders run only on the tokens they keep: 20 % (+20 % mask tokens after depth // 2) for the
student and 60 % for the teacher.
"""

import warnings
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from geopera.losses.dino import DINOLoss
from geopera.losses.koleo import koleo_loss
from geopera.losses.pixel import patchify, pixel_loss
from geopera.metrics.health import rank_of
from geopera.models.heads import ProjectionHead
from geopera.models.pera_output import LossParts, PerAOutput, TeacherHealth
from geopera.models.vit import (
    SAMPLE_DROP,
    build_backbone,
    embed_patch_count,
    encode_visible,
    encode_with_mask_tokens,
    gather_tokens,
    set_stochastic_depth,
    token_size,
)
from geopera.transforms.masking import DisjointMasking, MaskSets
from geopera.transforms.views import CropPairs


@dataclass(frozen=True)
class PerASettings:
    """Model and loss settings a user chooses (defaults: the paper's recipe on ViT-S/16).

    This is the ``model`` section of a pretraining config; :class:`PerAConfig` adds what the
    data and the views decide.

    Attributes:
        backbone: timm model name.
        backbone_kwargs: Extra timm arguments (``embed_dim``, ``depth``, ``num_heads``...).
        student_ratio: Fraction of patches for the student (and for mask tokens).
        teacher_ratio: Fraction of patches for the teacher.
        drop_path_rate: Student stochastic depth, the same in every block; above 0.1 applied
            to a batch subset (the authors' ``drop_path_uniform`` and sample drop ratio).
        prototypes: Class-head outputs K.
        head_hidden_dim: Head MLP width.
        head_bottleneck_dim: Head bottleneck width.
        head_layers: Head MLP depth.
        student_temp: Student temperature.
        center_momentum: Centre EMA momentum.
        dino_weight: Weight of the DINO terms.
        koleo_weight: Weight of the KoLeo term.
        pixel_weight: Weight of the pixel term.
    """

    backbone: str = "vit_small_patch16_224"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    student_ratio: float = 0.2
    teacher_ratio: float = 0.6
    drop_path_rate: float = 0.3
    prototypes: int = 65536
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 384
    head_layers: int = 3
    student_temp: float = 0.1
    center_momentum: float = 0.9
    dino_weight: float = 1.0
    koleo_weight: float = 0.1
    pixel_weight: float = 0.01


@dataclass(frozen=True)
class PerAConfig(PerASettings):
    """Everything that builds a :class:`PerA` model: the settings plus data- and view-given sizes.

    Attributes:
        in_chans: Input bands.
        global_size: Global crop size (the position-embedding grid).
        n_global: Global crop pairs.
        n_local: Local crop pairs.
    """

    in_chans: int = 3
    global_size: int = 224
    n_global: int = 2
    n_local: int = 8


def _branch(backbone: VisionTransformer, config: PerAConfig) -> nn.ModuleDict:
    head = ProjectionHead(
        backbone.embed_dim,
        config.prototypes,
        config.head_hidden_dim,
        config.head_bottleneck_dim,
        config.head_layers,
    )
    return nn.ModuleDict({"backbone": backbone, "cls_head": head})


class PerA(nn.Module):
    """Student, EMA teacher, pixel head, mask token and losses.

    Args:
        config: Model and loss settings.
    """

    def __init__(self, config: PerAConfig) -> None:
        super().__init__()
        self.config = config
        student_backbone = build_backbone(
            config.backbone, config.in_chans, config.global_size, **config.backbone_kwargs
        )
        # the authors' stochastic depth: one rate in every block, on a batch subset
        set_stochastic_depth(student_backbone, config.drop_path_rate)
        teacher_backbone = build_backbone(
            config.backbone, config.in_chans, config.global_size, **config.backbone_kwargs
        )
        self.student = _branch(student_backbone, config)
        self.teacher = _branch(teacher_backbone, config)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        dim = student_backbone.embed_dim
        self.token_size = token_size(student_backbone)
        self.pixel_head = ProjectionHead(
            dim,
            self.token_size * self.token_size * config.in_chans,
            config.head_hidden_dim,
            config.head_bottleneck_dim,
            config.head_layers,
        )
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.masking = DisjointMasking(config.student_ratio, config.teacher_ratio)
        self.dino = DINOLoss(config.prototypes, config.student_temp, config.center_momentum)

    def train(self, mode: bool = True) -> "PerA":
        """Set training mode; the teacher always stays in eval mode (no drop-path)."""
        super().train(mode)
        self.teacher.train(False)
        return self

    @property
    def student_backbone(self) -> VisionTransformer:
        """The student's timm ViT."""
        return cast(VisionTransformer, self.student["backbone"])

    @property
    def teacher_backbone(self) -> VisionTransformer:
        """The teacher's timm ViT (used downstream)."""
        return cast(VisionTransformer, self.teacher["backbone"])

    @property
    def patch(self) -> int:
        """Deprecated name of :attr:`token_size` (the ViT's patch size in pixels)."""
        warnings.warn(
            "PerA.patch is deprecated; use PerA.token_size", DeprecationWarning, stacklevel=2
        )
        return self.token_size

    def draw_masks(
        self, views: CropPairs, noise: dict[str, Tensor] | None = None
    ) -> tuple[MaskSets, MaskSets | None]:
        """Masks of the global and local crops.

        Args:
            views: The crop pairs.
            noise: Optional injected noise ``{"global": (Ng, Lg), "local": (Nl, Ll)}``.

        Returns:
            Global masks and local masks (None without local crops).
        """
        noise = noise or {}
        sg = views.student_global
        global_masks = self.masking(
            sg.shape[0],
            embed_patch_count(self.student_backbone, sg),
            True,
            sg.device,
            noise.get("global"),
        )
        local_masks = None
        if views.student_local.shape[0] > 0:
            sl = views.student_local
            local_masks = self.masking(
                sl.shape[0],
                embed_patch_count(self.student_backbone, sl),
                False,
                sl.device,
                noise.get("local"),
            )
        return global_masks, local_masks

    def forward(
        self,
        views: CropPairs,
        teacher_temp: float,
        noise: dict[str, Tensor] | None = None,
        with_health: bool = False,
    ) -> PerAOutput:
        """One PerA forward pass with its loss.

        Args:
            views: Standardised crop pairs, crop-major.
            teacher_temp: Teacher temperature for this step.
            noise: Optional injected mask noise (tests, parity).
            with_health: Also compute the collapse signals (costs two passes over the
                teacher outputs; the training task asks for them at logging steps).

        Returns:
            The loss, its parts, head outputs and health signals.
        """
        gm, lm = self.draw_masks(views, noise)
        n_global_rows = views.student_global.shape[0]
        t_cls, t_all, probs, center_update = self._teacher(views, gm, lm, teacher_temp)
        s_all, prediction, target = self._student(views, gm, lm)
        sg, sl = s_all[:n_global_rows], s_all[n_global_rows:]
        parts = self._losses(sg, sl, probs, prediction, target, local=lm is not None)
        cfg = self.config
        loss = (
            cfg.dino_weight * (parts.dino_global + parts.dino_local)
            + cfg.koleo_weight * parts.koleo
            + cfg.pixel_weight * parts.pixel
        )
        return PerAOutput(
            loss=loss,
            parts=parts,
            student_global=sg,
            student_local=sl,
            teacher_global=t_all[:n_global_rows],
            teacher_local=t_all[n_global_rows:],
            pixel_prediction=prediction,
            pixel_target=target,
            center_update=center_update,
            health=_health(t_cls, t_all, probs) if with_health else None,
        )

    @torch.no_grad()
    def _teacher(
        self, views: CropPairs, gm: MaskSets, lm: MaskSets | None, teacher_temp: float
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The teacher on its visible tokens: class tokens, head outputs, probabilities.

        Returns:
            ``t_cls`` (Ng + Nl, D) class tokens (global rows first, then local), ``t_all``
            (Ng + Nl, K) head outputs, their centred, sharpened probabilities, and the batch
            mean that will update the DINO centre.
        """
        # one head call per branch: the weight-normalised layer is recomputed once
        t_cls = encode_visible(self.teacher_backbone, views.teacher_global, gm.teacher)[:, 0]
        if lm is not None:
            t_local = encode_visible(self.teacher_backbone, views.teacher_local, lm.teacher)
            t_cls = torch.cat([t_cls, t_local[:, 0]])  # global rows first, then local
        t_all = self.teacher["cls_head"](t_cls)  # (Ng + Nl, D) -> (Ng + Nl, K)
        probs = self.dino.teacher_probabilities(t_all, teacher_temp)
        return t_cls, t_all, probs, self.dino.update_center(t_all)

    def _student(
        self, views: CropPairs, gm: MaskSets, lm: MaskSets | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The student with mask tokens: head outputs, and the pixels it predicts and should.

        Returns:
            ``s_all`` (Ng + Nl, K) head outputs, the pixel prediction (Ng, n_m, p*p*C) at the
            mask tokens, and the target pixels there.
        """
        cls_g, at_tokens = encode_with_mask_tokens(
            self.student_backbone, views.student_global, gm.student, gm.token, self.mask_token
        )
        s_cls = cls_g
        if lm is not None:
            tokens = encode_visible(self.student_backbone, views.student_local, lm.student)
            s_cls = torch.cat([cls_g, tokens[:, 0]])
        s_all = self.student["cls_head"](s_cls)  # (Ng + Nl, D) -> (Ng + Nl, K)
        prediction = self.pixel_head(at_tokens)  # (Ng, n_m, D) -> (Ng, n_m, p*p*C)
        target = gather_tokens(
            F.pad(patchify(views.student_global, self.token_size), (0, 0, 1, 0)), gm.token
        )[:, 1:]  # (Ng, L, p*p*C) -> (Ng, n_m, p*p*C)
        return s_all, prediction, target

    def _losses(
        self,
        sg: Tensor,
        sl: Tensor,
        probs: Tensor,
        prediction: Tensor,
        target: Tensor,
        local: bool,
    ) -> LossParts[Tensor]:
        """The loss parts: DINO on global and local crops, KoLeo per global crop, pixels."""
        cfg = self.config
        n_global_rows = sg.shape[0]
        n_crops = cfg.n_global + cfg.n_local
        dino_local = (
            self.dino(sl, probs[n_global_rows:], cfg.n_local) / n_crops
            if local
            else sg.new_zeros(())
        )
        return LossParts(
            dino_global=self.dino(sg, probs[:n_global_rows], cfg.n_global) / n_crops,
            dino_local=dino_local,
            koleo=sum((koleo_loss(c) for c in sg.chunk(cfg.n_global)), sg.new_zeros(())),
            pixel=pixel_loss(prediction, target),
        )

    def compile_blocks(self) -> None:
        """``torch.compile`` every transformer block of both encoders, in place.

        This is what the pretraining config's ``trainer.compile`` does; state-dict keys are
        unchanged. A student with batch-subset stochastic depth calls its blocks' branches
        directly, so those (attention, MLP) are compiled instead of the whole block.
        """
        for backbone in (self.student_backbone, self.teacher_backbone):
            subset = getattr(backbone, SAMPLE_DROP, 0.0) > 0.0
            for block in backbone.blocks:
                if subset:
                    cast(nn.Module, block.attn).compile()
                    cast(nn.Module, block.mlp).compile()
                else:
                    block.compile()

    @torch.no_grad()
    def update_teacher(self, momentum: float, apply: Tensor | None = None) -> None:
        """EMA of the student into the teacher (backbone and class head).

        Args:
            momentum: Teacher momentum m: ``teacher = m * teacher + (1 - m) * student``.
            apply: Optional () boolean on the device: where False (a skipped step) the teacher
                stays as it is. Decided on the device, so nothing is read on the host.
        """
        student: list[Tensor] = [p.detach() for p in self.student.parameters()]
        teacher: list[Tensor] = list(self.teacher.parameters())
        if apply is None:
            torch._foreach_mul_(teacher, momentum)
            torch._foreach_add_(teacher, student, alpha=1 - momentum)
            return
        weight = apply.to(teacher[0].dtype) * (1 - momentum)  # () student share: 0 keeps
        torch._foreach_add_(
            teacher, torch._foreach_mul(torch._foreach_sub(student, teacher), weight)
        )

    def teacher_state_dict(self) -> dict[str, Tensor]:
        """The teacher backbone as a plain timm state dict (CPU tensors)."""
        return {k: v.detach().cpu().clone() for k, v in self.teacher_backbone.state_dict().items()}


@torch.no_grad()
def _health(t_cls: Tensor, t_all: Tensor, probs: Tensor) -> TeacherHealth[Tensor]:
    """The teacher's collapse signals: output std, probability entropy, class-token rank."""
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=-1).mean()
    return TeacherHealth(
        std=t_all.std(dim=0).mean(),
        entropy=entropy,
        rank=rank_of(t_cls.float()),  # dimensional collapse: class tokens span few directions
    )
