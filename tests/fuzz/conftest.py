"""The fuzz suite's rule: a parser of user input ends in a value or in one user-facing error.

A user-facing error is what the CLI prints as one line, without a traceback
(:data:`geopera.cli.main.USER_ERRORS`); anything else escaping a parser is a bug. Each property
runs a bounded, fixed set of examples in the default suite and five times more, freshly drawn,
under ``slow``.
"""

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geopera.cli.main import USER_ERRORS

#: Examples per property: the default suite's bounded run, and the ``slow`` one
#: (``GEOPERA_FUZZ_EXAMPLES`` sets it, e.g. 5000 for a long hunt).
BUDGETS = [
    pytest.param(60, id="bounded"),
    pytest.param(
        int(os.environ.get("GEOPERA_FUZZ_EXAMPLES", "300")), id="more", marks=pytest.mark.slow
    ),
]


def ends_well(call: Callable[[], object]) -> None:
    """Run a parser: a value, or a user-facing error with a message, and nothing else."""
    try:
        call()
    except USER_ERRORS as err:
        if not " ".join(str(err).split()):
            raise AssertionError(f"{type(err).__name__} without a message") from err


def fuzz(strategy: st.SearchStrategy[Any], parse: Callable[[Any], object], budget: int) -> None:
    """Check :func:`ends_well` for ``budget`` inputs drawn from ``strategy``.

    Args:
        strategy: The inputs.
        parse: The parser, called with one input.
        budget: How many inputs (the bounded run is the same every time).
    """

    @settings(
        max_examples=budget,
        deadline=None,
        database=None,
        derandomize=budget <= 100,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategy)
    def check(value: Any) -> None:
        ends_well(lambda: parse(value))

    check()


#: Scalars a YAML or JSON document may hold where a parser expects something specific.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
#: Nested values of documents (lists and mappings of scalars, a few levels deep).
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
