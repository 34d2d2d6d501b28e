"""The device check's Markdown report: one table per part."""

from typing import Any


def markdown(report: dict[str, Any]) -> str:
    """The check's tables."""
    env = report.get("env", {})
    lines = [
        f"# geopera GPU check, {env.get('date', '?')}",
        "",
        f"Device: {env.get('gpu', 'CPU (no CUDA)')}, {env.get('cpus')} CPU cores; torch "
        f"{env.get('versions', {}).get('torch')}, CUDA {env.get('cuda_version')}. "
        f"Command: `{report.get('command')}`. Budget {report.get('budget_s')} s, "
        f"took {report.get('seconds', 0):.0f} s.",
        "",
        "| part | status | seconds |",
        "|---|---|---|",
    ]
    for part in report["parts"]:
        r = report.get(part, {})
        lines.append(f"| {part} | {r.get('status', 'missing')} | {r.get('seconds', 0):.0f} |")
    for section in (_step, _pretrain, _quality, _downstream):
        lines += section(report)
    return "\n".join(lines) + "\n"


def _step(report: dict[str, Any]) -> list[str]:
    """The step part's table (empty if it measured nothing)."""
    lines: list[str] = []
    step = report.get("step", {}).get("configs", {})
    if step:
        lines += [
            "",
            "## step (bf16, PerA vs full view)",
            "",
            "| config | batch | PerA img/s | full img/s | ratio (goal 2.2) | PerA max batch "
            "| full max batch | ratio (goal 2) | PerA GFLOP/img | PerA TFLOP/s | of bf16 "
            "peak | ops/step | syncs/step |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in step.items():
            if r.get("status") != "ok":
                lines.append(f"| {name} | {r.get('status')} |" + " |" * 11)
                continue
            mb = r.get("max_batch", {})
            batch_ratio = r.get("ratio_max_batch")
            p = r["pera"]
            share = p.get("peak_share")
            lines.append(
                f"| {name} | {r['batch']} | {p['images_per_s']:.0f} | "
                f"{r['full_view']['images_per_s']:.0f} | {r['ratio_images_per_s']:.2f} | "
                f"{mb.get('pera')} | {mb.get('full_view')} | "
                f"{'-' if batch_ratio is None else f'{batch_ratio:.2f}'} | "
                f"{p.get('flops_per_image', 0) / 1e9:.1f} | {p.get('tflops', 0):.1f} | "
                f"{'-' if share is None else f'{share:.1%}'} | {p.get('operators_per_step')} | "
                f"{p.get('syncs_per_step')} |"
            )
    return lines


def _pretrain(report: dict[str, Any]) -> list[str]:
    """The pretrain part's table: eager, compiled and from shards."""
    lines: list[str] = []
    pre = report.get("pretrain", {})
    rows = [(v, pre[v]) for v in ("eager", "compiled", "shards") if isinstance(pre.get(v), dict)]
    if rows:
        lines += [
            "",
            f"## pretrain ({pre.get('steps')} steps, {pre.get('workers')} workers, "
            f"{pre.get('precision')})",
            "",
            "| variant | end-to-end img/s | step-only img/s | ratio (goal 0.9) | data_wait "
            "(goal 5 %) | GPU util median % (goal 85) |",
            "|---|---|---|---|---|---|",
        ]
        for v, r in rows:
            if "ratio" not in r:  # skipped, or stopped before both rates were measured
                lines.append(f"| {v} | {r.get('status', 'incomplete')} | | | | |")
                continue
            lines.append(
                f"| {v} | {r['end_to_end']:.1f} | {r['step_only']:.1f} | {r['ratio']:.2f} | "
                f"{r['data_wait']:.1%} | {r.get('gpu_util_median', '-')} |"
            )
    return lines


def _quality(report: dict[str, Any]) -> list[str]:
    """The quality part's table."""
    lines: list[str] = []
    quality = report.get("quality", {})
    if quality.get("rows"):
        lines += [
            "",
            f"## quality (kNN on {quality['samples']} labelled chips, majority "
            f"{quality['majority_baseline']:.2f}, after {quality['steps']} steps)",
            "",
            "| k | random init | pretrained |",
            "|---|---|---|",
        ]
        for r in quality["rows"]:
            lines.append(f"| {r['k']} | {r['random_init']:.3f} | {r['pretrained']:.3f} |")
    return lines


def _downstream(report: dict[str, Any]) -> list[str]:
    """The downstream part's line."""
    lines: list[str] = []
    down = report.get("downstream", {})
    if down.get("predict"):
        p = down["predict"]
        peak = "n/a (CPU)" if p["peak_gpu_mib"] is None else f"{p['peak_gpu_mib']:.0f} MiB"
        lines += [
            "",
            "## downstream",
            "",
            f"finetune: {down['finetune']['steps']} steps in "
            f"{down['finetune']['seconds']:.0f} s (process included). predict "
            f"{p['size']} px: {p['mpx_per_s']:.2f} Mpx/s, forward-only "
            f"{p['forward_only_mpx_per_s']:.2f} Mpx/s (ratio {p['ratio_vs_forward']:.2f}), "
            f"peak GPU memory {peak}.",
        ]
    return lines
