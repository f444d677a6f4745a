"""What the sweep callback stores of a job's result in job.json, and that it says what it leaves out."""

from __future__ import annotations

import logging
import math

import pandas as pd

from experiments.app.callbacks import _jsonable


def test_a_dict_result_is_stored_with_values_json_lacks_as_text():
    from pathlib import Path

    assert _jsonable({"accuracy": 0.5, "out": Path("/tmp/x"), "n": 3}) == {"accuracy": 0.5, "out": "/tmp/x", "n": 3}
    assert math.isnan(_jsonable({"accuracy": float("nan")})["accuracy"])  # write_json_atomic writes it as null


def test_a_result_that_is_left_out_is_said(caplog):
    circular: dict = {}
    circular["self"] = circular
    with caplog.at_level(logging.DEBUG, logger="experiments.app.callbacks"):
        assert _jsonable(circular) is None
        assert _jsonable(pd.DataFrame({"a": [1]})) is None
        assert _jsonable(None) is None
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert records[0][0] == "WARNING" and "cannot be stored as JSON (Circular reference detected)" in records[0][1]
    assert records[1] == ("DEBUG", "the job's result (a DataFrame) is not a dict; job.json records no result for it, "
                                  "the job dir holds its outputs")
    assert len(records) == 2  # no result at all is nothing to report
