# Two entry points for a fresh machine (see README): `make demo` and `make test`.
VENV := .venv/bin
SAMPLE := datasets/sample
ROI ?= $(SAMPLE)/area.geojson

.PHONY: env sample demo lint docs test test-fast gpu-wheels

env:
	@bash scripts/setup-env.sh

sample: env
	$(VENV)/geopera data sample --out $(SAMPLE)

demo: sample
	$(VENV)/geopera archive inspect $(SAMPLE) --roi $(ROI)
	$(VENV)/geopera pretrain --roi $(ROI)

lint: env
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy

docs: env
	$(VENV)/mkdocs build --strict --quiet --site-dir site

test: sample lint docs
	$(VENV)/python -m pytest -q $(PYTEST_ARGS)

# Local loop: everything but the tests marked slow (CI runs them all through `make test`).
test-fast: sample
	$(VENV)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# The device check's wheels and data in .gpu/ (git-ignored); see docs/benchmarks.md, "GPU check".
gpu-wheels: env
	$(VENV)/python benchmarks/gpu_bundle.py
