"""Outputs appear complete or not at all, and never over earlier ones."""

import os
from pathlib import Path

import pytest

from geopera.core.outputs import atomic_file, require_new_folder, staged_folder, write_json


def test_atomic_file_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    write_json(target, {"v": 1})

    def fail_half_way() -> None:
        with atomic_file(target) as tmp:
            tmp.write_text('{"v": 2, "half')
            raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        fail_half_way()
    assert target.read_text() == '{\n "v": 1\n}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_require_new_folder(tmp_path: Path) -> None:
    require_new_folder(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    require_new_folder(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match=r"already exists and is not empty \(file\)"):
        require_new_folder(tmp_path / "file")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("x")
    with pytest.raises(FileExistsError, match="choose a new --out"):
        require_new_folder(tmp_path / "full")


def test_staged_folder_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "out"

    def fail_half_way() -> None:
        with staged_folder(out) as work:
            (work / "half.txt").write_text("x")
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        fail_half_way()
    assert list(tmp_path.iterdir()) == []
    with staged_folder(out) as work:
        (work / "done.txt").write_text("x")
        assert not out.exists()
    assert [p.name for p in out.iterdir()] == ["done.txt"]
    with pytest.raises(FileExistsError), staged_folder(out):
        pass


def test_stale_partials_of_dead_processes_are_removed(tmp_path: Path) -> None:
    import subprocess
    import sys

    from geopera.core.outputs import remove_stale_partials

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    (tmp_path / f".model.partial-{pid}-abc").mkdir()  # a staged folder of a killed run
    (tmp_path / f".last.partial-{pid}.ckpt").write_bytes(b"half")  # a cut checkpoint write
    mine = tmp_path / f".model.partial-{os.getpid()}-xyz"  # a live writer's: kept
    mine.mkdir()
    other = tmp_path / f".other.partial-{pid}.ckpt"  # another output's: not ours to remove
    other.write_bytes(b"x")
    removed = remove_stale_partials(tmp_path / "model")
    removed += remove_stale_partials(tmp_path / "last.ckpt")
    assert sorted(p.name for p in removed) == sorted(
        [f".model.partial-{pid}-abc", f".last.partial-{pid}.ckpt"]
    )
    assert mine.is_dir()
    assert other.is_file()


def test_full_disk_is_recognised_in_any_wording(tmp_path: Path) -> None:
    import errno

    from geopera.core.outputs import disk_full_reason

    wrapped = RuntimeError("unexpected pos 704 vs 598")  # what torch.save says
    wrapped.__context__ = OSError(errno.ENOSPC, "No space left on device")
    assert disk_full_reason(wrapped) == "no space left on device"
    assert "file-size limit" in str(disk_full_reason(OSError(errno.EFBIG, "File too large")))
    assert disk_full_reason(RuntimeError("TIFFAppendToStrip: File too large")) is not None
    assert disk_full_reason(ValueError("bad band name"), tmp_path / "x") is None
