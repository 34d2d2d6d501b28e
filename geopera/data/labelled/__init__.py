"""Labelled data for fine-tuning and evaluation: labels, scenes, splits, chips and named sets."""
