"""Every report and console table shows a missing value the same way: a dash, never "nan", "None" or "inf"."""

from __future__ import annotations

import math

import numpy as np
import pytest

from emotion_probe.terminal import format_cell


@pytest.mark.parametrize("value", [None, math.nan, np.nan, np.float32("nan"), math.inf, -np.inf])
def test_a_missing_value_is_a_dash(value):
    assert format_cell(value, ".3f") == "-"
    assert format_cell(value) == "-"


@pytest.mark.parametrize(("value", "spec", "cell"), [
    (0.25, ".1%", "25.0%"), (np.float64(1.5), ".2f", "1.50"), (1234567, ",", "1,234,567"),
    (np.int64(12), ",.0f", "12"), (10**400, "", str(10**400)), ("smollm2", "", "smollm2"), (True, "", "True"),
])
def test_a_value_is_formatted_by_its_spec(value, spec, cell):
    assert format_cell(value, spec) == cell
