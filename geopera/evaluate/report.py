"""The evaluation's outputs: results.json, results.md, results.csv and results.png."""

import csv
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

#: Columns of a result row, in order.
ROW_FIELDS = (
    "weights", "protocol", "metric", "value", "ci_low", "ci_high", "n_train", "n_test", "band_rule",
)  # fmt: skip
HEALTH_FIELDS = ("weights", "rank", "std", "mean_cosine")


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(results: dict[str, Any]) -> str:
    """The result rows and the health table as Markdown."""
    lines = [
        f"# Evaluation: {results['data']}",
        "",
        f"Seeds: {results['seeds']} "
        "(spatially disjoint splits); intervals: 95 % percentile bootstrap over test "
        "samples.",
        "",
    ]
    lines += ["| " + " | ".join(ROW_FIELDS) + " |", "|" + "---|" * len(ROW_FIELDS)]
    lines += ["| " + " | ".join(_fmt(r[f]) for f in ROW_FIELDS) + " |" for r in results["rows"]]
    lines += [
        "",
        "Label-free health (all images): effective rank (RankMe), mean per-dimension "
        "std of the L2-normalised embeddings, mean pairwise cosine.",
        "",
    ]
    lines += ["| " + " | ".join(HEALTH_FIELDS) + " |", "|" + "---|" * len(HEALTH_FIELDS)]
    for h in results["health"]:
        lines.append("| " + " | ".join(_fmt(h[f]) for f in HEALTH_FIELDS) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """One bar with its interval per backbone and protocol (the headline metric of each)."""
    rows = [r for r in results["rows"] if r["metric"] in ("accuracy", "mIoU")]
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    weights = list(dict.fromkeys(r["weights"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(protocols) * max(1, len(weights)) / 2, 3.6))
    width = 0.8 / max(1, len(weights))
    for j, w in enumerate(weights):
        xs, ys, lo, hi = [], [], [], []
        for i, p in enumerate(protocols):
            r = next((r for r in rows if r["weights"] == w and r["protocol"] == p), None)
            if r is None:
                continue
            xs.append(i + (j - (len(weights) - 1) / 2) * width)
            ys.append(r["value"])
            lo.append(r["value"] - r["ci_low"])
            hi.append(r["ci_high"] - r["value"])
        label = w if len(w) < 48 else "…" + w[-46:]
        ax.bar(xs, ys, width * 0.9, yerr=[lo, hi], capsize=3, label=label)
    metric = {r["protocol"]: r["metric"] for r in rows}
    ax.set_xticks(range(len(protocols)), [f"{p}\n({metric[p]})" for p in protocols])
    ax.set_ylim(0, 1)
    ax.set_ylabel("test score (95 % interval)")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(str(results["data"])[-80:], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(results: dict[str, Any], folder: Path) -> None:
    """All four outputs into ``folder``."""
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (folder / "results.md").write_text(markdown(results))
    with open(folder / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=ROW_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results["rows"])
    plot(results, folder / "results.png")
