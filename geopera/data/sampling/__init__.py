"""Sampling for pretraining: readers, the patch sampler, bad files, statistics, the data module."""
