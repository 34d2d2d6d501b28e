"""Schedules as functions of the optimiser step: cosine, linear, and warm-up then cosine.

Pretraining's schedules (:mod:`geopera.pretrain.schedules`) and fine-tuning's learning rate use
these, so that a schedule is written once.
"""

import math


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Cosine interpolation from ``start`` (step 0) to ``end`` (step ``total``), then ``end``.

    Args:
        step: Current step.
        total: Steps of the schedule.
        start: Value at step 0.
        end: Value at and after ``total``.

    Returns:
        The value at ``step``.
    """
    if total <= 0 or step >= total:
        return end
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * step / total))


def linear(step: int, total: int, start: float, end: float) -> float:
    """Linear interpolation from ``start`` to ``end`` over ``total`` steps, then ``end``."""
    if total <= 0 or step >= total:
        return end
    return start + (end - start) * step / total


def warmup_cosine(step: int, warmup: int, total: int, peak: float, floor: float) -> float:
    """Linear warm-up from 0 to ``peak`` over ``warmup`` steps, then cosine to ``floor``.

    Args:
        step: Current step.
        warmup: Warm-up steps (at most ``total``).
        total: Steps of the whole schedule (``floor`` from there on).
        peak: Value at the end of the warm-up.
        floor: Value at and after ``total``.

    Returns:
        The value at ``step``.
    """
    if step < warmup:
        return peak * step / warmup
    return cosine(step - warmup, total - warmup, peak, floor)
