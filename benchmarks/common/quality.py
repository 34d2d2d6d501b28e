"""The tables and verdicts of the quality benchmarks: kNN accuracy by probe, gains, goals."""

from pathlib import Path
from typing import Any

from benchmarks.common.probes import (
    Probe,
    evaluate,
    gain,
    score_cell,
)


def table(entries: list[dict[str, Any]], probes: list[Probe], results: dict[str, Any]) -> str:
    """One row per backbone: kNN-20, kNN-5 and linear per probe (headline metric), rank."""
    head = ["backbone", "minutes", "steps"]
    for probe in probes:
        head += [f"{probe.name} kNN-20", f"{probe.name} kNN-5", f"{probe.name} linear"]
    head.append(f"{probes[0].name} rank")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        w = e["weights"]
        cells = [e["arm"], f"{e['minutes']:.1f}", str(e["step"])]
        for probe in probes:
            cells += [score_cell(results[probe.name], w, p) for p in ("knn20", "knn5", "linear")]
        health = results[probes[0].name]["health"]
        cells.append(f"{next(h['rank'] for h in health if h['weights'] == w):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gains(pairs: list[tuple[str, str, str]], probes: list[Probe], results: dict[str, Any]) -> str:
    """Paired differences (``label``, better, than) per probe and protocol, 95 % intervals."""
    head = ["comparison"]
    for probe in probes:
        head += [f"{probe.name} kNN-20", f"{probe.name} kNN-5", f"{probe.name} linear"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, better, than in pairs:
        cells = [label]
        for probe in probes:
            res = results[probe.name]
            cells += [gain(res, better, than, p) for p in ("knn20", "knn5", "linear")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def judge(
    work: Path,
    entries: list[dict[str, Any]],
    probes: list[Probe],
    seeds: int,
    pairs: list[tuple[str, str, str]],
) -> str:
    """Evaluate the backbones (kNN and linear) on the probes: their table, then the pairs'."""
    weights = [e["weights"] for e in entries]
    results = {p.name: evaluate(p, weights, work, ["knn", "linear"], seeds) for p in probes}
    return table(entries, probes, results) + "\n\n" + gains(pairs, probes, results)


def curve_pairs(curve: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """Every backbone against random init; PerA against MAE at the nearest wall time."""
    random = curve[0]["weights"]
    pairs = [
        (f"{e['arm']} {e['minutes']:.1f} min - random", e["weights"], random) for e in curve[1:]
    ]
    maes = [e for e in curve if e["arm"] == "mae"]
    for e in (e for e in curve if e["arm"] == "pera" and maes):
        m = min(maes, key=lambda m: abs(m["minutes"] - e["minutes"]))
        label = f"pera {e['minutes']:.1f} min - mae {m['minutes']:.1f} min"
        pairs.append((label, e["weights"], m["weights"]))
    return pairs


def continue_pairs(arm: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """Continued against its start, against scratch at equal time, and each against random."""
    random, start, more, scratch, short = (e["weights"] for e in arm)
    return [
        ("continued - start", more, start),
        ("continued - scratch (equal total time)", more, scratch),
        ("continued - scratch (equal time on the target)", more, short),
        ("continued - random", more, random),
        ("start - random", start, random),
        ("scratch - random", scratch, random),
        ("scratch, the continuation's steps - random", short, random),
    ]
