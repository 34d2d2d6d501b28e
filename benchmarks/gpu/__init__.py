"""The prepared device check, one module per part (the driver: ``benchmarks/gpu_check.py``)."""
