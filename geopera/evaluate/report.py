"""The evaluation's outputs: results.json, .md, .csv, results.png and confusion.png."""

import csv
import json
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from geopera.evaluate.scoring import BASELINES

#: Columns of a result row, in order.
ROW_FIELDS = (
    "weights", "protocol", "metric", "value", "ci_low", "ci_high", "n_train", "n_test", "band_rule",
    "headline",
)  # fmt: skip
#: What the baseline rows are, for the reader.
BASELINE_NOTE = (
    "Baselines: `majority` always answers the most frequent class of the fit images (dense: "
    "pixels); `chance` is the expected score of a uniform random guess among the classes."
)
HEALTH_FIELDS = ("weights", "rank", "std", "mean_cosine")


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(results: dict[str, Any]) -> str:
    """The comparisons first, then the headline rows, every row and the health table."""
    head = results["headline"]
    lines = [
        f"# Evaluation: {results['data']}",
        "",
        *[d["sentence"] for d in results["differences"]],
        "",
        f"Headline metric: {head['image']} for image-level probes (largest / smallest "
        f"class: {results['imbalance']:.1f}; above 1.5 the classes count as imbalanced and "
        f"balanced accuracy leads), {head['dense']} for dense probes. Seeds: "
        f"{results['seeds']} (spatially disjoint splits); intervals: 95 % percentile bootstrap "
        "over test samples; comparisons: paired bootstrap on the same test samples. "
        + BASELINE_NOTE,
        "",
        "## Headline",
        "",
        *_table([r for r in results["rows"] if r["headline"]], ROW_FIELDS[:-1]),
        "",
        "## Every metric",
        "",
        *_table(results["rows"], ROW_FIELDS[:-1]),
        "",
        "Label-free health (all images): effective rank (RankMe), mean per-dimension "
        "std of the L2-normalised embeddings, mean pairwise cosine.",
        "",
        *_table(results["health"], HEALTH_FIELDS),
    ]
    return "\n".join(lines) + "\n"


def _table(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> list[str]:
    """Markdown lines of a table of ``rows`` (dicts) over ``fields``."""
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    return lines + ["| " + " | ".join(_fmt(r[f]) for f in fields) + " |" for r in rows]


def plot(results: dict[str, Any], path: Path) -> None:
    """The headline metric: a bar with its interval per backbone and protocol.

    The baselines are dashed lines across each protocol's group; the legend is outside the axes.
    """
    rows = [r for r in results["rows"] if r["headline"] and r["weights"] not in BASELINES]
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    weights = list(dict.fromkeys(r["weights"] for r in rows))
    fig, ax = plt.subplots(figsize=(3.2 + 0.5 * len(protocols) * max(1, len(weights)), 3.6))
    width = 0.8 / max(1, len(weights))
    for j, w in enumerate(weights):
        mine = {r["protocol"]: r for r in rows if r["weights"] == w}
        xs = [
            i + (j - (len(weights) - 1) / 2) * width for i, p in enumerate(protocols) if p in mine
        ]
        got = [mine[p] for p in protocols if p in mine]
        errors = [[r["value"] - r["ci_low"] for r in got], [r["ci_high"] - r["value"] for r in got]]
        label = w if len(w) < 48 else "…" + w[-46:]
        ax.bar(xs, [r["value"] for r in got], width * 0.9, yerr=errors, capsize=3, label=label)
    _baseline_lines(ax, results, protocols)
    metric = {r["protocol"]: r["metric"] for r in rows}
    short = {"balanced_accuracy": "bal. acc.", "accuracy": "acc.", "macro_f1": "macro-F1"}
    ticks = [f"{p}\n({short.get(metric[p], metric[p])})" for p in protocols]
    ax.set_xticks(range(len(protocols)), ticks, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("headline score (95 % interval)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(str(results["data"])[-80:], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _baseline_lines(ax: Any, results: dict[str, Any], protocols: list[str]) -> None:
    """A dashed line per baseline across each protocol's bars, at its value of that metric."""
    styles = {"majority": ("black", "--"), "chance": ("grey", ":")}
    for name, (colour, style) in styles.items():
        labelled = False
        for i, protocol in enumerate(protocols):
            metric = next(
                r["metric"] for r in results["rows"] if r["protocol"] == protocol and r["headline"]
            )
            kind = "pixel" if protocol == "dense" else "image"
            row = next(
                (
                    r
                    for r in results["rows"]
                    if r["weights"] == name and r["protocol"] == kind and r["metric"] == metric
                ),
                None,
            )
            if row is None:
                continue
            ax.hlines(row["value"], i - 0.45, i + 0.45, colors=colour, linestyles=style,
                      label=None if labelled else name)  # fmt: skip
            labelled = True


def plot_confusion(results: dict[str, Any], path: Path) -> None:
    """The confusion matrix (row-normalised) of the best backbone on the first protocol."""
    first = next(r for r in results["rows"] if r["headline"] and r["weights"] not in BASELINES)
    best = max(
        (r for r in results["rows"] if r["headline"] and r["protocol"] == first["protocol"]
         and r["weights"] not in BASELINES),
        key=lambda r: r["value"],
    )  # fmt: skip
    detail = next(
        d
        for d in results["classes_detail"]
        if d["weights"] == best["weights"] and d["protocol"] == best["protocol"]
    )
    matrix = np.asarray(detail["confusion"], dtype=float)
    shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)  # (K, K) rows = truth
    k = len(results["classes"])
    fig, ax = plt.subplots(figsize=(1.6 + 0.45 * k, 1.2 + 0.45 * k))
    ax.imshow(shares, vmin=0, vmax=1, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=7,
                color="white" if shares[i, j] > 0.5 else "black")  # fmt: skip
    names = [str(c)[:12] for c in results["classes"]]
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    who = best["weights"] if len(best["weights"]) < 40 else "…" + best["weights"][-38:]
    ax.set_title(f"{who}\n{best['protocol']}, all seeds", fontsize=7)
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
    plot_confusion(results, folder / "confusion.png")
