"""The remote-read benchmark runs, and its request counts hold (not its timings)."""

import json
import subprocess
import sys

from tests.conftest import REPO


def test_bench_remote_runs_and_geopera_needs_no_more_requests() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_remote",
            "--patches",
            "12",
            "--size",
            "64",
            "--latency-ms",
            "0",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {(r["case"], r["pass"]): r for r in json.loads(proc.stdout)}
    assert set(rows) == {
        ("local raw", "cold"),
        ("remote raw", "cold"),
        ("remote geopera", "cold"),
        ("remote geopera + cache", "cold"),
        ("remote geopera + cache", "warm"),
    }
    raw = rows[("remote raw", "cold")]["requests_per_patch"]
    assert rows[("local raw", "cold")]["requests_per_patch"] == 0  # local reads: no HTTP
    assert 0 < rows[("remote geopera", "cold")]["requests_per_patch"] <= raw
    assert all(r["patches_per_s"] > 0 for r in rows.values())
