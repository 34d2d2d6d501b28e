"""Does pretraining help downstream? Slovenia land use (mIoU) and OSCD Bercy change (F1).

Three initialisations of the same ViT (``vit_small_patch16_224``, 13 Sentinel-2 bands):

* ``random``: no pretraining;
* ``pera``: ``geopera pretrain`` on the five Slovenia Sentinel-2 scenes (all bands, inside
  their footprint), ``--pretrain-steps`` steps of ``--batch-size`` 64 px patches
  (64 px global and 32 px local crops of them);
* ``mae``: TorchGeo's ``MAE`` task on the same patches (same data module, normalisation, batch
  size and number of steps; TorchGeo's own augmentation, which resizes crops to 224 px).

Each backbone is then fine-tuned with ``configs/finetune/slovenia_lulc.yaml`` and
``configs/finetune/oscd_bercy.yaml`` for ``--finetune-steps`` steps (same seed, same splits) and
the test metric of ``metrics.json`` is reported. The Slovenia pretraining scenes are the
fine-tuning images too (the test blocks included): the pretraining is self-supervised, so no
label leaks, but it has seen the test area's pixels. OSCD Bercy is a different place (Paris).

One command: ``python -m benchmarks.bench_transfer [--pretrain-steps 200] [--finetune-steps 200]
[--inits random pera mae] [--work DIR]`` (reads ``$GEOPERA_SHARED_DATA`` or ``../shared/data``).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common.paths import REPO, shared_data_dir

MODEL = "vit_small_patch16_224"
#: MAE steps per Lightning epoch (TorchGeo's MAE schedules its lr per epoch).
EPOCH_STEPS = 25


def scenes() -> list[str]:
    folder = shared_data_dir() / "a_pretrain" / "sentinel2_eolearn_slovenia"
    return sorted(str(p) for p in folder.glob("S2L1C_reference_scene*.tif"))


def footprint_bbox(path: str) -> str:
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as ds:
        bounds = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    return ",".join(f"{v:.6f}" for v in bounds)


def geopera(*args: str) -> None:
    exe = str(Path(sys.executable).with_name("geopera"))
    result = subprocess.run([exe, *args], cwd=REPO, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"geopera {' '.join(args)} failed:\n{result.stderr[-4000:]}")


def pretrain_pera(out: Path, steps: int, batch: int) -> None:
    geopera(
        "pretrain",
        "--archive",
        *scenes(),
        "--roi",
        footprint_bbox(scenes()[0]),
        "--set",
        "data.bands=null",
        "--set",
        "data.patch_size=64",
        "--set",
        "views.global_size=64",
        "--set",
        "views.local_size=32",
        "--set",
        f"model.backbone={MODEL}",
        "--batch-size",
        str(batch),
        "--max-steps",
        str(steps),
        "--workers",
        "0",
        "--out",
        str(out),
        "--no-progress",
    )


def pretrain_mae(out: Path, steps: int, batch: int) -> None:
    import lightning as L
    import torch
    from torchgeo.tasks import MAE

    from geopera.core.outputs import save_torch_atomic, write_json
    from geopera.data.sampling.datamodule import PretrainDataModule
    from geopera.transforms.normalise import scale_unit

    L.seed_everything(0, verbose=False)
    dm = PretrainDataModule(
        scenes(),
        footprint_bbox(scenes()[0]),
        bands=None,
        patch_size=64,
        batch_size=batch,
        num_workers=0,
        seed=0,
    )
    norm = dm.normalisation()
    p2, p98 = torch.tensor(norm.p2[0]), torch.tensor(norm.p98[0])
    mean = torch.tensor(norm.mean).view(1, -1, 1, 1)
    std = torch.tensor(norm.std).view(1, -1, 1, 1)

    class Batches(torch.utils.data.IterableDataset[dict[str, torch.Tensor]]):
        """The pretraining patches, normalised as geopera does, ``steps`` batches."""

        def __iter__(self) -> Any:  # one epoch = EPOCH_STEPS batches (see max_epochs below)
            for i, batch in enumerate(dm.train_dataloader()):
                if i >= EPOCH_STEPS:
                    return
                x = batch["image"].float()  # (B, C, 64, 64) raw
                yield {"image": (scale_unit(x, p2, p98) - mean) / std}

    dm.setup()
    task = MAE(model=MODEL, in_channels=dm.in_chans, size=224, warmup_epochs=1)
    # TorchGeo's MAE steps its lr per epoch (warm-up from 1e-8 over the first epoch): one
    # epoch of all the steps would train at lr ~ 0, so epochs are EPOCH_STEPS batches
    trainer = L.Trainer(
        max_steps=steps,
        max_epochs=max(2, -(-steps // EPOCH_STEPS)),
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, train_dataloaders=torch.utils.data.DataLoader(Batches(), batch_size=None))
    out.mkdir(parents=True, exist_ok=True)
    save_torch_atomic(task.backbone.vit.state_dict(), out / "backbone.pth")
    meta = {
        "model": MODEL,
        "model_kwargs": {},
        "in_chans": dm.in_chans,
        "bands": dm.band_names,
        "img_size": 224,
        "patch_size": 16,
        "ssl_method": "mae",
        "steps": steps,
    }
    write_json(out / "backbone.json", meta)


def local_config(name: str, work: Path) -> Path:
    text = (REPO / "configs" / "finetune" / name).read_text()
    out = work / name
    out.write_text(text.replace("../shared/data", str(shared_data_dir())))
    return out


def finetune(task: str, config: Path, weights: str, steps: int, out: Path) -> dict[str, Any]:
    if not (out / "metrics.json").is_file():
        geopera(
            "finetune",
            task,
            "--config",
            str(config),
            "--weights",
            weights,
            "--max-steps",
            str(steps),
            "--out",
            str(out),
            "--no-progress",
        )
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    return metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pretrain-steps", type=int, default=200)
    p.add_argument("--finetune-steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--inits", nargs="+", default=["random", "pera", "mae"])
    p.add_argument("--work", type=Path, default=REPO / "runs" / "transfer")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for init in args.inits:
        weights, seconds = MODEL, 0.0
        if init != "random":
            out = args.work / f"{init}-{args.pretrain_steps}"
            start = time.perf_counter()
            if not (out / "backbone.pth").is_file():
                (pretrain_pera if init == "pera" else pretrain_mae)(
                    out, args.pretrain_steps, args.batch_size
                )
            seconds = time.perf_counter() - start
            weights = str(out)
        row: dict[str, Any] = {
            "init": init,
            "pretrain_steps": 0 if init == "random" else args.pretrain_steps,
            "pretrain_s": seconds,
        }
        for task, name, key in (
            ("segmentation", "slovenia_lulc.yaml", "miou"),
            ("change", "oscd_bercy.yaml", "f1"),
        ):
            out = args.work / f"ft-{init}-{name.removesuffix('.yaml')}-{args.finetune_steps}"
            m = finetune(task, local_config(name, args.work), weights, args.finetune_steps, out)
            row[f"{name}:test_{key}"] = m["test"].get(key)
            row[f"{name}:val_{key}"] = m["val"].get(key)
            row[f"{name}:band_rule"] = m["band_rule"]
        rows.append(row)
        print(json.dumps(row), flush=True)

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    print(
        f"\nfine-tuning: {args.finetune_steps} steps; pretraining: {args.pretrain_steps} steps "
        f"of {args.batch_size} patches; {MODEL}, 13 bands, CPU"
    )
    print("| init | pretraining wall (s) | Slovenia test mIoU (val) | OSCD Bercy test F1 (val) |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['init']} | {r['pretrain_s']:.0f} | "
            f"{fmt(r['slovenia_lulc.yaml:test_miou'])} ({fmt(r['slovenia_lulc.yaml:val_miou'])}) | "
            f"{fmt(r['oscd_bercy.yaml:test_f1'])} ({fmt(r['oscd_bercy.yaml:val_f1'])}) |"
        )


if __name__ == "__main__":
    main()
