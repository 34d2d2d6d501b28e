"""``make gpu-wheels``: what the device check needs and the bare GPU machine lacks, in ``.gpu/``.

* ``.gpu/wheels``: pinned manylinux x86-64 CPython 3.12 wheels (``benchmarks/gpu-wheels.txt``),
  downloaded without dependencies: the device image has torch, timm, torchvision, lightning,
  numpy, pandas, click, attrs, certifi, pyparsing and huggingface-hub already;
* ``.gpu/data``: the real data the check reads, copied from ``../shared/data`` (two Landsat 8
  crops to pretrain on, labelled Chesapeake tiles for the kNN probe, NAIP chips to fine-tune on),
  in the same layout;

then prints the sizes: together with the git tree they must stay well under the 64 MiB that a
device call carries. ``.gpu/`` is git-ignored; nothing in it is committed.
"""

import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.common.paths import REPO, shared_data_dir
from benchmarks.gpu.common import DATA_FOLDERS

BUNDLE = REPO / ".gpu"
PINS = REPO / "benchmarks" / "gpu-wheels.txt"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64")  # fmt: skip
LIMIT_MIB = 64
TARGET_MIB = 56  # leave room for the tree to grow


def pins() -> list[str]:
    """The ``NAME==VERSION`` lines of the pin file."""
    lines = (line.split("#")[0].strip() for line in PINS.read_text().splitlines())
    return [line for line in lines if line]


def download(wheels: Path) -> None:
    """Download the pinned wheels (no dependencies) into ``wheels``; drop other versions."""
    wanted = pins()

    def key(name: str, version: str) -> str:
        return f"{name.lower().replace('-', '_')}=={version}"

    pinned = {key(*p.split("==")) for p in wanted}
    for old in wheels.glob("*.whl"):  # wheel names: NAME-VERSION-TAGS.whl
        if key(*old.name.split("-")[:2]) not in pinned:
            old.unlink()
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        "--dest",
        str(wheels),
    ]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run([*cmd, *wanted], check=True)


def copy_data(source: Path, target: Path) -> None:
    """Copy the check's data folders, keeping the shared layout."""
    for folder in DATA_FOLDERS:
        dst = target / folder
        if dst.is_dir():
            shutil.rmtree(dst)
        shutil.copytree(source / folder, dst)


def tree_bytes() -> int:
    """Bytes of what a device call sends besides carried paths: tracked + untracked-unignored."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    paths = [REPO / p for p in out.decode().split("\0") if p]
    return sum(p.stat().st_size for p in paths if p.is_file())


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> int:
    """Download, copy and report; exit 1 when the total is over the target."""
    wheels, data = BUNDLE / "wheels", BUNDLE / "data"
    wheels.mkdir(parents=True, exist_ok=True)
    download(wheels)
    source = shared_data_dir()
    if not source.is_dir():
        print(
            f"gpu-wheels: real data not found at {source} (set GEOPERA_SHARED_DATA)",
            file=sys.stderr,
        )
        return 2
    copy_data(source, data)
    mib = 2**20
    print(f"{'wheel':60} {'MiB':>6}")
    for whl in sorted(wheels.glob("*.whl")):
        print(f"{whl.name:60} {whl.stat().st_size / mib:6.1f}")
    sizes = {"wheels": folder_bytes(wheels), "data": folder_bytes(data), "tree": tree_bytes()}
    total = sum(sizes.values())
    for name, size in sizes.items():
        print(f"{name:60} {size / mib:6.1f}")
    print(
        f"{'total sent by a device call (limit ' + str(LIMIT_MIB) + ' MiB)':60} {total / mib:6.1f}"
    )
    if total > TARGET_MIB * mib:
        print(
            f"gpu-wheels: {total / mib:.1f} MiB is over the {TARGET_MIB} MiB target",
            file=sys.stderr,
        )
        return 1
    print('run: bash benchmarks/gpu_check.sh --out $OUT   (device call with carry: [".gpu"])')
    return 0


if __name__ == "__main__":
    sys.exit(main())
