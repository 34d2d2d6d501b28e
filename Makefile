# Two entry points for a fresh machine (see README): `make demo` and `make test`.
VENV := .venv/bin
ROI ?= datasets/sample/area.geojson

.PHONY: env demo test lint docs sample

env:
	@bash scripts/setup-env.sh

sample: env
	$(VENV)/geopera data sample

demo: env
	$(VENV)/geopera data sample
	$(VENV)/geopera archive inspect datasets/sample --roi $(ROI)

lint: env
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy

docs: env
	$(VENV)/mkdocs build --strict --site-dir site

test: env lint docs
	$(VENV)/python -m pytest -q $(PYTEST_ARGS)
