"""Serving settings: one dataclass, defaults that work locally, an optional YAML file to override.

Precedence (lowest to highest): the defaults below, `<home>/serving.yaml` (or the file given to
`serve(config_file=...)`), then keyword arguments of `serve(...)`. Unknown keys in the YAML file are
an error that names them (a typo must not silently keep a default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from riskops.settings import MODEL_NAME, Paths, from_dict, load_yaml
from serving.cpus import parse_setting

FAIL_MODES = ("approve", "review", "block")
STATE_BACKENDS = ("embedded", "redis")
DECISIONS = ("approve", "review", "block")  # in order of severity


@dataclass(frozen=True)
class ServingConfig:
    model_name: str = MODEL_NAME
    # model: a registry version ("v0003"), an alias ("champion", "challenger") or None (= champion).
    # A fixed version is pinned; an alias is followed (hot swap when it moves).
    model_version: str | None = None
    registry_poll_s: float = 2.0  # how often the registry alias is checked (0 = never)
    feature_repo: Path | None = None  # default: home.feature_repo
    policy_file: Path | None = None  # operator override of policy.json; default: home.root/policy.yaml
    default_review: float = 0.5  # thresholds used when neither policy.json nor policy.yaml has them
    default_block: float = 0.9
    fail_mode: str = "review"  # decision floor when features are unavailable (approve|review|block)
    reasons_for: str = "flagged"  # "flagged" (score >= review) or "all": explanations cost per row
    reasons_top_k: int = 3
    reasons_ig_steps: int = 16  # integrated-gradients steps for reasons (the :explain route uses 32)
    # Feast online store
    feast_timeout_s: float = 0.25  # a lookup slower than this answers degraded
    feast_retry_after_s: float = 5.0  # after a failure, skip Feast (answer degraded) this long
    push_interval_s: float = 0.5  # entity state pushes are coalesced and flushed this often
    push_process: bool = True  # run the pushes' Feast work in a child process (serving/feast_process.py)
    entity_cache_size: int = 200_000  # entity tracks kept in memory (LRU) across the four entities
    # entity state (serving/state_backends.py): "embedded" (this process + the Feast online store, no server to
    # install) or "redis" (one Redis shared by every replica: exact windows, read-your-writes across
    # replicas, the last events of each entity). Default: $RISKOPS_STATE_BACKEND, else "embedded"
    state_backend: str | None = None
    redis_url: str | None = None  # redis://host:port/db; default $RISKOPS_REDIS_URL
    redis_timeout_s: float = 0.25  # a state round trip slower than this answers degraded
    state_ttl_s: float = 35 * 86_400  # an entity silent this long leaves Redis (> the longest window, 30d)
    # model batching
    max_batch_rows: int = 256  # rows scored together (requests are merged up to this)
    batch_wait_ms: float = 0.0  # extra wait for more requests before a batch (0 = opportunistic)
    # intra-op threads for the model (0 = torch's default): one model thread, small batches
    torch_threads: int = 1
    # Python's GIL switch interval (0 = Python's 5 ms). 1 ms: the model thread's torch ops each give
    # the GIL up and waited up to the interval to get it back from the event loop
    switch_interval_ms: float = 1.0
    gc_freeze: bool = True  # freeze long-lived objects out of the collector's walks (serving/gc_control.py)
    # the server's threads on one CPU, its Feast child processes on the others: "auto", "off" or a
    # CPU number (serving/cpus.py). A local / bare-metal option: "auto" does not pin in a pod with
    # a CPU limit (cgroup quota), nor with workers > 1
    server_cpu: str | int = "auto"
    # serving/fast_path.py: uvloop, no per-request log lines, v1 predict past FastAPI's router and
    # KServe's stages without their per-request costs. Off: plain KServe. Off by itself with workers > 1
    fast_path: bool = True
    # KServe's own uvicorn worker processes for the combined server (`ModelServer(workers=...)`);
    # each builds its own service. Scale a cluster with replicas first (docs/serving.md "Scaling")
    workers: int = 1
    # product catalogue texts pre-encoded by every model (serving/catalogue.py); default <home>/catalogue.jsonl
    catalogue_file: Path | None = None
    catalogue_chunk: int = 16  # texts encoded per model-thread job when the catalogue grows
    # prediction log
    log_segment_bytes: int = 64 << 20
    log_segment_seconds: float = 3600.0
    log_fsync: bool = True
    # closed segments are shipped as Parquet, partitioned by hour, to this fsspec URI (file://..., s3://...)
    # where the monitor reads them; None keeps the log local. Default: $RISKOPS_PREDICTION_LOG_URI
    log_ship_uri: str | None = None
    # alerts
    alert_webhook_url: str | None = None
    alert_webhook_timeout_s: float = 2.0
    burst_count: int = 3  # this many scores >= review for one entity ...
    burst_window_s: float = 600.0  # ... within this many seconds (event time) raise a burst alert
    # request limits
    max_batch: int = 256
    max_body_bytes: int = 1 << 20  # also POST /v1/feedback bodies
    # online canary (docs/serving.md "Canary"): route a share of traffic to the registry's
    # `challenger` and promote / roll back by itself. Only when following the champion alias.
    canary: bool = False
    canary_config: Path | None = None  # knobs: `promotion.canary` of this file (default configs/monitor.yaml)
    canary_outcome_cache: int = 100_000  # recently served transaction ids kept to join feedback to an arm

    def __post_init__(self) -> None:
        if self.state_backend not in (None, *STATE_BACKENDS):
            raise ValueError(f"state_backend must be one of {STATE_BACKENDS}, got {self.state_backend!r}")
        if self.fail_mode not in FAIL_MODES:
            raise ValueError(f"fail_mode must be one of {FAIL_MODES}, got {self.fail_mode!r}")
        object.__setattr__(self, "server_cpu", parse_setting(self.server_cpu))
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers!r}")
        if self.reasons_for not in ("flagged", "all"):
            raise ValueError(f"reasons_for must be 'flagged' or 'all', got {self.reasons_for!r}")
        if not 0.0 <= self.default_review <= self.default_block <= 1.0:
            raise ValueError("need 0 <= default_review <= default_block <= 1")
        for name in ("feature_repo", "policy_file", "canary_config", "catalogue_file"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, Path):
                object.__setattr__(self, name, Path(v))

    def with_home(self, home: Paths) -> ServingConfig:
        """Fill the home-relative defaults and those the environment gives (a pod's ConfigMap)."""
        backend = self.state_backend or os.environ.get("RISKOPS_STATE_BACKEND") or "embedded"
        if backend not in STATE_BACKENDS:
            raise ValueError(f"RISKOPS_STATE_BACKEND must be one of {STATE_BACKENDS}, got {backend!r}")
        redis_url = self.redis_url or os.environ.get("RISKOPS_REDIS_URL")
        if backend == "redis" and not redis_url:
            raise ValueError(
                "state_backend 'redis' needs redis_url (or $RISKOPS_REDIS_URL), e.g. redis://localhost:6379/0"
            )
        return replace(
            self,
            state_backend=backend,
            redis_url=redis_url,
            log_ship_uri=self.log_ship_uri or os.environ.get("RISKOPS_PREDICTION_LOG_URI") or None,
            feature_repo=self.feature_repo or home.feature_repo,
            policy_file=self.policy_file or home.root / "policy.yaml",
            catalogue_file=self.catalogue_file or home.root / "catalogue.jsonl",
        )


def setup_logging(level: int | str = "INFO") -> None:
    """Send the `serving` loggers' records to stderr in KServe's format (KServe configures only its own)."""
    import logging

    logger = logging.getLogger("serving")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s.%(msecs)03d %(process)s %(name)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"
            )
        )
        logger.addHandler(handler)
        logger.propagate = False


def apply_runtime_settings(config: ServingConfig, model: bool = True) -> None:
    """Process-wide knobs: torch intra-op threads (when this process runs the model), GIL switch interval."""
    import sys

    if model and config.torch_threads > 0:
        import torch

        torch.set_num_threads(config.torch_threads)
    if config.switch_interval_ms > 0:
        sys.setswitchinterval(config.switch_interval_ms / 1000)


def load_config(path: Path | str | None = None, **overrides: Any) -> ServingConfig:
    """Defaults <- YAML file (if it exists or was named) <- keyword overrides (None values ignored).

    Unknown keys, in the file or among the overrides, raise ValueError naming them.
    """
    values: dict[str, Any] = {}
    section = "serving settings"
    if path is not None and Path(path).exists():
        values.update(load_yaml(path) or {})
        section = f"serving settings ({path} and overrides)"
    values.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(ServingConfig, values, section)
