"""Inference over whole rasters: tiled, blended, georeferenced."""
