"""Decision policy (approve / review / block) and human-readable reasons.

Thresholds, lowest to highest precedence:

1. `ServingConfig.default_review` / `default_block` (0.5 / 0.9),
2. the model version's ``policy.json`` (``{"review": r, "block": b}``, set on validation data by
   the pipeline's register step; it travels with the model, so a hot swap swaps it too),
3. the operator file ``policy.yaml`` (keys ``review``, ``block``, ``fail_mode``, all optional).
   The server re-reads it when its mtime changes (checked at most every `check_interval_s`), no
   restart needed. A broken file is logged and the last good policy is kept.

Decisions: ``block`` if score >= block, ``review`` if score >= review, else ``approve``
(riskops.training.metrics.thresholds_for_policy's convention). When the entity features could not be read
(Feast down), the answer is ``degraded`` and its decision is at least `fail_mode` (default
``review``): fail_mode "approve" keeps the score's decision, "block" blocks everything degraded.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from serving.config import DECISIONS, FAIL_MODES

log = logging.getLogger(__name__)

SEVERITY = {d: i for i, d in enumerate(DECISIONS)}


@dataclass(frozen=True)
class Thresholds:
    review: float
    block: float
    fail_mode: str = "review"
    source: str = "defaults"

    def decide(self, score: float, degraded: bool = False) -> str:
        if score >= self.block:
            decision = "block"
        elif score >= self.review:
            decision = "review"
        else:
            decision = "approve"
        if degraded and SEVERITY[self.fail_mode] > SEVERITY[decision]:
            decision = self.fail_mode
        return decision


def read_model_policy(model_dir: Path | str) -> dict[str, float]:
    """The model version's policy.json ({} if the folder has none)."""
    p = Path(model_dir) / "policy.json"
    if not p.exists():
        return {}
    data = json.loads(p.read_text())
    return {k: float(data[k]) for k in ("review", "block") if k in data}


def _check_thresholds(review: float, block: float, where: str) -> None:
    for name, v in (("review", review), ("block", block)):
        if not (isinstance(v, int | float) and math.isfinite(v) and 0.0 <= v <= 1.0):
            raise ValueError(f"{where}: {name} must be a number in [0, 1], got {v!r}")
    if review > block:
        raise ValueError(f"{where}: review ({review}) must be <= block ({block})")


class PolicySource:
    """Merges defaults, a model's policy.json and the hot-reloaded operator policy.yaml."""

    def __init__(
        self,
        override_file: Path | str | None,
        default_review: float = 0.5,
        default_block: float = 0.9,
        fail_mode: str = "review",
        check_interval_s: float = 0.5,
    ) -> None:
        self.override_file = Path(override_file) if override_file else None
        self.defaults = {
            "review": float(default_review),
            "block": float(default_block),
            "fail_mode": fail_mode,
        }
        self.check_interval_s = check_interval_s
        self._override: dict[str, Any] = {}
        self._mtime: float | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._cache: dict[tuple, Thresholds] = {}
        self.reloads = 0
        self._refresh(force=True)

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.check_interval_s:
            return
        with self._lock:
            self._checked = now
            path = self.override_file
            try:
                mtime = os.stat(path).st_mtime_ns if path else None
            except FileNotFoundError:
                mtime = None
            if mtime == self._mtime:
                return
            if mtime is None:
                new: dict[str, Any] = {}
            else:
                try:
                    new = self._load(path)
                except (OSError, ValueError, yaml.YAMLError) as exc:
                    log.error("policy override %s ignored (keeping the previous policy): %s", path, exc)
                    self._mtime = mtime
                    return
            self._override, self._mtime = new, mtime
            self._cache = {}
            self.reloads += 1
            if new:
                log.info("policy override loaded from %s: %s", path, new)

    @staticmethod
    def _load(path: Path) -> dict[str, Any]:
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError("expected a mapping")
        unknown = sorted(set(data) - {"review", "block", "fail_mode"})
        if unknown:
            raise ValueError(f"unknown keys {unknown} (known: review, block, fail_mode)")
        if "fail_mode" in data and data["fail_mode"] not in FAIL_MODES:
            raise ValueError(f"fail_mode must be one of {FAIL_MODES}, got {data['fail_mode']!r}")
        for k in ("review", "block"):
            if k in data:
                v = data[k]
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise ValueError(f"{k} must be a number, got {v!r}")
                data[k] = float(v)
        return data

    def thresholds(self, model_policy: dict[str, float] | None = None) -> Thresholds:
        """The policy in force for a model whose policy.json is `model_policy`."""
        self._refresh()
        key = tuple(sorted(model_policy.items())) if model_policy else ()
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        merged = dict(self.defaults)
        source = "defaults"
        if model_policy:
            merged.update(model_policy)
            source = "policy.json"
        if self._override:
            merged.update(self._override)
            source = "policy.yaml" if source == "defaults" else f"{source}+policy.yaml"
        try:
            _check_thresholds(merged["review"], merged["block"], source)
        except ValueError as exc:
            log.error("inconsistent policy (%s); falling back to the defaults", exc)
            merged, source = dict(self.defaults), "defaults"
        t = Thresholds(float(merged["review"]), float(merged["block"]), merged["fail_mode"], source)
        self._cache[key] = t
        return t


# ---------------------------------------------------------------------------------------------
# Reasons
# ---------------------------------------------------------------------------------------------

FLAG_FEATURES = frozenset(
    {"is_refund", "country_mismatch", "is_weekend", "user_is_new", "device_is_new", "ip_is_new"}
)
LOG1P_SUFFIXES = ("_mean_30d", "_std_30d")  # build_model_frame log1p's these entity features


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    if abs(v - round(v)) < 1e-9 and abs(v) < 1e12:
        return str(int(round(v)))
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3g}"


def display_value(name: str, value: float) -> tuple[str, float]:
    """(display name, value in the units a person reads) for a numeric model input."""
    if name.endswith("_log"):
        return name[: -len("_log")], math.expm1(value)
    if name.endswith(LOG1P_SUFFIXES):
        return name, math.expm1(value)
    return name, value


def describe(name: str, row: Mapping[str, Any], normalizer: Any | None = None, text_chars: int = 60) -> str:
    """One reason, e.g. ``user_txn_count_1h=7 (high)`` or ``payment_method=crypto``."""
    value = row.get(name)
    if name == "text":
        text = str(value or "")
        return f'text="{text[:text_chars]}{"..." if len(text) > text_chars else ""}"'
    if isinstance(value, str) or value is None:
        return f"{name}={value}"
    v = float(value)
    if name in FLAG_FEATURES:
        return f"{name}={'yes' if v >= 0.5 else 'no'}"
    shown, human = display_value(name, v)
    qualifier = ""
    if normalizer is not None:
        try:
            i = normalizer.features.index(name)
            z = (v - normalizer.center[i]) / (normalizer.scale[i] or 1.0)
            qualifier = " (high)" if z >= 1.0 else (" (low)" if z <= -1.0 else " (typical)")
        except (ValueError, IndexError, AttributeError):
            qualifier = ""
    return f"{shown}={_fmt(human)}{qualifier}"


def top_reasons(
    attributions: dict[str, float], row: Mapping[str, Any], normalizer: Any | None = None, k: int = 3
) -> list[str]:
    """The `k` features that pushed the score up the most, described for a person."""
    positive = sorted(((a, n) for n, a in attributions.items() if math.isfinite(a) and a > 0), reverse=True)[
        :k
    ]
    return [describe(n, row, normalizer) for _, n in positive]
