"""The device check and its pieces, on the CPU: it must not rot between GPU loans."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
import torch

from benchmarks import bench_step, gpu_bundle
from benchmarks.common import step as measured
from tests.conftest import REPO


def _tiny_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_step.add_step_args(parser)
    return parser.parse_args(
        [
            "--model",
            "vit_tiny_patch16_224",
            "--depth",
            "1",
            "--global-size",
            "64",
            "--local-size",
            "48",
            "--n-local",
            "1",
            "--image-size",
            "64",
            "--prototypes",
            "64",
            "--head-hidden-dim",
            "32",
            "--head-bottleneck-dim",
            "16",
        ]
    )


def test_largest_batch_search_survives_an_injected_out_of_memory() -> None:
    stepper = measured.Stepper("pera", _tiny_args())
    real_step = stepper.step
    seen: list[int] = []

    def step(batch: torch.Tensor) -> None:
        seen.append(batch.shape[0])
        if batch.shape[0] > 6:  # the injected fault, raised where the allocator would
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        real_step(batch)

    stepper.step = step  # type: ignore[method-assign]
    found = measured.largest_batch(stepper.fits, start=2, limit=64)
    # 2, 4 fit; 8 runs out; one refinement at 1.5 x 4 = 6 fits.
    assert seen == [2, 4, 8, 6]
    assert found == {
        "largest": 6,
        "stopped_by": "oom",
        "tried": {2: True, 4: True, 8: False, 6: True},
    }
    stepper.step(stepper.batch(2))  # the model still trains after the failure


def test_largest_batch_stops_at_limit_and_deadline_and_reraises_other_errors() -> None:
    assert measured.largest_batch(lambda b: True, 4, 16)["largest"] == 16
    assert measured.largest_batch(lambda b: False, 4, 16)["largest"] == 0
    timed = measured.largest_batch(lambda b: True, 4, 1 << 20, deadline=0.0)
    assert timed == {"largest": 0, "stopped_by": "time", "tried": {}}
    stepper = measured.Stepper("full_view", _tiny_args())

    def broken(batch: torch.Tensor) -> None:
        raise RuntimeError("shape mismatch")

    stepper.step = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="shape mismatch"):
        stepper.fits(2)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (torch.OutOfMemoryError("CUDA out of memory"), True),
        (RuntimeError("CUDA error: out of memory"), True),
        (RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_out_of_memory_is_told_apart(error: BaseException, expected: bool) -> None:
    assert measured.is_out_of_memory(error) is expected


def test_pyogrio_standin_says_what_is_missing() -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(REPO / 'benchmarks' / 'standins')!r}); "
        "import pyogrio; pyogrio.read_dataframe('x.gpkg')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1
    assert "ImportError: pyogrio.read_dataframe: pyogrio is not installed" in out.stderr
    assert "WKT" in out.stderr


def test_boto_standins_let_litdata_stream_from_disk_and_refuse_s3() -> None:
    """Without boto3 and botocore (too large to carry), LitData still imports; S3 says why not."""
    code = (
        f"import sys; sys.path.insert(0, {str(REPO / 'benchmarks' / 'standins')!r}); "
        "import boto3; assert boto3.__version__.endswith('standin'); "
        "from litdata import StreamingDataLoader, StreamingDataset; "
        "from litdata.streaming.writer import BinaryWriter; print('imported'); "
        "boto3.client('s3')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "imported", out.stderr[-2000:]
    assert out.returncode == 1
    assert "ImportError: boto3.client: boto3 is not installed" in out.stderr
    assert "local folder" in out.stderr


def test_bundle_pins_cover_what_the_check_imports(tmp_path: Path, shared_data: Path) -> None:
    pinned = {p.split("==")[0].replace("-", "_").lower() for p in gpu_bundle.pins()}
    script = (REPO / "benchmarks" / "gpu_check.sh").read_text()
    needed = script.split('NEEDED="import ')[1].split('"')[0].replace(" ", "").split(",")
    assert set(needed) <= pinned
    gpu_bundle.copy_data(shared_data, tmp_path)
    for folder in gpu_bundle.DATA_FOLDERS:
        copied = sorted(p.relative_to(tmp_path / folder) for p in (tmp_path / folder).rglob("*"))
        original = sorted(
            p.relative_to(shared_data / folder) for p in (shared_data / folder).rglob("*")
        )
        assert copied, folder
        assert copied == original, folder
    assert 0 < gpu_bundle.tree_bytes() < 20 * 2**20  # the tree leaves room for the wheels


@pytest.mark.slow
def test_cpu_smoke_runs_every_part_and_writes_the_results(
    tmp_path: Path, shared_data: Path
) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "GEOPERA_SHARED_DATA": str(shared_data)}
    proc = subprocess.run(
        [
            "bash",
            str(REPO / "benchmarks" / "gpu_check.sh"),
            "--cpu-smoke",
            "--out",
            str(out),
            "--work",
            str(work),
            "--data",
            str(shared_data),
            "--budget-s",
            "600",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + (out / "gpu_check.log").read_text()[-5000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert {"env", "step", "pretrain", "quality", "downstream"} <= set(report)
    assert all(report[p]["status"] == "ok" for p in ("step", "pretrain", "quality", "downstream"))
    step = report["step"]["configs"]["vit_t2_64"]
    assert step["pera"]["images_per_s"] > 0
    assert step["full_view"]["images_per_s"] > 0
    assert step["max_batch"] == {"pera": 4, "full_view": 4}  # the smoke's limit
    for case in ("pera", "full_view"):  # where the time goes
        assert step[case]["flops_per_image"] > 0
        assert step[case]["tflops"] > 0
        assert step[case]["operators_per_step"] > 100
        assert step[case]["syncs_per_step"] == 0
    assert step["pera"]["flops_per_image"] < step["full_view"]["flops_per_image"]
    eager = report["pretrain"]["eager"]
    assert eager["status"] == "completed"
    assert eager["end_to_end"] > 0
    assert eager["ratio"] > 0
    assert 0 <= eager["data_wait"] <= 1
    assert (work / "pretrain-eager" / "backbone.pth").is_file()
    shards = report["pretrain"]["shards"]  # the eager run again, streamed from shards
    assert shards["status"] == "completed"
    assert shards["chips"] == 64
    assert shards["end_to_end"] > 0
    assert 0 <= shards["data_wait"] <= 1
    card = json.loads((work / "pretrain-shards" / "backbone.json").read_text())
    assert card["shards"]["location"] == str((work / "shards").resolve())
    quality = report["quality"]
    assert quality["samples"] == 53
    assert [r["k"] for r in quality["rows"]] == [5, 20]
    assert all(0 <= r[key] <= 1 for r in quality["rows"] for key in ("random_init", "pretrained"))
    predict = report["downstream"]["predict"]
    assert predict["size"] == 512
    assert predict["mpx_per_s"] > 0
    with rasterio.open(work / "pred.tif") as src:
        assert (src.width, src.height) == (512, 512)
        assert src.read(1).max() >= 1  # classes, not an empty map
    markdown = (out / "gpu_check.md").read_text()
    assert "| step | ok |" in markdown
    assert "## quality" in markdown


def test_bad_arguments_end_in_one_line_and_write_nothing(tmp_path: Path, shared_data: Path) -> None:
    done = tmp_path / "done"
    done.mkdir()
    (done / "gpu_check.json").write_text("{}")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "pretrain-eager").mkdir()
    script = ["-m", "benchmarks.gpu_check"]
    cases = [
        (["--out", str(done)], "already holds a check's results"),
        (["--out", str(tmp_path / "a"), "--budget-s", "0"], "--budget-s must be positive"),
        (["--out", str(tmp_path / "b"), "--work", str(busy)], "is not empty"),
        (["--out", str(tmp_path / "c"), "--data", str(tmp_path)], "run `make gpu-wheels`"),
    ]
    for extra, message in cases:
        out = subprocess.run(
            [sys.executable, *script, "--data", str(shared_data), *extra],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert out.returncode == 2, extra
        assert out.stderr.count("\n") == 1, out.stderr  # one line, no traceback
        assert message in out.stderr
    assert (done / "gpu_check.json").read_text() == "{}"
    assert not any((tmp_path / name).exists() for name in "abc")
