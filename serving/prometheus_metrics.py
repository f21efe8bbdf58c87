"""Prometheus metrics of the serving path (exposed on KServe's `/metrics`).

Collectors are created once per process in the default registry; importing this module twice (or
under two names) reuses the registered collectors instead of failing with "Duplicated timeseries".
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


def _get_or_create(cls, name: str, doc: str, labels: tuple[str, ...] = (), **kwargs):
    existing = REGISTRY._names_to_collectors.get(name)  # noqa: SLF001 - the only lookup prometheus_client offers
    if existing is None and cls is Counter:
        existing = REGISTRY._names_to_collectors.get(name + "_total")  # noqa: SLF001
    if existing is not None:
        return existing
    return cls(name, doc, labels, **kwargs)


_CHILDREN: dict[tuple[int, tuple[str, ...]], object] = {}


def labelled(metric, *values: str):
    """`metric.labels(*values)`, the child kept: labels() validates and locks on every call (~2 us),
    and the serving path counts several times per request. Children are never removed here."""
    key = (id(metric), values)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*values)
    return child


REQUESTS = _get_or_create(
    Counter, "riskops_http_requests_total", "HTTP requests by route and status code", ("route", "code")
)
REQUEST_LATENCY = _get_or_create(
    Histogram,
    "riskops_http_request_duration_seconds",
    "HTTP request latency (server side, first byte of the request to the end of the response)",
    ("route",),
    buckets=LATENCY_BUCKETS,
)
DECISIONS = _get_or_create(
    Counter, "riskops_decisions_total", "Scored transactions by decision", ("decision",)
)
DEGRADED = _get_or_create(
    Counter, "riskops_degraded_total", "Transactions scored without their online features (fail mode applied)"
)
FEATURE_LOOKUP = _get_or_create(
    Histogram,
    "riskops_feature_lookup_seconds",
    "Feast online lookups (one call may serve several requests)",
    buckets=LATENCY_BUCKETS,
)
FEAST_ERRORS = _get_or_create(
    Counter, "riskops_feast_errors_total", "Feast online store failures by operation", ("operation",)
)
STATE_ERRORS = _get_or_create(
    Counter, "riskops_state_errors_total", "Shared entity state (Redis) round trips that failed", ("operation",)
)
STATE_BACKLOG = _get_or_create(
    Gauge, "riskops_state_backlog", "Transactions scored while Redis was unreachable, waiting to be applied"
)
FEATURES_LAST_UPDATE = _get_or_create(
    Gauge,
    "riskops_features_last_update_timestamp_seconds",
    "Unix time of the newest entity state written (Redis script or online-store push); 0 before the first."
    " Its age while traffic flows is the features' staleness (alert RiskopsStaleFeatures)",
)
ENTITY_CACHE = _get_or_create(
    Counter, "riskops_entity_cache_total", "Entity state lookups served from memory or Feast", ("source",)
)
TEXT_CACHE = _get_or_create(
    Counter,
    "riskops_text_cache_total",
    "Text embeddings served from the scorer's cache (hit) or computed by the encoder (miss)",
    ("result",),
)
BATCH_ROWS = _get_or_create(
    Histogram,
    "riskops_model_batch_rows",
    "Rows per model batch (dynamic batching)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
MODEL_SECONDS = _get_or_create(
    Histogram, "riskops_model_batch_seconds", "Model frame + scoring time per batch", buckets=LATENCY_BUCKETS
)
RISK_SCORE = _get_or_create(
    Histogram,
    "riskops_risk_score",
    "Risk scores served (the score distribution the dashboard shows; drift is judged by the monitor)",
    buckets=tuple(round(0.05 * i, 2) for i in range(1, 21)),
)
MODEL_INFO = _get_or_create(Gauge, "riskops_model_info", "1 for the model version being served", ("version",))
MODEL_SWAPS = _get_or_create(Counter, "riskops_model_swaps_total", "Hot swaps to a new champion")
PUSHES = _get_or_create(
    Counter, "riskops_state_pushes_total", "Entity states pushed to the online store", ("entity",)
)
PUSH_LAG = _get_or_create(
    Histogram,
    "riskops_state_push_lag_seconds",
    "From an entity update to its push being written to the online store",
    buckets=LATENCY_BUCKETS,
)
ALERTS = _get_or_create(Counter, "riskops_alerts_total", "Alerts raised by kind", ("kind",))
WEBHOOK_FAILURES = _get_or_create(
    Counter, "riskops_alert_webhook_failures_total", "Alert webhook POSTs that failed"
)
PREDICTION_LOG_RECORDS = _get_or_create(
    Counter, "riskops_prediction_log_records_total", "Records durably appended to the prediction log"
)
PREDICTION_LOG_FSYNC = _get_or_create(
    Histogram,
    "riskops_prediction_log_write_seconds",
    "Prediction log group write + fsync",
    buckets=LATENCY_BUCKETS,
)
FEEDBACK_RECORDS = _get_or_create(
    Counter, "riskops_feedback_records_total", "Feedback records stored by POST /v1/feedback", ("is_fraud",)
)
FEEDBACK_REJECTED = _get_or_create(
    Counter, "riskops_feedback_rejected_total", "POST /v1/feedback requests rejected (nothing stored)"
)
CANARY_ACTIVE = _get_or_create(
    Gauge, "riskops_canary_active", "1 while a challenger answers a share of traffic"
)
CANARY_SHARE = _get_or_create(Gauge, "riskops_canary_share", "Configured share of traffic for the challenger")
CANARY_CHALLENGER = _get_or_create(
    Gauge, "riskops_canary_challenger_info", "1 for the challenger version in the canary", ("version",)
)
CANARY_REQUESTS = _get_or_create(
    Counter,
    "riskops_canary_requests_total",
    "Rows routed by the canary, by arm and outcome (error: the champion answered instead)",
    ("arm", "outcome"),
)
CANARY_OUTCOMES = _get_or_create(
    Counter, "riskops_canary_outcomes_total", "Labelled outcomes joined to a canary arm", ("arm",)
)
CANARY_DECISIONS = _get_or_create(
    Counter, "riskops_canary_decisions_total", "Canary decisions applied (promote / rollback)", ("action",)
)
CANARY_LOAD_FAILURES = _get_or_create(
    Counter,
    "riskops_canary_load_failures_total",
    "Challengers that failed to load (champion kept all traffic)",
)
GC_PAUSE = _get_or_create(
    Histogram,
    "riskops_gc_pause_seconds",
    "Duration of each cyclic garbage collection (the GIL is held: requests wait), by generation",
    ("generation",),
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
GC_FROZEN = _get_or_create(
    Gauge, "riskops_gc_frozen_objects", "Objects in the permanent generation (never walked by the collector)"
)
CATALOGUE_TEXTS = _get_or_create(
    Gauge, "riskops_catalogue_texts", "Distinct product texts in the catalogue (pre-encoded by every model)"
)


def _zero_series() -> None:
    """Create the labelled series a rule or panel reads before their first event, at 0: `increase()`
    sees the first rollback, and a panel shows 0 rather than "no data"."""
    for decision in ("approve", "review", "block"):
        labelled(DECISIONS, decision)
    for arm in ("champion", "challenger"):
        for outcome in ("ok", "error"):
            labelled(CANARY_REQUESTS, arm, outcome)
    for action in ("promote", "rollback"):
        labelled(CANARY_DECISIONS, action)
    labelled(STATE_ERRORS, "lookup")
    for operation in ("open", "read", "push"):
        labelled(FEAST_ERRORS, operation)


_zero_series()
