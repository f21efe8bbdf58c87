"""Request validation (serving.validation): plain functions, no server."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskops.schema import REQUIRED_COLUMNS
from serving.examples import example_transaction
from serving.validation import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    RequestError,
    V2Column,
    check_body_size,
    check_content_type,
    instances_of,
    parse_json,
    v2_columns_to_instances,
    validate_instance,
    validate_instances,
    validate_v1_body,
)

NOW = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)


def problems_of(instance) -> list[str]:
    _, problems = validate_instance(instance, 0, NOW)
    return [str(p) for p in problems]


def test_example_transaction_is_valid_and_normalised():
    rec, problems = validate_instance(example_transaction(), 0, NOW)
    assert problems == []
    assert rec["event_timestamp"] == datetime(2026, 1, 15, 12, 30, tzinfo=UTC)
    assert rec["amount"] == 129.99 and isinstance(rec["quantity"], int) and rec["is_refund"] is False


def test_labels_and_unknown_fields_are_dropped():
    rec, problems = validate_instance(example_transaction(is_fraud=1, fraud_type="none", extra="x"), 0, NOW)
    assert problems == []
    assert "is_fraud" not in rec and "fraud_type" not in rec and "extra" not in rec


@pytest.mark.parametrize("field", [c for c in REQUIRED_COLUMNS if c != "event_timestamp"])
def test_missing_required_field_is_named(field):
    tx = example_transaction()
    del tx[field]
    assert problems_of(tx) == [f"instances[0].{field}: required field is missing"]


def test_null_required_field_is_named():
    assert problems_of(example_transaction(user_id=None)) == ["instances[0].user_id: required field is null"]


def test_missing_timestamp_defaults_to_now():
    tx = example_transaction()
    del tx["event_timestamp"]
    rec, problems = validate_instance(tx, 0, NOW)
    assert problems == [] and rec["event_timestamp"] == NOW


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("amount", -5, "instances[0].amount: must be > 0, got -5.0"),
        ("amount", 0, "instances[0].amount: must be > 0, got 0.0"),
        ("amount", float("nan"), "instances[0].amount: must be a number, got NaN"),
        ("amount", float("inf"), "instances[0].amount: must be finite, got inf"),
        ("amount", 10**400, "instances[0].amount: must be finite"),
        ("amount", 2e8, "instances[0].amount: must be <= 100000000, got 200000000.0"),
        ("amount", "12.5", "instances[0].amount: must be a number, got string '12.5'"),
        ("amount", True, "instances[0].amount: must be a number, got boolean True"),
        ("quantity", 1.5, "instances[0].quantity: must be an integer, got 1.5"),
        ("quantity", 0, "instances[0].quantity: must be between 1 and 10000, got 0"),
        ("account_age_days", -1, "instances[0].account_age_days: must be between 0 and 36500, got -1"),
        ("is_refund", "yes", "instances[0].is_refund: must be a boolean (true/false), got string 'yes'"),
        ("user_id", 42, "instances[0].user_id: must be a string, got number 42"),
        ("user_id", "  ", "instances[0].user_id: must not be empty"),
        ("product_title", "x" * 1001, "instances[0].product_title: is longer than 1000 characters (1001)"),
        ("currency", "XXX", "instances[0].currency: unknown value 'XXX'; expected one of USD"),
        ("currency", "usd", "instances[0].currency: unknown value 'usd'"),
        ("payment_method", "cheque", "instances[0].payment_method: unknown value 'cheque'"),
        ("channel", "fax", "instances[0].channel: unknown value 'fax'"),
        ("billing_country", "ZZ", "instances[0].billing_country: unknown value 'ZZ'"),
        ("shipping_country", "ZZ", "instances[0].shipping_country: unknown value 'ZZ'"),
        ("product_category", "weapons", "instances[0].product_category: unknown value 'weapons'"),
        ("order_status", "lost", "instances[0].order_status: unknown value 'lost'"),
        ("event_timestamp", "yesterday", "instances[0].event_timestamp: is not an ISO 8601 timestamp"),
        (
            "event_timestamp",
            1700000000,
            "instances[0].event_timestamp: must be an ISO 8601 string, got number",
        ),
        ("event_timestamp", "1999-12-31T00:00:00Z", "instances[0].event_timestamp: is before 2000-01-01"),
        (
            "event_timestamp",
            "2026-02-05T00:00:00Z",
            "instances[0].event_timestamp: is more than 1 day, 0:00:00 in the future",
        ),
    ],
)
def test_bad_values_name_field_and_problem(field, value, expected):
    got = problems_of(example_transaction(**{field: value}))
    assert len(got) == 1, got
    assert got[0].startswith(expected), got


def test_integral_float_and_01_bool_are_accepted():
    rec, problems = validate_instance(example_transaction(quantity=2.0, is_refund=1), 0, NOW)
    assert problems == [] and rec["quantity"] == 2 and rec["is_refund"] is True


def test_timestamps_naive_and_offset_become_utc():
    rec, _ = validate_instance(example_transaction(event_timestamp="2026-01-15T12:30:00"), 0, NOW)
    assert rec["event_timestamp"] == datetime(2026, 1, 15, 12, 30, tzinfo=UTC)
    rec, _ = validate_instance(example_transaction(event_timestamp="2026-01-15T14:30:00+02:00"), 0, NOW)
    assert rec["event_timestamp"] == datetime(2026, 1, 15, 12, 30, tzinfo=UTC)


def test_every_problem_of_a_batch_is_reported_with_its_index():
    good = example_transaction()
    with pytest.raises(RequestError) as err:
        validate_instances(
            [good, example_transaction(amount=-1), "nope", example_transaction(channel="x")], NOW
        )
    msg = str(err.value)
    assert "instances[1].amount" in msg and "instances[2]: must be a JSON object" in msg
    assert "instances[3].channel" in msg
    assert err.value.status == 400
    assert [d["index"] for d in err.value.to_dict()["details"]] == [1, 2, 3]


def test_batch_limits():
    with pytest.raises(RequestError, match="instances: is empty"):
        validate_instances([], NOW)
    with pytest.raises(RequestError, match=f"exceeds the limit of {MAX_BATCH}") as err:
        validate_instances([example_transaction()] * (MAX_BATCH + 1), NOW)
    assert err.value.status == 413


def test_body_shape_errors():
    for body, expected in [
        ([1, 2], "request body must be a JSON object"),
        ({"inputs": []}, "v2 'inputs' belong on /v2/models"),
        ({"instances": {"a": 1}}, "instances: must be a list, got object"),
    ]:
        with pytest.raises(RequestError, match=expected):
            instances_of(body)


def test_body_size_content_type_and_json():
    check_body_size(MAX_BODY_BYTES)
    with pytest.raises(RequestError) as err:
        check_body_size(MAX_BODY_BYTES + 1)
    assert err.value.status == 413
    check_content_type("application/json; charset=utf-8")
    for bad in (None, "", "text/plain", "application/x-www-form-urlencoded"):
        with pytest.raises(RequestError) as err:
            check_content_type(bad)
        assert err.value.status == 415 and "Content-Type" in str(err.value)
    with pytest.raises(RequestError):
        check_content_type("application/octet-stream")
    check_content_type("application/octet-stream", allow_binary=True)
    with pytest.raises(RequestError, match="malformed JSON body"):
        parse_json(b"{not json")
    with pytest.raises(RequestError, match="body is empty"):
        parse_json(b"  ")
    assert len(validate_v1_body(b'{"instances": [%s]}' % _json(example_transaction()))) == 1


def _json(obj) -> bytes:
    import orjson

    return orjson.dumps(obj)


def test_v2_columns_to_instances():
    cols = [
        V2Column("amount", "FP32", [2], [10.5, 20.0]),
        V2Column("quantity", "INT64", [2], [1, 2]),
        V2Column("user_id", "BYTES", [2], [b"u1", "u2"]),
        V2Column("is_refund", "BOOL", [2], [False, True]),
    ]
    inst = v2_columns_to_instances(cols)
    assert inst == [
        {"amount": 10.5, "quantity": 1, "user_id": "u1", "is_refund": False},
        {"amount": 20.0, "quantity": 2, "user_id": "u2", "is_refund": True},
    ]


@pytest.mark.parametrize(
    ("cols", "expected"),
    [
        (
            [V2Column("amount", "BYTES", [1], [b"1"])],
            "amount: datatype must be a numeric datatype, got BYTES",
        ),
        ([V2Column("user_id", "FP32", [1], [1.0])], "user_id: datatype must be BYTES, got FP32"),
        ([V2Column("amount", "FP32", [2], [1.0])], "amount: shape [2] does not match 1 values"),
        ([V2Column("amount", "FP32", [1, 2], [1.0, 2.0])], "amount: shape must be [batch], got [1, 2]"),
        (
            [V2Column("amount", "FP32", [1], [1.0]), V2Column("quantity", "INT64", [2], [1, 2])],
            "quantity: has 2 values but other inputs have 1",
        ),
        (
            [V2Column("amount", "FP32", [1], [1.0]), V2Column("amount", "FP32", [1], [1.0])],
            "amount: input given twice",
        ),
        ([], "inputs: is empty"),
    ],
)
def test_v2_column_errors_name_the_input(cols, expected):
    with pytest.raises(RequestError) as err:
        v2_columns_to_instances(cols)
    assert expected in str(err.value)


# Any JSON-like value in any field: validation answers with problems, never with an exception.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(example_transaction())), json_values, max_size=6), st.data())
def test_validation_never_raises_on_arbitrary_values(mutation, data):
    tx = example_transaction(**mutation)
    if data.draw(st.booleans()):
        tx.pop(data.draw(st.sampled_from(sorted(tx))), None)
    rec, problems = validate_instance(tx, 0, NOW)
    for p in problems:
        assert p.field is None or p.field in tx or p.field in REQUIRED_COLUMNS
    if not problems:
        assert rec["amount"] > 0 and math.isfinite(rec["amount"])
        assert rec["event_timestamp"] <= NOW + timedelta(days=1)
