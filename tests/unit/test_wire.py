"""serving/wire.py: the transformer -> predictor body (model inputs as columns)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from riskops.features.contract import NUMERIC_FEATURES, build_model_frame_records, model_frame_and_numeric
from riskops.features.sequences import SEQUENCE_COLUMNS, SEQUENCE_KEY
from serving.examples import example_transaction
from serving.validation import RequestError
from serving.wire import WIRE_KEY, concat_frames, from_wire, to_wire


def _rows(n: int, tokens: bool = True) -> list[dict]:
    rng = np.random.default_rng(n)
    rows = []
    for i in range(n):
        row = example_transaction(transaction_id=f"t{i}", amount=float(10 + i))
        if tokens:
            row[SEQUENCE_KEY] = rng.normal(size=len(SEQUENCE_COLUMNS))
        rows.append(row)
    return rows


def test_the_columns_survive_json_and_equal_the_model_frame():
    frame, numeric = model_frame_and_numeric(_rows(3))
    body = json.loads(json.dumps(to_wire(frame, numeric, [False, True, False])))
    back, back_numeric, degraded = from_wire(body)
    assert degraded == [False, True, False]
    np.testing.assert_array_equal(back_numeric, numeric)
    reference = build_model_frame_records(_rows(3))
    for c in reference.columns:
        want = reference[c].to_numpy()
        if want.dtype == object:
            assert list(back[c]) == list(want), c
        else:
            np.testing.assert_array_equal(back[c], want.astype(np.float64), err_msg=c)


def test_without_history_no_token_columns_travel():
    frame, numeric = model_frame_and_numeric(_rows(2, tokens=False))
    back, _, _ = from_wire(to_wire(frame, numeric, [False, False]))
    assert SEQUENCE_COLUMNS[0] not in back.columns


@pytest.mark.parametrize(
    ("breaks", "field"),
    [
        (lambda b: b[WIRE_KEY].pop("numeric"), "model_inputs.numeric"),
        (lambda b: b[WIRE_KEY]["numeric"][0].pop(), "model_inputs.numeric: expected a [n, "),
        (lambda b: b[WIRE_KEY]["categorical"].pop("payment_method"), "categorical.payment_method"),
        (lambda b: b[WIRE_KEY]["text"].append("x"), "model_inputs.text"),
        (lambda b: b[WIRE_KEY]["history_tokens"][1].append(0.0), "model_inputs.history_tokens"),
        (lambda b: b.update(degraded=[True]), "degraded"),
    ],
)
def test_a_malformed_body_is_a_400_naming_the_field(breaks, field):
    frame, numeric = model_frame_and_numeric(_rows(2))
    body = json.loads(json.dumps(to_wire(frame, numeric, [False, False])))
    breaks(body)
    with pytest.raises(RequestError, match=field.replace("[", r"\[")) as err:
        from_wire(body)
    assert err.value.status == 400


def test_requests_batch_together_column_by_column():
    a, _ = model_frame_and_numeric(_rows(2))
    b, _ = model_frame_and_numeric(_rows(3))
    both = concat_frames([a, b])
    assert len(both) == 5 and both.columns == a.columns
    np.testing.assert_array_equal(both[NUMERIC_FEATURES[0]], np.concatenate([a[NUMERIC_FEATURES[0]], b[NUMERIC_FEATURES[0]]]))
    mixed = concat_frames([a, model_frame_and_numeric(_rows(1, tokens=False))[0]])
    assert len(mixed) == 3  # the row format's behaviour: a pandas frame, missing tokens as NaN
