"""``--set section.key=value`` overrides of the pretraining and fine-tuning configs."""

from collections.abc import Callable

import pytest
from hypothesis import strategies as st

from geopera.core.yaml_config import apply_override
from geopera.finetune.config import FinetuneConfig
from geopera.pretrain.config import load_pretrain_config
from tests.fuzz.conftest import BUDGETS, fuzz

PRETRAIN_KEYS = [
    "data.bands", "data.patch_size", "data.batch_size", "data.max_invalid", "optim.lr",
    "optim.weight_decay", "optim.warmup_steps", "trainer.max_steps", "trainer.precision",
    "model.name", "model.mask_ratio", "nope.key", "data", "data.", ".lr",
]  # fmt: skip
yaml_values = st.one_of(
    st.sampled_from(["1e-3", "[B4,B3,B2]", "{a: 1}", "-1", "0", "true", "null", "nan", ".inf"]),
    st.sampled_from(["[", "{", "'", '"', ": x", "!!python/object:os.system", "&a [*a]"]),
    st.text(max_size=20),
)
assignments = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(PRETRAIN_KEYS), yaml_values),
    st.text(max_size=30),
)


def _pretrain(assignment: str) -> None:
    apply_override(load_pretrain_config(), assignment)


def _finetune(assignment: str) -> None:
    apply_override(FinetuneConfig(), assignment)


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("target", [_pretrain, _finetune], ids=["pretrain", "finetune"])
def test_set_overrides(target: Callable[[str], None], budget: int) -> None:
    fuzz(assignments, target, budget)
