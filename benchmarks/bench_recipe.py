"""Screen the CPU recipe's knobs: which of them move the held-out probes at this scale?

Every arm is the shipped CPU recipe (``configs/pretrain/pera_vit_tiny_cpu.yaml``) on the sample
archive with one knob changed (``--set``), trained for the same number of steps from the same
seed; the backbones (and random init) are then judged by ``geopera evaluate knn linear`` on the
held-out probes of ``probes.py``: the Chesapeake NAIP scenes (1 m) and the Slovenia Sentinel-2
scenes with their land-use labels (10 m), neither seen in pretraining.

One command: ``python -m benchmarks.bench_recipe [--steps 150] [--arms base lr_x2 ...]
[--seeds 5] [--work DIR]``. Prints one table (arm, change, minutes, probes' headline scores
with 95 % intervals, effective rank) and writes it to ``WORK/table.md``. Runs already trained
in ``WORK`` are reused, so an interrupted screen continues where it stopped.
"""

import argparse
import time
from pathlib import Path

from benchmarks.common.probes import (
    MODEL,
    REPO,
    ROI,
    Probe,
    evaluate,
    geopera,
    held_out_probes,
    score_cell,
)

#: Arm -> the ``--set`` overrides that make it: one knob of those the issue names per arm,
#: around the shipped recipe (2 local crop pairs, 1024 prototypes since the screen of
#: 2026-12-02, which ran these arms around 4 pairs and 4096 prototypes).
ARMS: dict[str, list[str]] = {
    "base": [],
    "lr_x2": ["optim.lr=3.2e-3"],
    "lr_half": ["optim.lr=8e-4"],
    "crops_64_32": ["views.global_size=64", "views.local_size=32"],
    "local_4": ["views.n_local=4"],
    "prototypes_4096": ["model.prototypes=4096"],
    "teacher_temp_07": ["optim.teacher_temp=0.07"],
    "weight_decay_01": ["optim.weight_decay=0.1"],
}


def train(work: Path, arm: str, steps: int) -> tuple[Path, float]:
    """One arm's run (reused when complete): its folder and its wall minutes."""
    run = work / arm
    if not (run / "backbone.pth").is_file():
        sets = [f"trainer.checkpoint_every={steps}", *ARMS[arm]]
        start = time.time()
        geopera(
            "pretrain", "--roi", str(ROI), "--max-steps", str(steps), "--out", str(run),
            *[a for s in sets for a in ("--set", s)], "--no-progress",
        )  # fmt: skip
        (run / "bench_minutes").write_text(f"{(time.time() - start) / 60:.2f}")
    return run, float((run / "bench_minutes").read_text())


def table(arms: list[str], runs: dict[str, tuple[Path, float]], probes: list[Probe],
          results: dict[str, dict]) -> str:  # fmt: skip
    """The screening table: one row per arm (random init first), one column per probe metric."""
    head = ["arm", "change", "minutes"]
    for probe in probes:
        head += [f"{probe.name} kNN-20", f"{probe.name} linear", f"{probe.name} rank"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in ["random", *arms]:
        weights = MODEL if arm == "random" else str(runs[arm][0])
        change = "random weights" if arm == "random" else ", ".join(ARMS[arm]) or "(shipped)"
        minutes = 0.0 if arm == "random" else runs[arm][1]
        cells = [arm, change, f"{minutes:.1f}"]
        for probe in probes:
            res = results[probe.name]
            cells += [score_cell(res, weights, "knn20"), score_cell(res, weights, "linear")]
            cells.append(f"{next(h['rank'] for h in res['health'] if h['weights'] == weights):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--work", type=Path, default=REPO / "bench_work" / "recipe")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    runs = {arm: train(args.work, arm, args.steps) for arm in args.arms}
    weights = [MODEL, *[str(runs[a][0]) for a in args.arms]]
    probes = held_out_probes(args.work)
    results = {pr.name: evaluate(pr, weights, args.work, ["knn", "linear"], args.seeds)
               for pr in probes}  # fmt: skip
    text = table(args.arms, runs, probes, results)
    (args.work / "table.md").write_text(text + "\n")
    print(f"{args.steps} steps per arm, {args.seeds} spatial splits per probe")
    print(text)


if __name__ == "__main__":
    main()
