"""What the benchmark scripts share: paths, rasters and models to measure on, step helpers."""
