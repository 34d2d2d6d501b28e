"""Helpers for fine-tuning tests: configs pointed at the shared data, tiny backbones."""

from pathlib import Path

import yaml

from tests.pretrain.conftest import geopera_exe, run_cli

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "finetune"

#: A 2-block, 64-wide ViT: fine-tunes in seconds on the CPU.
TINY_VIT = ["--set", "model.backbone_kwargs={depth: 2, embed_dim: 64, num_heads: 2}",
            "--set", "model.decoder_channels=64", "--no-progress"]  # fmt: skip


def local_config(name: str, shared_data: Path, folder: Path) -> Path:
    """A copy of a shipped config with ``../shared/data`` replaced by the real data folder."""
    text = (CONFIGS / name).read_text().replace("../shared/data", str(shared_data))
    yaml.safe_load(text)  # still valid YAML
    out = folder / name
    out.write_text(text)
    return out


__all__ = ["CONFIGS", "TINY_VIT", "geopera_exe", "local_config", "run_cli"]
