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

# The tests run in parallel (pytest-xdist), one worker per core (PYTEST_WORKERS=0: in this
# process), each worker and the processes it starts on one thread: torch's own threads would fight
# the other worker for the same cores (docs/benchmarks.md, "The test suite").
PYTEST_WORKERS ?= auto
PYTEST := OMP_NUM_THREADS=1 $(VENV)/python -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal

test: sample lint docs
	$(PYTEST) $(PYTEST_ARGS)

# Local loop: everything but the tests marked slow (CI runs them all through `make test`).
test-fast: sample
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

# The device check's wheels and data in .gpu/ (git-ignored); see docs/benchmarks.md, "GPU check".
gpu-wheels: env
	$(VENV)/python -m benchmarks.gpu_bundle
