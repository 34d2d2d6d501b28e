"""Projection heads: 3-layer MLP, L2 normalisation, weight-normalised linear layer.

The class head (DINO head) maps the class token to ``K`` prototype scores; the pixel head maps
mask-token outputs to ``p * p * C`` pixel values. Both share this shape, as in the authors'
implementation: ``Linear -> GELU -> Linear -> GELU -> Linear(bottleneck) -> L2 norm ->
weight-normalised Linear (no bias, norm fixed at 1 at initialisation)``.
"""

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


class ProjectionHead(nn.Module):
    """MLP, L2 normalisation and weight-normalised output layer.

    Args:
        in_dim: Input width (the ViT embedding dimension).
        out_dim: Output width (prototypes, or ``p * p * C`` pixel values).
        hidden_dim: Hidden width (2048 in the paper).
        bottleneck_dim: Bottleneck width (384 in the paper).
        layers: Number of MLP layers (3).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 384,
        layers: int = 3,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [bottleneck_dim]
        modules: list[nn.Module] = []
        for i in range(layers):
            modules.append(nn.Linear(dims[i], dims[i + 1]))
            if i < layers - 1:
                modules.append(nn.GELU())
        self.mlp = nn.Sequential(*modules)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.parametrizations.weight.original0.data.fill_(1.0)  # g = 1
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear) and not hasattr(module, "parametrizations"):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Project.

        Args:
            x: (..., in_dim).

        Returns:
            (..., out_dim).
        """
        x = F.normalize(self.mlp(x), dim=-1, p=2)  # (..., in_dim) -> (..., bottleneck)
        out: Tensor = self.last_layer(x)
        return out
