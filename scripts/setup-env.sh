#!/usr/bin/env bash
# Create .venv at the repository root with Python 3.12 and install geopera with its dev extras.
# Idempotent: a second call only installs what is missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

find_python() {
    if [ -n "${GEOPERA_PYTHON:-}" ]; then echo "$GEOPERA_PYTHON"; return; fi
    if python3.12 --version >/dev/null 2>&1; then command -v python3.12; return; fi
    for cand in "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do
        if [ -x "$cand" ]; then echo "$cand"; return; fi
    done
    echo "error: Python 3.12 not found (torchgeo >= 0.10 needs it). Install it or set GEOPERA_PYTHON." >&2
    exit 1
}

if [ ! -x .venv/bin/python ]; then
    py="$(find_python)"
    echo "creating .venv with $py"
    "$py" -m venv .venv
fi
stamp=.venv/.geopera-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    # torch/torchvision pinned to the releases this workplace caps at (they lie on the local disk).
    .venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
    .venv/bin/python -m pip install --quiet -e ".[dev]"
    touch "$stamp"
fi

# geopera view's map library: MapLibre GL JS from npm (pinned in geopera/view/package.json and its
# lock file), copied into the package so that nothing is fetched at run time.
static=geopera/view/static
if [ ! -f "$static/maplibre-gl.js" ] || [ geopera/view/package-lock.json -nt "$static/maplibre-gl.js" ]; then
    if command -v npm >/dev/null 2>&1; then
        (cd geopera/view && npm ci --no-audit --no-fund --silent)
        cp geopera/view/node_modules/maplibre-gl/dist/maplibre-gl.js "$static/"
        cp geopera/view/node_modules/maplibre-gl/dist/maplibre-gl.css "$static/"
        cp geopera/view/node_modules/maplibre-gl/LICENSE.txt "$static/maplibre-gl.LICENSE.txt"
    else
        echo "warning: npm not found: geopera view needs MapLibre GL JS; install Node.js and npm, then run make env" >&2
    fi
fi
