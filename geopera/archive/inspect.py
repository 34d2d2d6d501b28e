"""What ``geopera archive inspect`` reports: sources, their ROI overlap, and problem files."""

import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from geopera.data.roi import ROI
from geopera.data.sensors import sensor
from geopera.data.sources.model import Archive, Source

_COLUMNS = ("source", "files", "bands", "dtype", "res", "crs", "lon/lat bounds")


def _overlap(source: Source, roi: ROI) -> dict[str, float]:
    try:
        local = roi.to_crs(source.crs)
    except Exception:
        return {"fraction_of_roi": 0.0, "pixels": 0.0}
    inside = local & source.footprint
    rx, ry = source.res
    return {
        "fraction_of_roi": float(inside.area / local.area) if local.area else 0.0,
        "pixels": float(inside.area / (rx * ry)),
    }


def inspect_report(archive: Archive, roi: ROI | None) -> dict[str, Any]:
    """The JSON report of ``archive inspect``.

    Args:
        archive: The discovered archive.
        roi: Optional ROI.

    Returns:
        ``{"sources": [...], "problems": [...]}`` (plus ``"roi"`` when given). Each source
        names its sensor (None if not recognised) and what each band measures.
    """
    sources = []
    for s in archive.sources:
        row = s.describe()
        found = sensor(s.family)
        row["sensor"] = found.title if found is not None else None
        row["band_identities"] = [i.to_dict() if i else None for i in s.band_identities()]
        if roi is not None:
            row["roi_overlap"] = _overlap(s, roi)
        sources.append(row)
    report: dict[str, Any] = {
        "sources": sources,
        "problems": [{"path": p.path, "reason": p.reason} for p in archive.problems],
    }
    if roi is not None:
        report["roi"] = {"origin": roi.origin, "bounds_wgs84": list(roi.bounds_wgs84)}
    return report


def _source_cells(row: dict[str, Any], with_roi: bool) -> list[str]:
    b = row["bounds_wgs84"]
    cells = [
        row["name"],
        str(len(row["files"])),
        ",".join(row["bands"]),
        row["dtype"],
        f"{row['res'][0]:.4g}",
        row["crs"] if len(row["crs"]) < 20 else "custom WKT",
        f"{b[0]:.3f},{b[1]:.3f},{b[2]:.3f},{b[3]:.3f}" if b else "n/a",
    ]
    if with_roi:
        cells.append(f"{row['roi_overlap']['fraction_of_roi']:.0%}")
    return cells


def print_report(report: dict[str, Any]) -> None:
    """Print the report as two tables: sources, then problem files (when there are any).

    Args:
        report: What :func:`inspect_report` returned.
    """
    console = Console(width=None if sys.stdout.isatty() else 160)
    with_roi = "roi" in report
    table = Table(title=f"{len(report['sources'])} sources")
    for col in (*_COLUMNS, *(("ROI overlap",) if with_roi else ())):
        table.add_column(col)
    for row in report["sources"]:
        table.add_row(*(Text(c) for c in _source_cells(row, with_roi)))  # names are data
    console.print(table)
    if report["problems"]:
        problems = Table(title=f"{len(report['problems'])} problems (skipped files)")
        problems.add_column("path")
        problems.add_column("reason")
        for p in report["problems"]:
            problems.add_row(Text(p["path"]), Text(p["reason"]))
        console.print(problems)
