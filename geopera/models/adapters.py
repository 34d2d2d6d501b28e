"""Dense-task adapters on a plain timm ViT: a multi-scale pyramid and the task models on it.

* :class:`ViTPyramid`: block outputs at four depths (timm ``forward_intermediates``) turned into
  maps at 4x, 2x, 1x and 0.5x the token grid (ViTDet's simple pyramid: transposed convolutions
  up, max-pooling down). With 16 px patches these are strides 4, 8, 16 and 32.
* :class:`PyramidSegmenter`: the pyramid under an smp UPerNet or FPN decoder.
* :class:`DPTSegmenter`: smp's DPT, which reads the ViT natively (the ViT lives inside it).
* :class:`ChangeSegmenter`: one shared ViT + pyramid run on both dates, features fused per scale
  (absolute difference, or concatenation + 1x1 convolution), then a UPerNet/FPN decoder.
* :func:`build_detector`: torchvision's Faster R-CNN on the pyramid (+ torchvision FPN).

Every model exposes its ViT as ``.vit`` so that freezing and layer-wise learning rates treat all
tasks alike.
"""

from collections import OrderedDict
from typing import Any, Literal, cast

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder
from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

DECODERS = ("upernet", "fpn", "dpt")
FUSIONS = ("diff", "concat")


def pyramid_indices(depth: int) -> list[int]:
    """Block indices read for the pyramid: the ends of the four quarters of the ViT.

    Args:
        depth: Number of ViT blocks.

    Returns:
        Four increasing indices (e.g. 2, 5, 8, 11 for 12 blocks; repeats for depth < 4).
    """
    return [max(0, round(depth * q / 4) - 1) for q in (1, 2, 3, 4)]


class ViTPyramid(nn.Module):
    """Four ViT feature maps at one grid -> four maps at 4x, 2x, 1x and 0.5x that grid.

    Args:
        embed_dim: ViT width D.
    """

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        d = embed_dim
        self.channels = [d // 4, d // 2, d, d]
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(d, d // 2, 2, stride=2),
            nn.GroupNorm(1, d // 2),
            nn.GELU(),
            nn.ConvTranspose2d(d // 2, d // 4, 2, stride=2),
        )
        self.up2 = nn.ConvTranspose2d(d, d // 2, 2, stride=2)
        self.down = nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """Build the pyramid.

        Args:
            features: Four (B, D, h, w) block outputs, shallow to deep.

        Returns:
            (B, D/4, 4h, 4w), (B, D/2, 2h, 2w), (B, D, h, w), (B, D, ceil(h/2), ceil(w/2)).
        """
        f1, f2, f3, f4 = features
        return [self.up4(f1), self.up2(f2), f3, self.down(f4)]


def vit_features(vit: VisionTransformer, x: Tensor, indices: list[int]) -> list[Tensor]:
    """Outputs of the given blocks as maps.

    Args:
        vit: timm ViT (``dynamic_img_size=True``).
        x: (B, C, H, W), H and W multiples of the patch size.
        indices: Block indices.

    Returns:
        One (B, D, H/p, W/p) map per index.
    """
    unique = sorted(set(indices))  # timm returns one map per distinct block
    out = vit.forward_intermediates(
        x, indices=unique, norm=False, output_fmt="NCHW", intermediates_only=True
    )
    maps = dict(zip(unique, cast(list[Tensor], out), strict=True))
    return [maps[i] for i in indices]


class _Decoder(nn.Module):
    """An smp UPerNet or FPN decoder + 1x1 classifier on a four-level pyramid."""

    def __init__(self, kind: str, channels: list[int], num_classes: int, width: int) -> None:
        super().__init__()
        # smp decoders take encoder features [1, 1/2, 1/4, 1/8, 1/16, 1/32]; the first two are
        # placeholders here (UPerNet skips them, FPN reads only the last four).
        full = [0, 0, *channels]
        self.decoder: nn.Module
        if kind == "upernet":
            self.decoder = UPerNetDecoder(
                encoder_channels=full, encoder_depth=5, decoder_channels=width
            )
            out_channels = width
        elif kind == "fpn":
            self.decoder = FPNDecoder(
                encoder_channels=full,
                encoder_depth=5,
                pyramid_channels=width,
                segmentation_channels=width,
                dropout=0.0,
            )
            out_channels = width
        else:
            raise ValueError(f"decoder {kind!r} is not a pyramid decoder; use upernet or fpn")
        self.classifier = nn.Conv2d(out_channels, num_classes, 1)

    def forward(self, pyramid: list[Tensor], size: tuple[int, int]) -> Tensor:
        """(B, K, H, W) logits at the input size ``size``."""
        placeholder = pyramid[0]
        out = self.decoder([placeholder, placeholder, *pyramid])  # (B, width, 4h, 4w)
        return F.interpolate(self.classifier(out), size=size, mode="bilinear", align_corners=False)


class PyramidSegmenter(nn.Module):
    """Semantic segmentation: ViT -> pyramid -> UPerNet/FPN decoder.

    Args:
        vit: The backbone.
        num_classes: Output classes K.
        decoder: ``"upernet"`` or ``"fpn"``.
        width: Decoder channels.
    """

    def __init__(self, vit: VisionTransformer, num_classes: int, decoder: str, width: int) -> None:
        super().__init__()
        self.vit = vit
        self.indices = pyramid_indices(len(vit.blocks))
        self.pyramid = ViTPyramid(vit.embed_dim)
        self.head = _Decoder(decoder, self.pyramid.channels, num_classes, width)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, K, H, W) logits."""
        feats = self.pyramid(vit_features(self.vit, x, self.indices))
        return self.head(feats, (x.shape[-2], x.shape[-1]))


class DPTSegmenter(nn.Module):
    """Semantic segmentation with smp's DPT, which holds the timm ViT itself.

    Args:
        model: timm ViT name.
        in_chans: Input bands.
        img_size: Chip size.
        num_classes: Output classes K.
        model_kwargs: Extra timm arguments.
    """

    def __init__(
        self,
        model: str,
        in_chans: int,
        img_size: int,
        num_classes: int,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if "depth" in (model_kwargs or {}):
            raise ValueError(
                "the DPT decoder cannot take a ViT with a `depth` override (smp's encoder uses "
                f"the same argument name); use a stock timm architecture instead of {model} "
                f"{model_kwargs}, or decoder upernet/fpn"
            )
        self.dpt = smp.DPT(
            encoder_name=f"tu-{model}",
            encoder_weights=None,
            in_channels=in_chans,
            classes=num_classes,
            img_size=img_size,
            dynamic_img_size=True,
            num_classes=0,
            **(model_kwargs or {}),
        )

    @property
    def vit(self) -> VisionTransformer:
        """The ViT inside smp's encoder."""
        vit: VisionTransformer = self.dpt.encoder.model
        return vit

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, K, H, W) logits."""
        out: Tensor = self.dpt(x)
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


class ChangeSegmenter(nn.Module):
    """Siamese change detection: shared ViT + pyramid, per-scale fusion, decoder.

    Args:
        vit: The shared backbone.
        fusion: ``"diff"`` (|a - b|) or ``"concat"`` (concatenate, 1x1 conv back to the width).
        decoder: ``"upernet"`` or ``"fpn"``.
        width: Decoder channels.
        num_classes: 2 (no change, change).
    """

    def __init__(
        self,
        vit: VisionTransformer,
        fusion: Literal["diff", "concat"] | str,
        decoder: str,
        width: int,
        num_classes: int = 2,
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion {fusion!r} is not one of {', '.join(FUSIONS)}")
        self.vit = vit
        self.fusion = fusion
        self.indices = pyramid_indices(len(vit.blocks))
        self.pyramid = ViTPyramid(vit.embed_dim)
        channels = self.pyramid.channels
        self.merge = nn.ModuleList(
            [nn.Conv2d(2 * c, c, 1) for c in channels] if fusion == "concat" else []
        )
        self.head = _Decoder(decoder, channels, num_classes, width)

    def forward(self, before: Tensor, after: Tensor) -> Tensor:
        """(B, C, H, W) twice -> (B, 2, H, W) logits."""
        both = torch.cat([before, after])  # (2B, C, H, W): one pass through the shared encoder
        feats = self.pyramid(vit_features(self.vit, both, self.indices))
        b = before.shape[0]
        fused = []
        for i, f in enumerate(feats):
            fa, fb = f[:b], f[b:]  # (2B, c, h, w) -> 2 x (B, c, h, w)
            if self.fusion == "diff":
                fused.append((fa - fb).abs())
            else:
                fused.append(
                    self.merge[i](torch.cat([fa, fb], dim=1))
                )  # (B, 2c, h, w) -> (B, c, h, w)
        return self.head(fused, (before.shape[-2], before.shape[-1]))


class PyramidBackbone(nn.Module):
    """ViT -> pyramid -> torchvision FPN, as a torchvision detection backbone.

    Args:
        vit: The backbone.
        out_channels: FPN width.
    """

    def __init__(self, vit: VisionTransformer, out_channels: int = 256) -> None:
        super().__init__()
        self.vit = vit
        self.indices = pyramid_indices(len(vit.blocks))
        self.pyramid = ViTPyramid(vit.embed_dim)
        self.fpn = FeaturePyramidNetwork(
            self.pyramid.channels, out_channels, extra_blocks=LastLevelMaxPool()
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        """(B, C, H, W) -> FPN levels ``"0"``..``"3"`` (strides 4..32 at 16 px) and ``"pool"``."""
        feats = self.pyramid(vit_features(self.vit, x, self.indices))
        out: OrderedDict[str, Tensor] = self.fpn(
            OrderedDict((str(i), f) for i, f in enumerate(feats))
        )
        return out


def build_detector(
    vit: VisionTransformer, num_classes: int, chip_size: int, in_chans: int
) -> FasterRCNN:
    """Torchvision Faster R-CNN on the ViT pyramid.

    Images are normalised by the task before they reach the model, so torchvision's own
    normalisation is the identity and its resizing is disabled (min = max = chip size).

    Args:
        vit: The backbone.
        num_classes: Object classes, without background.
        chip_size: Training chip size.
        in_chans: Input bands.

    Returns:
        The detector; ``model.backbone.vit`` is the ViT.
    """
    backbone = PyramidBackbone(vit)
    anchors = AnchorGenerator(
        sizes=((16,), (32,), (64,), (128,), (256,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5
    )
    pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], output_size=7, sampling_ratio=2)
    model = FasterRCNN(
        backbone,
        num_classes=num_classes + 1,
        rpn_anchor_generator=anchors,
        box_roi_pool=pool,
        min_size=chip_size,
        max_size=chip_size,
        image_mean=[0.0] * in_chans,
        image_std=[1.0] * in_chans,
        box_detections_per_img=300,
    )
    model.transform.size_divisible = 2 * int(vit.patch_embed.patch_size[0])
    return model


def vit_of(model: nn.Module) -> VisionTransformer:
    """The ViT inside any model built here."""
    backbone = getattr(model, "backbone", None)
    holder = backbone if isinstance(backbone, PyramidBackbone) else model
    vit = holder.vit
    if not isinstance(vit, VisionTransformer):  # pragma: no cover - defensive
        raise TypeError(f"{type(model).__name__} holds no timm ViT")
    return vit
