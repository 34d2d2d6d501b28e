"""``geopera pretrain --shards``: pretraining streamed from ``archive shards``, no raster reads."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import CliResult
from tests.pretrain.conftest import TINY

SCENE = "c_change_detection/oscd_bercy/T1_S2L1C_13bands_10m.tif"


@pytest.fixture(scope="module")
def shard_set(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from geopera.cli.main import main

    out = tmp_path_factory.mktemp("shards") / "s2"
    args = ["archive", "shards", str(shared_data / SCENE), "--roi", "2.36,48.822,2.40,48.865"]
    assert main([*args, "--count", "48", "--size", "48", "--out", str(out), "--workers", "0"]) == 0
    return out


def test_pretrain_from_shards_names_them_in_the_card(
    shard_set: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    run = tmp_path / "run"
    before = {p: p.stat().st_mtime_ns for p in shard_set.rglob("*")}
    result = cli(
        "pretrain", "--shards", str(shard_set), *TINY, "--max-steps", "4", "--out", str(run)
    )
    assert result.returncode == 0, result.stderr
    assert {p: p.stat().st_mtime_ns for p in shard_set.rglob("*")} == before  # read, not changed
    card = json.loads((run / "backbone.json").read_text())
    assert card["shards"]["location"] == str(shard_set.resolve())
    assert len(card["shards"]["sha256"]) == 64
    assert card["in_chans"] == 13
    assert card["band_identities"][3]["common"] == "red"
    metrics = (run / "metrics.csv").read_text()
    assert "data_wait" in metrics.splitlines()[0]


def test_a_resumed_run_continues_the_stream(
    shard_set: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    base = ["pretrain", "--shards", str(shard_set), *TINY]
    assert cli(*base, "--max-steps", "6", "--out", str(straight)).returncode == 0
    assert cli(*base, "--max-steps", "3", "--out", str(split)).returncode == 0
    resumed = cli("pretrain", "--resume", str(split), "--max-steps", "6", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    ckpt = torch.load(split / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    (position,) = [
        loader["num_samples_yielded"]
        for loader in ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    ]
    assert position == 6 * 4  # the stream went on from chip 12, not from its start
    one = torch.load(straight / "backbone.pth", weights_only=True)
    two = torch.load(split / "backbone.pth", weights_only=True)
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, msg=key)


def test_missing_shards_are_one_line(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    result = cli("pretrain", "--shards", str(tmp_path / "no" / "such"), *TINY, "--max-steps", "1")
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_pretrain_from_shards_in_object_storage(
    shard_set: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    """The shard folder copied to a local S3 server; the endpoint from ``AWS_ENDPOINT_URL``."""
    from moto.core.authorization import enable_iam_authentication

    from tests.fakes.s3 import s3_server, upload_folder

    with s3_server():
        upload_folder(shard_set, "chips", "s2/v1")
        run = tmp_path / "run"
        args = ["pretrain", "--shards", "s3://chips/s2/v1", *TINY, "--max-steps", "3"]
        result = cli(*args, "--set", f"data.cache={tmp_path / 'cache'}", "--out", str(run))
        assert result.returncode == 0, result.stderr
        assert json.loads((run / "backbone.json").read_text())["shards"]["location"] == (
            "s3://chips/s2/v1"
        )
        assert list((tmp_path / "cache").rglob("*.bin"))  # chunks came through the local cache
        missing = cli(*args, "--out", str(tmp_path / "r2"), "--shards", "s3://no-such-bucket/x")
        with enable_iam_authentication():  # the test credentials are no IAM user's: refused
            refused = cli(*args, "--out", str(tmp_path / "r3"))
    assert missing.returncode == 2
    assert "no-such-bucket" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert refused.returncode == 2, refused.stderr
    assert "access denied" in refused.stderr
    assert "AWS_ACCESS_KEY_ID" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r3").exists()  # nothing written for a refused stream


def test_a_stream_from_object_storage_resumes_where_it_stopped(
    shard_set: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    """Stopped after 3 steps and resumed from S3: the weights of a straight local run."""
    from tests.fakes.s3 import s3_server, upload_folder

    base = ["pretrain", *TINY, "--set", f"data.cache={tmp_path / 'cache'}"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    local = cli(*base, "--shards", str(shard_set), "--max-steps", "6", "--out", str(straight))
    assert local.returncode == 0, local.stderr
    with s3_server():
        upload_folder(shard_set, "chips", "s2/v1")
        first = cli(*base, "--shards", "s3://chips/s2/v1", "--max-steps", "3", "--out", str(split))
        assert first.returncode == 0, first.stderr
        resumed = cli("pretrain", "--resume", str(split), "--max-steps", "6", "--no-progress")
        assert resumed.returncode == 0, resumed.stderr
    one = torch.load(straight / "backbone.pth", weights_only=True)
    two = torch.load(split / "backbone.pth", weights_only=True)
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, msg=key)


def test_shards_with_an_archive_is_one_line(shard_set: Path, cli: Callable[..., CliResult]) -> None:
    result = cli("pretrain", "--shards", str(shard_set), "--roi", "0,0,1,1", *TINY)
    assert result.returncode == 2
    assert "give --shards alone" in result.stderr


@pytest.mark.slow
def test_two_processes_pretrain_from_shards(shard_set: Path, tmp_path: Path) -> None:
    """DDP over gloo: LitData gives each rank its own chips; the run completes as one."""
    from tests.pretrain.conftest import run_cli

    run = tmp_path / "ddp"
    args = ["pretrain", "--shards", str(shard_set), *TINY, "--max-steps", "3", "--devices", "2"]
    proc = run_cli(*args, "--accelerator", "cpu", "--out", str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert json.loads((run / "backbone.json").read_text())["shards"]["sha256"]
