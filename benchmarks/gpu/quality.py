"""The quality part: the pretrained teacher against its random initialisation (kNN)."""

import argparse
from typing import Any

from benchmarks.gpu.common import PROBE, device_name


def part_quality(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """KNN accuracy of the eager run's teacher vs the same task at its random initialisation."""
    import torch

    from geopera.data.sampling.datamodule import PretrainDataModule
    from geopera.pretrain.config import load_pretrain_config
    from geopera.pretrain.probe import knn_accuracy, load_probe
    from geopera.pretrain.run import _datamodule, build_task

    run_dir = args.work / "pretrain-eager"
    if not (run_dir / "checkpoints" / "last.ckpt").is_file():
        raise FileNotFoundError(f"{run_dir} has no checkpoint: the pretrain part did not finish")
    config = load_pretrain_config(run_dir / "config.yaml")
    dm = _datamodule(config)
    if not isinstance(dm, PretrainDataModule):
        raise TypeError("the quality part reads the eager run's archive, not shards")
    dm.prepare()
    task = build_task(config, dm, dm.normalisation()).to(device_name()).eval()
    assert config.data.probe is not None  # set by pretrain_config
    probe = load_probe(config.data.probe, dm.sources, len(dm.band_names), config.data.patch_size)
    counts = torch.bincount(probe.labels)
    result: dict[str, Any] = {
        "probe": PROBE,
        "samples": len(probe.labels),
        "classes": probe.classes,
        "majority_baseline": float(counts.max() / counts.sum()),
        "steps": config.trainer.max_steps,
        "rows": [],
    }
    random_init = {k: knn_accuracy(task, probe, k) for k in (5, 20)}
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    task.load_state_dict(state["state_dict"])
    trained = {k: knn_accuracy(task, probe, k) for k in (5, 20)}
    for k in (5, 20):
        result["rows"].append({"k": k, "random_init": random_init[k], "pretrained": trained[k]})
    return result
