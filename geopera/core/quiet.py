"""Quiet runs: Lightning's banner lines, tips and known internal warnings are not for our users.

A geopera command prints its own lines and the progress bar; what Lightning logs at INFO
(accelerator banner, tips advertising services, "max_steps reached") and a deprecation warning
raised inside Lightning itself say nothing the user can act on.
"""

import logging
import warnings

#: Lightning's loggers, whose INFO lines are silenced.
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")
#: Warnings raised inside Lightning that a user cannot act on.
INTERNAL_WARNINGS = (r".*isinstance\(treespec, LeafSpec\).*",)


def quiet_lightning() -> None:
    """Silence Lightning's INFO lines and its known internal warnings (warnings stay warnings)."""
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in INTERNAL_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
