"""geopera's benchmarks: scripts that answer one question each (see ``benchmarks/README.md``).

Run them from the repository root as modules, ``python -m benchmarks.bench_loader``; what they
share lives in :mod:`benchmarks.common`, and the prepared device check in :mod:`benchmarks.gpu`.
"""
