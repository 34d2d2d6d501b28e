#!/usr/bin/env bash
# The prepared device check (see benchmarks/gpu_check.py for the parts and options).
#
#   bash benchmarks/gpu_check.sh --out DIR [--budget-s 480] [--parts ...]   # on a GPU machine
#   bash benchmarks/gpu_check.sh --cpu-smoke --out DIR                       # anywhere, tiny
#
# On a bare device machine (torch, timm, lightning but no kornia/torchgeo/rasterio...), the
# wheels that `make gpu-wheels` put in .gpu/wheels are installed into a scratch folder first,
# and geopera runs from the tree (python -m geopera); nothing is downloaded.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
NEEDED="import kornia, torchgeo, rasterio, shapely, pyproj, geopandas, segmentation_models_pytorch"
if ! "$PY" -c "$NEEDED" 2>/dev/null; then
  if ! ls .gpu/wheels/*.whl >/dev/null 2>&1; then
    echo "gpu_check: packages missing and no .gpu/wheels: run 'make gpu-wheels' first" >&2
    exit 2
  fi
  SITE=${GEOPERA_CHECK_SITE:-/tmp/geopera-check-site}
  rm -rf "$SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
    .gpu/wheels/*.whl || exit 2
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
# Stand-ins (benchmarks/standins) for packages too large to carry, each only where it is missing.
STANDINS=${GEOPERA_CHECK_STANDINS:-/tmp/geopera-check-standins}
rm -rf "$STANDINS" && mkdir -p "$STANDINS"
for module in pyogrio boto3 botocore; do
  if ! "$PY" -c "import $module" 2>/dev/null; then
    ln -s "$PWD/benchmarks/standins/$module" "$STANDINS/$module"
  fi
done
export PYTHONPATH="$STANDINS${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" -m benchmarks.gpu_check "$@"
