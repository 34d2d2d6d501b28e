"""Frozen-feature probes, their intervals and label-free health signals (a library floor).

Shared by ``geopera evaluate`` and pretraining's in-run probe and collapse alarm, so that the
numbers a run prints and the numbers an evaluation reports come from one implementation.
"""
