import subprocess
import sys


def test_python_dash_m_geopera_is_the_cli() -> None:
    # Machines without the console script (the bare GPU machine) run geopera this way.
    out = subprocess.run(
        [sys.executable, "-m", "geopera", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    for command in ("pretrain", "finetune", "predict", "publish", "embed"):
        assert command in out.stdout
    bad = subprocess.run([sys.executable, "-m", "geopera", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "invalid choice" in bad.stderr
