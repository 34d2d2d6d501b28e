"""The honest learning curve at CPU scale: does PerA's backbone get better than random init?

One PerA run of the shipped CPU recipe (``configs/pretrain/pera_vit_tiny_cpu.yaml``, ViT-S/16)
on the sample archive (Landsat 8, rows 224077/224078, inside ``datasets/sample/area.geojson``)
for ``--budget-min`` minutes of this machine, with a checkpoint at every ``budget / points``;
TorchGeo's ``MAE`` task trained for the same wall time on the same patches (same data module,
normalisation and batch size; TorchGeo's augmentation, crops resized to 224 px); and the same
architecture with random weights. Each backbone is judged by ``geopera evaluate knn linear
dense`` on labelled images the pretraining never saw: the four Chesapeake NAIP scenes of
``../shared/data/b_segmentation/chesapeake_naip_geobench`` (256 px at 1 m with a land-cover
mask: another sensor, place and resolution), cut into 32 px chips (class: the majority label;
spatial blocks never split), their red, green and blue bands written with the descriptions
``B4, B3, B2`` so that the band rule selects them by name.

One command: ``python benchmarks/bench_quality.py [--budget-min 30] [--points 3]
[--arms pera mae] [--seeds 5] [--work DIR]``. Prints a table (the headline score and 95 %
interval per backbone and budget, effective rank), writes it to ``WORK/table.md``, then judges
the same backbones on the shared suite (``geopera evaluate --suite shared``) and prints its
table (backbones and baselines x sets).
"""

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODEL = "vit_small_patch16_224"
SAMPLE = REPO / "datasets" / "sample"
ROI = SAMPLE / "area.geojson"
CONFIG = REPO / "configs" / "pretrain" / "pera_vit_tiny_cpu.yaml"
#: MAE steps per Lightning epoch (TorchGeo's MAE schedules its lr per epoch).
EPOCH_STEPS = 50


def shared_data() -> Path:
    env = os.environ.get("GEOPERA_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def geopera(*args: str) -> str:
    exe = str(Path(sys.executable).with_name("geopera"))
    result = subprocess.run([exe, *args], cwd=REPO, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"geopera {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result.stdout


def eval_scenes(work: Path) -> Path:
    """The four Chesapeake NAIP scenes as RGB GeoTIFFs named like Landsat 8's bands, + labels."""
    import shutil

    import rasterio

    out = work / "chesapeake_scenes"
    if out.is_dir():
        return out
    source = shared_data() / "b_segmentation" / "chesapeake_naip_geobench"
    tmp = work / ".chesapeake_scenes"
    tmp.mkdir(parents=True, exist_ok=True)
    for image in sorted(source.glob("*_naip_RGBN.tif")):
        key = image.name.removesuffix("_naip_RGBN.tif")
        with rasterio.open(image) as ds:
            rgb = ds.read([1, 2, 3])  # NAIP: red, green, blue, near infrared
            profile = ds.profile | {"count": 3}
        with rasterio.open(tmp / f"{key}_rgb.tif", "w", **profile) as dst:
            dst.write(rgb)
            dst.descriptions = ("B4", "B3", "B2")
        shutil.copy(source / f"{key}_landcover.tif", tmp / f"{key}_labels.tif")
    tmp.rename(out)
    return out


def steps_per_second(work: Path) -> float:
    """The recipe's training speed on this machine (a 12-step run, first steps left out)."""
    out = work / "calibrate"
    if not out.is_dir():
        geopera(
            "pretrain",
            "--roi",
            str(ROI),
            "--max-steps",
            "12",
            "--out",
            str(out),
            "--set",
            "trainer.log_every=1",
            "--no-progress",
        )
    with open(out / "metrics.csv", newline="") as fh:
        rates = [float(r["images_per_s"]) for r in csv.DictReader(fh) if r["images_per_s"]]
    batch = 16
    return sum(rates[4:]) / len(rates[4:]) / batch


def pera(work: Path, budget_s: float, points: int) -> list[dict[str, Any]]:
    """One run of the recipe sized to the budget; a backbone per checkpoint."""
    import torch

    from geopera.core.outputs import save_torch_atomic

    steps = max(points, int(budget_s * steps_per_second(work)))
    every = math.ceil(steps / points)
    run = work / "pera"
    if not (run / "backbone.pth").is_file():
        start = time.time()
        geopera(
            "pretrain",
            "--roi",
            str(ROI),
            "--max-steps",
            str(steps),
            "--out",
            str(run),
            "--set",
            f"trainer.checkpoint_every={every}",
            "--no-progress",
        )
        (run / "bench_start").write_text(str(start))
    start = float((run / "bench_start").read_text())
    card = json.loads((run / "backbone.json").read_text())
    found = []
    for ckpt in sorted((run / "checkpoints").glob("step*.ckpt")):
        step = int("".join(c for c in ckpt.stem if c.isdigit()))
        folder = work / f"pera_step{step}"
        if not (folder / "backbone.pth").is_file():
            state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
            prefix = "model.teacher.backbone."
            teacher = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            folder.mkdir(exist_ok=True)
            save_torch_atomic(teacher, folder / "backbone.pth")
            (folder / "backbone.json").write_text(json.dumps(card | {"steps": step}))
        found.append(
            {
                "arm": "pera",
                "weights": str(folder),
                "step": step,
                "minutes": (ckpt.stat().st_mtime - start) / 60,
            }
        )
    return found


def mae(work: Path, budget_s: float, points: int) -> list[dict[str, Any]]:
    """TorchGeo's MAE for the same wall time on the same patches; a backbone per budget point."""
    import lightning as L
    import torch
    from torchgeo.tasks import MAE

    from geopera.core.outputs import save_torch_atomic
    from geopera.data.sampling.datamodule import PretrainDataModule
    from geopera.transforms.normalise import scale_unit

    done = sorted(work.glob("mae_point*/backbone.json"))
    if len(done) >= points:
        return [json.loads((p.parent / "bench.json").read_text()) for p in done]
    L.seed_everything(0, verbose=False)
    dm = PretrainDataModule(
        [str(SAMPLE)], str(ROI), bands="rgb", patch_size=128, batch_size=16, num_workers=0, seed=0
    )
    norm = dm.normalisation()
    p2, p98 = torch.tensor(norm["p2"][0]), torch.tensor(norm["p98"][0])
    mean = torch.tensor(norm["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(norm["std"]).view(1, -1, 1, 1)

    stream = iter(())

    class Batches(torch.utils.data.IterableDataset[dict[str, torch.Tensor]]):
        """EPOCH_STEPS batches per epoch.

        TorchGeo's MAE steps its lr schedule per epoch (a linear warm-up from 1e-8 over the
        first epoch, then cosine): an endless epoch would train at lr ~ 0.
        """

        def __iter__(self) -> Any:
            nonlocal stream
            for _ in range(EPOCH_STEPS):
                batch = next(stream, None)
                if batch is None:
                    stream = iter(dm.train_dataloader())
                    batch = next(stream)
                x = batch["image"].float()  # (B, C, 128, 128) raw
                yield {"image": (scale_unit(x, p2, p98) - mean) / std}

    marks = [budget_s * (i + 1) / points for i in range(points)]
    found: list[dict[str, Any]] = []

    class Save(L.Callback):
        def __init__(self) -> None:
            self.start = time.time()

        def on_train_batch_end(self, trainer: L.Trainer, task: Any, *args: Any) -> None:
            elapsed = time.time() - self.start
            if found and len(found) >= len(marks):
                trainer.should_stop = True
                return
            if elapsed >= marks[len(found)]:
                folder = work / f"mae_point{len(found) + 1}"
                folder.mkdir(exist_ok=True)
                save_torch_atomic(task.backbone.vit.state_dict(), folder / "backbone.pth")
                entry = {
                    "arm": "mae",
                    "weights": str(folder),
                    "step": trainer.global_step,
                    "minutes": elapsed / 60,
                }
                found.append(entry)
                meta = {
                    "model": MODEL,
                    "model_kwargs": {},
                    "in_chans": 3,
                    "bands": dm.band_names,
                    "img_size": 224,
                    "token_size": 16,
                    "ssl_method": "mae",
                    "steps": trainer.global_step,
                }
                (folder / "backbone.json").write_text(json.dumps(meta))
                (folder / "bench.json").write_text(json.dumps(entry))
                if len(found) >= len(marks):
                    trainer.should_stop = True

    dm.setup()
    task = MAE(model=MODEL, in_channels=3, size=224, warmup_epochs=1)
    # the cosine runs over the epochs the budget is expected to hold (PerA's measured speed)
    epochs = max(2, math.ceil(budget_s * steps_per_second(work) / EPOCH_STEPS))
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Save()],
    )
    loader = torch.utils.data.DataLoader(Batches(), batch_size=None)
    trainer.fit(task, train_dataloaders=loader)
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-min", type=float, default=30.0)
    p.add_argument("--points", type=int, default=3)
    p.add_argument("--arms", nargs="+", default=["pera", "mae"], choices=["pera", "mae"])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--work", type=Path, default=REPO / "bench_work" / "quality")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if not (SAMPLE / "MANIFEST.json").is_file():
        geopera("data", "sample", "--out", str(SAMPLE))
    scenes = eval_scenes(args.work)
    budget = args.budget_min * 60
    entries = [{"arm": "random", "weights": MODEL, "step": 0, "minutes": 0.0}]
    for arm in args.arms:
        entries += (pera if arm == "pera" else mae)(args.work, budget, args.points)
    out = args.work / f"eval_{time.strftime('%Y%m%d_%H%M%S')}"
    geopera(
        "evaluate",
        "knn",
        "linear",
        "dense",
        "--weights",
        *[e["weights"] for e in entries],
        "--data",
        str(scenes / "*_rgb.tif"),
        "--labels",
        str(scenes / "*_labels.tif"),
        "--chip-size",
        "32",
        "--out",
        str(out),
        "--seeds",
        str(args.seeds),
        "--no-progress",
        "--no-cache",
    )
    results = json.loads((out / "results.json").read_text())
    rank = {h["weights"]: h["rank"] for h in results["health"]}

    def cell(weights: str, protocol: str) -> str:
        r = next(
            r
            for r in results["rows"]
            if r["weights"] == weights and r["protocol"] == protocol and r["headline"]
        )
        return f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"

    metric = results["headline"]["classification"]  # balanced accuracy on imbalanced classes
    lines = [
        f"| backbone | minutes | steps | kNN-20 {metric} | kNN-5 {metric} | linear {metric} "
        "| dense mIoU | effective rank |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        w = e["weights"]
        lines.append(
            f"| {e['arm']} | {e['minutes']:.1f} | {e['step']} | {cell(w, 'knn20')} | "
            f"{cell(w, 'knn5')} | {cell(w, 'linear')} | {cell(w, 'dense')} | "
            f"{rank[w]:.1f} |"
        )
    table = "\n".join(lines)
    (args.work / "table.md").write_text(table + "\n")
    suite = _suite(args, [e["weights"] for e in entries])
    print(
        f"{results['n_images']} held-out images, {len(results['classes'])} classes, "
        f"{args.seeds} spatial splits; evaluation in {out}"
    )
    print(table)
    print(suite)


def _suite(args: argparse.Namespace, weights: list[str]) -> str:
    """The same backbones on the shared suite (``geopera evaluate --suite shared``): its table."""
    out = args.work / f"suite_{time.strftime('%Y%m%d_%H%M%S')}"
    geopera(
        "evaluate", "knn", "linear", "dense", "--weights", *weights, "--suite",
        f"shared:{shared_data()}", "--out", str(out), "--seeds", str(args.seeds),
        "--no-progress", "--no-cache",
    )  # fmt: skip
    return (out / "suite.md").read_text()


if __name__ == "__main__":
    main()
