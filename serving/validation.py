"""Request validation for the scoring endpoints: plain functions, no server state.

Every problem becomes a `RequestError` (a 4xx) whose message names the instance, the field and
the problem, e.g. ``instances[2].amount: must be > 0, got -5.0``. All problems of a request are
collected (up to `MAX_REPORTED_ERRORS`) so a client can fix a batch in one round trip.

Decisions (documented in docs/serving.md):

* ``event_timestamp`` is optional at serving time: absent or null means "now" (the server's UTC
  clock). When present it must be an ISO 8601 string; a naive time is taken as UTC; times more
  than `MAX_FUTURE_SKEW` ahead of the server clock or before `MIN_TIMESTAMP` are rejected.
* Types are strict: strings must be JSON strings (an id sent as a number is an error), numbers
  must be JSON numbers (not strings, not booleans); integral floats such as ``2.0`` are accepted
  for integer fields; ``is_refund`` is a boolean (0/1 accepted).
* Categorical values must match the schema's allowed sets exactly (case-sensitive).
* Unknown fields and label fields (``is_fraud``, ``fraud_type``) are dropped, not rejected, so a
  client can send a full transaction record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kserve.errors import InvalidInput

from riskops.schema import (
    AMOUNT_MAX,
    CHANNELS,
    COUNTRIES,
    CURRENCIES,
    FIELDS_BY_NAME,
    ORDER_STATUSES,
    PAYMENT_METHODS,
    PRODUCT_CATEGORIES,
    REQUIRED_COLUMNS,
    TRANSACTION_FIELDS,
)

MAX_BATCH = 256  # instances per request
MAX_BODY_BYTES = 1 << 20  # 1 MiB per request body
MAX_AMOUNT = AMOUNT_MAX  # order amount ceiling in the order currency (one place: riskops.schema)
MAX_QUANTITY = 10_000
MAX_ACCOUNT_AGE_DAYS = 36_500
MAX_STRING_CHARS = 1_000
MAX_FUTURE_SKEW = timedelta(hours=24)
MIN_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)
MAX_REPORTED_ERRORS = 10

OPTIONAL_TIMESTAMP = "event_timestamp"  # required by the schema for data, defaulted at serving
NON_EMPTY = frozenset({"transaction_id", "user_id", "merchant_id", "device_id"})
ALLOWED: dict[str, tuple[str, ...]] = {
    "currency": CURRENCIES,
    "payment_method": PAYMENT_METHODS,
    "channel": CHANNELS,
    "billing_country": COUNTRIES,
    "shipping_country": COUNTRIES,
    "product_category": PRODUCT_CATEGORIES,
    "order_status": ORDER_STATUSES,
}
_ALLOWED_SETS = {k: frozenset(v) for k, v in ALLOWED.items()}
# The fields a scoring request may carry (labels are never inputs).
INPUT_FIELDS: tuple[str, ...] = tuple(f.name for f in TRANSACTION_FIELDS if not f.label)


@dataclass(frozen=True)
class Problem:
    field: str | None  # None: the problem concerns the body or the instance as a whole
    message: str
    index: int | None = None

    def __str__(self) -> str:
        where = "" if self.index is None else f"instances[{self.index}]"
        if self.field:
            where = f"{where}.{self.field}" if where else self.field
        return f"{where}: {self.message}" if where else self.message

    def to_dict(self) -> dict:
        return {"index": self.index, "field": self.field, "message": self.message}


class RequestError(InvalidInput):
    """A client error. `status` is the HTTP status (400 unless a subclass says otherwise)."""

    status = 400

    def __init__(self, problems: list[Problem] | Problem | str, status: int | None = None):
        if isinstance(problems, str):
            problems = [Problem(None, problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        if status is not None:
            self.status = status
        shown = "; ".join(str(p) for p in self.problems[:MAX_REPORTED_ERRORS])
        more = len(self.problems) - MAX_REPORTED_ERRORS
        if more > 0:
            shown += f"; ... and {more} more"
        super().__init__(shown)

    def to_dict(self) -> dict:
        return {
            "error": self.reason,
            "details": [p.to_dict() for p in self.problems[:MAX_REPORTED_ERRORS]],
        }


# ---------------------------------------------------------------------------------------------
# Body-level checks
# ---------------------------------------------------------------------------------------------


def check_content_type(content_type: str | None, allow_binary: bool = False) -> None:
    """The body must be JSON (`application/json`, parameters such as charset allowed).

    `allow_binary`: the v2 binary tensor extension (`application/octet-stream` with an
    Inference-Header-Content-Length header) is also fine.
    """
    if not content_type:
        raise RequestError(
            "missing Content-Type header: send the body as JSON with 'Content-Type: application/json'",
            status=415,
        )
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("application/json", "application/cloudevents+json"):
        return
    if allow_binary and media == "application/octet-stream":
        return
    raise RequestError(
        f"unsupported Content-Type {content_type!r}: send the body as JSON with 'Content-Type: application/json'",
        status=415,
    )


def check_body_size(n_bytes: int, limit: int = MAX_BODY_BYTES) -> None:
    if n_bytes > limit:
        raise RequestError(f"request body of {n_bytes} bytes exceeds the limit of {limit} bytes", status=413)


def check_batch_size(n: int, limit: int = MAX_BATCH) -> None:
    if n == 0:
        raise RequestError(Problem("instances", "is empty: send at least one transaction"))
    if n > limit:
        raise RequestError(
            Problem("instances", f"batch of {n} instances exceeds the limit of {limit} per request"),
            status=413,
        )


def parse_json(body: bytes | str) -> Any:
    """Parse a JSON body; malformed JSON is a 400 that says where it broke."""
    import orjson

    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    if not body.strip():
        raise RequestError("request body is empty: expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"malformed JSON body: {exc}") from None


def instances_of(body: Any, limit: int = MAX_BATCH) -> list:
    """The v1 body's `instances` list (not yet validated one by one)."""
    if not isinstance(body, Mapping):
        raise RequestError(
            f"request body must be a JSON object with an 'instances' list, got {_json_type(body)}"
        )
    if "instances" not in body:
        hint = " (v2 'inputs' belong on /v2/models/<name>/infer)" if "inputs" in body else ""
        raise RequestError(Problem("instances", f"missing: the body must carry an 'instances' list{hint}"))
    instances = body["instances"]
    if not isinstance(instances, list):
        raise RequestError(Problem("instances", f"must be a list, got {_json_type(instances)}"))
    check_batch_size(len(instances), limit)
    return instances


# ---------------------------------------------------------------------------------------------
# Instance-level checks
# ---------------------------------------------------------------------------------------------


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list | tuple):
        return "array"
    if isinstance(v, Mapping):
        return "object"
    return type(v).__name__


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def parse_timestamp(value: Any, now: datetime | None = None) -> datetime:
    """ISO 8601 string -> aware UTC datetime (naive = UTC). Raises ValueError with the problem."""
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 string, got {_json_type(value)}")
    text = value.strip()
    if not text or len(text) > 64:
        raise ValueError(f"must be an ISO 8601 timestamp, got {_short(value)}")
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"is not an ISO 8601 timestamp (e.g. 2024-05-01T12:30:00Z): {_short(value)}"
        ) from None
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    now = now or datetime.now(UTC)
    if ts < MIN_TIMESTAMP:
        raise ValueError(f"is before {MIN_TIMESTAMP.date().isoformat()}: {_short(value)}")
    if ts > now + MAX_FUTURE_SKEW:
        raise ValueError(f"is more than {MAX_FUTURE_SKEW} in the future: {_short(value)}")
    return ts


def _check_field(name: str, value: Any, now: datetime) -> tuple[Any, str | None]:
    """(normalised value, problem or None) for one present, non-null field."""
    kind = FIELDS_BY_NAME[name].kind
    if kind == "timestamp":
        try:
            return parse_timestamp(value, now), None
        except ValueError as exc:
            return None, str(exc)
    if kind == "string":
        if not isinstance(value, str):
            return None, f"must be a string, got {_json_type(value)} {_short(value)}"
        if len(value) > MAX_STRING_CHARS:
            return None, f"is longer than {MAX_STRING_CHARS} characters ({len(value)})"
        if name in NON_EMPTY and not value.strip():
            return None, "must not be empty"
        allowed = _ALLOWED_SETS.get(name)
        if allowed is not None and value not in allowed:
            return None, f"unknown value {_short(value)}; expected one of {', '.join(ALLOWED[name])}"
        return value, None
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, f"must be a number, got {_json_type(value)} {_short(value)}"
        try:
            v = float(value)
        except OverflowError:
            v = math.inf
        if math.isnan(v):
            return None, "must be a number, got NaN"
        if math.isinf(v):
            return None, f"must be finite, got {value!r}"
        if name == "amount":
            if v <= 0:
                return None, f"must be > 0, got {v!r}"
            if v > MAX_AMOUNT:
                return None, f"must be <= {MAX_AMOUNT:.0f}, got {v!r}"
        return v, None
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, f"must be an integer, got {_json_type(value)} {_short(value)}"
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                return None, f"must be an integer, got {value!r}"
            value = int(value)
        lo, hi = {"quantity": (1, MAX_QUANTITY), "account_age_days": (0, MAX_ACCOUNT_AGE_DAYS)}.get(
            name, (-(2**63), 2**63 - 1)
        )
        if not lo <= value <= hi:
            return None, f"must be between {lo} and {hi}, got {value}"
        return int(value), None
    if kind == "bool":
        if isinstance(value, bool):
            return value, None
        if isinstance(value, int | float) and not isinstance(value, bool) and value in (0, 1):
            return bool(value), None
        return None, f"must be a boolean (true/false), got {_json_type(value)} {_short(value)}"
    return value, None  # pragma: no cover - every schema kind is handled above


def validate_instance(
    instance: Any, index: int | None = None, now: datetime | None = None
) -> tuple[dict, list[Problem]]:
    """One transaction -> (normalised record, problems). The record is only usable without problems.

    The record holds every input field: strings, `amount` float, ints, `is_refund` bool and
    `event_timestamp` as an aware UTC datetime (defaulted to `now` when absent or null).
    """
    now = now or datetime.now(UTC)
    if not isinstance(instance, Mapping):
        return {}, [
            Problem(None, f"must be a JSON object (a transaction), got {_json_type(instance)}", index)
        ]
    record: dict[str, Any] = {}
    problems: list[Problem] = []
    for name in INPUT_FIELDS:
        value = instance.get(name)
        if value is None:
            if name == OPTIONAL_TIMESTAMP:
                record[name] = now
            elif name in REQUIRED_COLUMNS:
                present = "is null" if name in instance else "is missing"
                problems.append(Problem(name, f"required field {present}", index))
            continue
        normalised, problem = _check_field(name, value, now)
        if problem is not None:
            problems.append(Problem(name, problem, index))
        else:
            record[name] = normalised
    return record, problems


def validate_instances(instances: list, now: datetime | None = None, limit: int = MAX_BATCH) -> list[dict]:
    """Validate a batch; raise one RequestError listing every problem, else the normalised records."""
    check_batch_size(len(instances), limit)
    now = now or datetime.now(UTC)
    records: list[dict] = []
    problems: list[Problem] = []
    for i, inst in enumerate(instances):
        rec, probs = validate_instance(inst, i, now)
        records.append(rec)
        problems.extend(probs)
    if problems:
        raise RequestError(problems)
    return records


def validate_v1_body(body: bytes | str | Mapping, now: datetime | None = None) -> list[dict]:
    """A whole v1 body (raw bytes or parsed) -> normalised records."""
    if isinstance(body, bytes | str):
        check_body_size(len(body))
        body = parse_json(body)
    return validate_instances(instances_of(body), now)


# ---------------------------------------------------------------------------------------------
# v2 (open inference protocol): one named input per field, shape [batch]
# ---------------------------------------------------------------------------------------------

V2_STRING_TYPES = frozenset({"BYTES"})
V2_NUMBER_TYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
V2_BOOL_TYPES = frozenset({"BOOL"}) | V2_NUMBER_TYPES


@dataclass
class V2Column:
    """A v2 input already decoded by the caller: name, datatype, shape and a flat list of values."""

    name: str
    datatype: str
    shape: list[int]
    values: list = field(default_factory=list)


def v2_expected_datatypes(name: str) -> frozenset[str]:
    kind = FIELDS_BY_NAME[name].kind
    if kind in ("string", "timestamp"):
        return V2_STRING_TYPES
    if kind == "bool":
        return V2_BOOL_TYPES
    return V2_NUMBER_TYPES


def v2_columns_to_instances(columns: list[V2Column], limit: int = MAX_BATCH) -> list[dict]:
    """Named v2 inputs (one per field, shape [batch]) -> v1-style instance dicts (not yet validated)."""
    if not columns:
        raise RequestError(Problem("inputs", "is empty: send one input per transaction field"))
    problems: list[Problem] = []
    batch: int | None = None
    by_name: dict[str, V2Column] = {}
    for col in columns:
        if col.name in by_name:
            problems.append(Problem(col.name, "input given twice"))
            continue
        by_name[col.name] = col
        n = 1
        for d in col.shape:
            n *= d
        if len(col.shape) != 1 and not (len(col.shape) == 2 and col.shape[1] == 1):
            problems.append(Problem(col.name, f"shape must be [batch], got {col.shape}"))
            continue
        if n != len(col.values):
            problems.append(Problem(col.name, f"shape {col.shape} does not match {len(col.values)} values"))
            continue
        if batch is None:
            batch = n
        elif n != batch:
            problems.append(Problem(col.name, f"has {n} values but other inputs have {batch}"))
        if col.name in FIELDS_BY_NAME and col.datatype not in v2_expected_datatypes(col.name):
            want = "BYTES" if v2_expected_datatypes(col.name) == V2_STRING_TYPES else "a numeric datatype"
            problems.append(Problem(col.name, f"datatype must be {want}, got {col.datatype}"))
    if problems:
        raise RequestError(problems)
    check_batch_size(batch or 0, limit)
    instances: list[dict] = [{} for _ in range(batch or 0)]
    for name, col in by_name.items():
        if name not in FIELDS_BY_NAME:
            continue
        kind = FIELDS_BY_NAME[name].kind
        for i, v in enumerate(col.values):
            if hasattr(v, "item"):  # numpy scalar
                v = v.item()
            if isinstance(v, bytes):
                try:
                    v = v.decode("utf-8")
                except UnicodeDecodeError:
                    problems.append(Problem(name, "is not valid UTF-8", i))
                    continue
            if kind == "bool" and not isinstance(v, bool) and isinstance(v, int | float):
                v = bool(v) if v in (0, 1) else v
            elif kind == "int" and isinstance(v, float) and v.is_integer():
                v = int(v)
            instances[i][name] = v
    if problems:
        raise RequestError(problems)
    return instances
