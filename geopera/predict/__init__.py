"""``geopera predict``: a fine-tuned model over whole rasters, tiled, blended, georeferenced."""
