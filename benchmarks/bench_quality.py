"""The honest learning curve at CPU scale: does PerA's backbone get better than random init?

One PerA run of the shipped CPU recipe (``configs/pretrain/pera_vit_tiny_cpu.yaml``, ViT-S/16)
on the sample archive (Landsat 8, rows 224077/224078, inside ``datasets/sample/area.geojson``)
for ``--budget-min`` minutes of this machine, with a checkpoint at every ``budget / points``;
TorchGeo's ``MAE`` task trained for the same wall time on the same patches (same data module,
normalisation and batch size; TorchGeo's augmentation, crops resized to 224 px); and the same
architecture with random weights. Each backbone is judged by ``geopera evaluate knn linear`` on
the held-out probes of ``probes.py`` (Chesapeake NAIP at 1 m, NEON RGB at 0.1 m in Florida
and Yellowstone, Slovenia Sentinel-2 at 10 m: other sensors, places and resolutions than the
pretraining; the Yellowstone images are fetched from PyPI, in the ``deepforest`` wheel, the
first time).

The continued-pretraining arm (``continue``) starts from the curve's first (or, with
``--continue-from last``, last) checkpoint and continues it with ``geopera pretrain --init`` on
each archive of ``--continue-on`` (the 13-band Slovenia scenes: other bands; the NEON
Yellowstone crops: another place and a 300x finer resolution) for ``--continue-min`` minutes.
It is compared on that archive's probe with the starting backbone, with a run from scratch
there for the same total wall time (the start's minutes plus the continuation's), and with a
run from scratch for the continuation's own steps (equal time on the target: what a user whose
backbone exists compares).

One command: ``python -m benchmarks.bench_quality [--budget-min 25] [--points 5]
[--arms pera mae continue] [--continue-min 5] [--continue-on slovenia neon-yell]
[--continue-from first last] [--seeds 5] [--suite] [--work DIR]``. Prints the
tables (headline score and 95 % interval per backbone, budget and probe; effective rank) and
writes them to ``WORK/table.md``; ``--suite`` adds ``geopera evaluate --suite shared``'s table.
Runs already in ``WORK`` are reused.
"""

import argparse
import csv
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from benchmarks.common.probes import (
    MODEL,
    REPO,
    ROI,
    SAMPLE,
    Probe,
    geopera,
    held_out_probes,
    neon_yell,
    shared_data,
    slovenia,
)
from benchmarks.common.quality import continue_pairs, curve_pairs, judge

#: The Slovenia scenes' 13 Sentinel-2 bands (the continued arm's "other bands").
S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
            "B12"]  # fmt: skip
#: MAE steps per Lightning epoch (TorchGeo's MAE schedules its lr per epoch).
EPOCH_STEPS = 50


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

    every = max(1, int(budget_s * steps_per_second(work)) // points)
    steps = every * points  # the last checkpoint is the end of the run
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
    if card["steps"] not in [f["step"] for f in found]:  # a run whose end was no checkpoint
        minutes = ((run / "backbone.pth").stat().st_mtime - start) / 60
        found.append(
            {"arm": "pera", "weights": str(run), "step": card["steps"], "minutes": minutes}
        )
    return found


class _EpochBatches(torch.utils.data.IterableDataset[dict[str, torch.Tensor]]):
    """``EPOCH_STEPS`` normalised batches per epoch from the pretraining loader, endlessly.

    TorchGeo's MAE steps its lr schedule per epoch (a linear warm-up from 1e-8 over the first
    epoch, then cosine): an endless epoch would train at lr ~ 0.
    """

    def __init__(self, dm: Any) -> None:
        norm = dm.normalisation()
        self.dm = dm
        self.p2, self.p98 = torch.tensor(norm.p2[0]), torch.tensor(norm.p98[0])
        self.mean = torch.tensor(norm.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(norm.std).view(1, -1, 1, 1)
        self.stream: Any = iter(())

    def __iter__(self) -> Any:
        from geopera.transforms.normalise import scale_unit

        for _ in range(EPOCH_STEPS):
            batch: Any = next(self.stream, None)
            if batch is None:
                self.stream = iter(self.dm.train_dataloader())
                batch = next(self.stream)
            x = batch["image"].float()  # (B, C, 128, 128) raw
            yield {"image": (scale_unit(x, self.p2, self.p98) - self.mean) / self.std}


class _SaveAtMarks(L.Callback):
    """Saves the MAE encoder as a backbone folder each time the wall clock passes a mark."""

    def __init__(self, work: Path, marks: list[float], dm: Any) -> None:
        self.work, self.marks, self.dm = work, marks, dm
        self.start = time.time()
        self.found: list[dict[str, Any]] = []

    def on_train_batch_end(self, trainer: L.Trainer, task: Any, *args: Any) -> None:
        """Save a point when its mark has passed; stop after the last."""
        from geopera.core.contracts import BackboneCard
        from geopera.core.outputs import save_torch_atomic

        elapsed = time.time() - self.start
        if len(self.found) < len(self.marks) and elapsed >= self.marks[len(self.found)]:
            folder = self.work / f"mae_point{len(self.found) + 1}"
            folder.mkdir(exist_ok=True)
            save_torch_atomic(task.backbone.vit.state_dict(), folder / "backbone.pth")
            entry = {"arm": "mae", "weights": str(folder), "step": trainer.global_step,
                     "minutes": elapsed / 60}  # fmt: skip
            self.found.append(entry)
            card = BackboneCard(
                model=MODEL, in_chans=3, img_size=224, token_size=16, bands=self.dm.band_names,
                band_identities=self.dm.band_identities(),  # so that other sensors map onto them
                ssl_method="mae", steps=trainer.global_step,
            )  # fmt: skip
            card.write(folder / BackboneCard.FILE)
            (folder / "bench.json").write_text(json.dumps(entry))
        if len(self.found) >= len(self.marks):
            trainer.should_stop = True


def mae(work: Path, budget_s: float, points: int) -> list[dict[str, Any]]:
    """TorchGeo's MAE for the same wall time on the same patches; a backbone per budget point."""
    from torchgeo.tasks import MAE

    from geopera.data.sampling.datamodule import PretrainDataModule

    done = sorted(work.glob("mae_point*/backbone.json"))
    if done:  # trained before (training may have ended before the last point)
        return [json.loads((p.parent / "bench.json").read_text()) for p in done]
    L.seed_everything(0, verbose=False)
    dm = PretrainDataModule(
        [str(SAMPLE)], str(ROI), bands="rgb", patch_size=128, batch_size=16, num_workers=0, seed=0
    )
    dm.setup()
    save = _SaveAtMarks(work, [budget_s * (i + 1) / points for i in range(points)], dm)
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
        callbacks=[save],
    )
    loader = torch.utils.data.DataLoader(_EpochBatches(dm), batch_size=None)
    trainer.fit(task, train_dataloaders=loader)
    return save.found


@dataclasses.dataclass(frozen=True)
class Target:
    """An archive the continued arm continues on, and the probe of its place.

    Attributes:
        name: The name in the tables and run folders.
        probe: The labelled images; the arm pretrains on its images (never on its labels).
        bands: ``--bands`` of the runs there.
        sets: Recipe overrides for its images' size.
    """

    name: str
    probe: Probe
    bands: list[str]
    sets: list[str]

    def scenes(self) -> list[str]:
        """The probe's images: the archive."""
        pattern = Path(self.probe.data)
        return sorted(str(p) for p in pattern.parent.glob(pattern.name))

    def roi(self) -> str:
        """The images' footprints as an ROI (WKT in their CRS)."""
        import rasterio
        import shapely

        boxes = []
        for scene in self.scenes():
            with rasterio.open(scene) as ds:
                boxes.append(shapely.box(*ds.bounds))
                crs = ds.crs.to_string()
        return f"{crs};{shapely.union_all(boxes).wkt}"


def targets(work: Path) -> dict[str, Target]:
    """The continued arm's archives: other bands (Slovenia), another place and scale (NEON).

    The Slovenia scenes are 100 px wide: 64 px patches (torchgeo's sampler needs room for a
    patch's diagonal) and 64/32 px crops, at the resolution of the data.
    """
    small = ["data.patch_size=64", "views.global_size=64", "views.local_size=32"]
    return {
        "slovenia": Target("Slovenia", slovenia(), S2_BANDS, small),
        "neon-yell": Target("Yellowstone", neon_yell(work), ["red", "green", "blue"], []),
    }


def target_run(
    work: Path, target: Target, name: str, steps: int, init: str | None
) -> dict[str, Any]:
    """The recipe on the target's images, timed (otherwise the shipped recipe)."""
    run = work / name
    if not (run / "bench.json").is_file():
        sets = [*target.sets, f"trainer.checkpoint_every={steps}"]
        if init:  # the fresh heads learn alone for the first tenth
            sets.append(f"optim.freeze_backbone_steps={steps // 10}")
        start = time.time()
        geopera(
            "pretrain", "--archive", *target.scenes(), "--roi", target.roi(),
            "--bands", *target.bands, "--max-steps", str(steps), "--out", str(run),
            *(["--init", init] if init else []), *[a for s in sets for a in ("--set", s)],
            "--no-progress",
        )  # fmt: skip
        minutes = (time.time() - start) / 60
        entry = {"arm": name, "weights": str(run), "step": steps, "minutes": minutes}
        (run / "bench.json").write_text(json.dumps(entry))
    found: dict[str, Any] = json.loads((run / "bench.json").read_text())
    return found


def continued(
    work: Path, target: Target, start: dict[str, Any], minutes: float
) -> list[dict[str, Any]]:
    """Continue ``start`` (a sample-archive backbone) on the target; and scratch at equal time.

    Returns the starting backbone, the continued one (its minutes and steps: the start's plus
    its own), the one trained from scratch on the target for the continued one's total time,
    and the one trained from scratch for the continuation's own steps (the comparison of a user
    whose backbone exists: the start's minutes are spent already).
    """
    name = target.probe.name
    steps = max(10, int(minutes * 60 * steps_per_second(work)))
    more = target_run(
        work, target, f"continued_{name}_from{start['step']}", steps, start["weights"]
    )
    total = start["minutes"] + more["minutes"]
    per_minute = more["step"] / more["minutes"]  # on the target, start-up included
    scratch_steps = max(10, int(total * per_minute))
    scratch = target_run(work, target, f"scratch_{name}_{scratch_steps}steps", scratch_steps, None)
    short = target_run(work, target, f"scratch_{name}_{more['step']}steps", more["step"], None)
    both = {"minutes": total, "step": start["step"] + more["step"]}
    return [
        start | {"arm": "start (sample archive)"},
        more | both | {"arm": f"continued on {target.name}"},
        scratch | {"arm": f"scratch on {target.name}"},
        short | {"arm": f"scratch on {target.name}, the continuation's steps"},
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-min", type=float, default=25.0)
    p.add_argument("--points", type=int, default=5)
    p.add_argument("--arms", nargs="+", default=["pera", "mae", "continue"],
                   choices=["pera", "mae", "continue"])  # fmt: skip
    p.add_argument("--continue-min", type=float, default=5.0, help="minutes on the target")
    p.add_argument(
        "--continue-on",
        nargs="+",
        default=["slovenia", "neon-yell"],
        choices=["slovenia", "neon-yell"],
        help="the continued arm's archives",
    )
    p.add_argument(
        "--continue-from",
        nargs="+",
        default=["first"],
        choices=["first", "last"],
        help="the curve's checkpoints the continued arm starts from",
    )
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--suite", action="store_true", help="also run evaluate --suite shared")
    p.add_argument("--work", type=Path, default=REPO / "bench_work" / "quality")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if not (SAMPLE / "MANIFEST.json").is_file():
        geopera("data", "sample", "--out", str(SAMPLE))
    budget = args.budget_min * 60
    random = {"arm": "random", "weights": MODEL, "step": 0, "minutes": 0.0}
    points = pera(args.work, budget, args.points) if {"pera", "continue"} & set(args.arms) else []
    # trained first: the MAE arm is the longest, and may be cut short (it is reused)
    on = [targets(args.work)[t] for t in args.continue_on] if "continue" in args.arms else []
    starts = {"first": points[0], "last": points[-1]} if on else {}
    arms = [
        (t, which, [random, *continued(args.work, t, starts[which], args.continue_min)])
        for t in on
        for which in args.continue_from
    ]
    curve = [random, *(points if "pera" in args.arms else [])]
    if "mae" in args.arms:
        curve += mae(args.work, budget, args.points)
    text = judge(args.work, curve, held_out_probes(args.work), args.seeds, curve_pairs(curve))
    for target, which, arm in arms:
        start = starts[which]
        text += f"\n\nContinued pretraining on {target.name} from the curve's {which} checkpoint "
        text += f"({start['minutes']:.1f} min, {start['step']} steps):\n\n"
        text += judge(args.work, arm, [target.probe], args.seeds, continue_pairs(arm))
    if args.suite:
        text += "\n\n" + _suite(args, [e["weights"] for e in curve])
    (args.work / "table.md").write_text(text + "\n")
    print(f"{args.seeds} spatial splits per probe; work in {args.work}")
    print(text)


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
