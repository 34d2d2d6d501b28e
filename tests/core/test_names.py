"""The one rule for outside names: safe components, never two alike, writes kept inside."""

import os
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geopera.core.names import MAX_NAME, NameBook, UnsafeOutputError, inside, safe_name

#: Names a hostile document may carry, with what each must not become.
HOSTILE = [
    "../../escaped",
    "/tmp/abs_escaped",
    "%2e%2e%2fx",
    "%252e%252e%252fx",
    "a/../../b",
    "C:\\x",
    "x\u0000y",
    "．．／．．／fullwidth",
    "..\u2215..\u2215division_slash",
    "CON",
    "nul.txt",
    "trailing. ",
    "\t\n\r",
    "",
    ".",
    "..",
    "~/.ssh/authorized_keys",
    "x" * 300,
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_become_one_plain_component(name: str, tmp_path: Path) -> None:
    safe = safe_name(name)
    assert safe
    assert safe not in (".", "..")
    assert not safe.startswith(".")
    assert not {"/", "\\", "\x00"} & set(safe)
    assert ":" not in safe
    assert not safe.endswith((".", " "))
    assert len(safe) <= MAX_NAME
    assert safe.split(".")[0].upper() not in ("CON", "PRN", "AUX", "NUL")
    assert Path(safe).name == safe
    assert (tmp_path / safe).resolve().parent == tmp_path.resolve()
    (tmp_path / safe).write_text("x")  # a real file system accepts it


def test_readable_names_stay_as_they_are() -> None:
    for name in ("LC09_L2SP_044034_20220111_SR_B4", "S2B_33UUP_20230615_0_L2A", "forêt-01"):
        assert safe_name(name) == name


def test_cut_names_stay_apart() -> None:
    a, b = "x" * 299 + "a", "x" * 299 + "b"
    assert safe_name(a) != safe_name(b)
    assert len(safe_name(a)) <= MAX_NAME


def test_the_book_never_hands_out_one_file_twice() -> None:
    book = NameBook(taken=("catalog.json",))
    names = [
        book.claim(n, ".json")
        for n in ("a/b", "a\\b", "A_B", "a_b", "catalog", "Ａ_B", "../a_b", "a_b")
    ]
    folded = [unicodedata.normalize("NFKC", n).casefold() for n in names]
    assert len(set(folded)) == len(names)
    assert "catalog.json" not in folded
    assert names[0] == "a_b.json"


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=8))
def test_any_names_give_distinct_safe_components(names: list[str]) -> None:
    book = NameBook()
    claimed = [book.claim(n, ".tif") for n in names]
    assert len({c.casefold() for c in claimed}) == len(claimed)
    for c in claimed:
        assert not {os.sep, "\x00"} & set(c)
        assert not c.startswith(".")


def test_inside_refuses_climbs_absolute_paths_and_links(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert inside(out, out / "a" / "b.tif") == out / "a" / "b.tif"
    for escaped in (out / ".." / "x.tif", Path("/etc/passwd"), out / "a" / ".." / ".." / "x"):
        with pytest.raises(UnsafeOutputError, match="outside"):
            inside(out, escaped, "some id")
    (out / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafeOutputError, match="nothing was written"):
        inside(out, out / "link" / "x.tif")
