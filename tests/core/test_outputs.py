"""Outputs appear complete or not at all, and never over earlier ones."""

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
