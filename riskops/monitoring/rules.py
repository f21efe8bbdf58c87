"""Decision rules: metrics of one monitoring run -> a verdict {drift, reasons, metrics}.

A rule is data (configs/monitor.yaml ``rules:``), e.g.::

    - name: score_drift
      when: ["score_drift.p_value < 0.01", "score_drift.wasserstein >= 0.15"]
      require: ["score.rows >= 1000"]
      action: retrain
      message: "risk-score distribution shifted (KS p={score_drift.p_value:.1e})"

* ``when`` — conditions that must ALL hold for the rule to fire. Each is ``"<metric> <op> <number>"``
  with op one of ``< <= > >= == !=``; a metric is a flat key of the monitor's metrics
  (`riskops.monitoring.drift`, `riskops.monitoring.volume`). A missing or NaN metric makes the
  condition false.
* ``require`` — minimum-data conditions (same syntax). When one fails the rule is *skipped*
  (reported with the reason), never fired: a 40-row window or a labelled window with 3 frauds
  proves nothing either way.
* ``action`` — ``retrain`` (the verdict's ``drift`` is true and the retraining trigger is called)
  or ``alert`` (an alert event only).
* ``message`` — optional; formatted with the metrics (``{metric.name:fmt}``) plus ``{value}`` (the
  first condition's metric) and ``{threshold}``.

`DEFAULT_RULES` are the calibrated defaults (how: the comment on `DEFAULT_RULES`); a
config's ``rules:`` replaces them as a whole, ``rule_overrides:`` tweaks single ones by name.
"""

from __future__ import annotations

import copy
import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any

from riskops.settings import from_dict

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
       "!=": operator.ne}
_COND = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|!=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
ACTIONS = ("retrain", "alert")

# Calibrated on the synthetic generator (3 seeds x same-distribution windows vs fraud_ring /
# price_shift / new_payment_method / promotion_season; window 1,500 transactions).
DEFAULT_RULES: list[dict] = [
    {
        # per-input thresholds are self-calibrated on the reference (riskops.monitoring.drift): two
        # inputs beyond theirs at once is drift (volatile inputs count half); one alone happens by
        # chance across ~50 inputs
        "name": "feature_drift",
        "when": ["feature_drift.weighted_count >= 2"],
        "require": ["window.rows >= 1000"],
        "action": "retrain",
        "message": "{feature_drift.count:.0f} model inputs drifted beyond their calibrated thresholds"
                   " (weighted {feature_drift.weighted_count:.1f}): {feature_drift.drifted_columns}",
    },
    {
        "name": "feature_drift_share",
        "when": ["feature_drift.share >= 0.3"],
        "require": ["window.rows >= 1000"],
        "action": "retrain",
        "message": "{feature_drift.share:.0%} of monitored model inputs drifted (>= 30%)",
    },
    {
        "name": "new_category",
        "when": ["new_category.share >= 0.03"],
        "require": ["window.rows >= 500"],
        "action": "retrain",
        "message": "{new_category.share:.1%} of traffic has {new_category.column} values never seen in the"
                   " reference ({new_category.values})",
    },
    {
        "name": "score_drift",
        "when": ["score_drift.p_value < 0.01", "score_drift.ratio >= 1"],
        "require": ["score.rows >= 1000"],
        "action": "retrain",
        "message": "risk-score distribution shifted (KS p={score_drift.p_value:.1e}, normed Wasserstein"
                   " {score_drift.wasserstein:.2f} >= {score_drift.threshold:.2f})",
    },
    {
        "name": "decision_rate_shift",
        "when": ["decision.flag_rate_p_value < 0.001", "decision.flag_rate_shift_ratio >= 1"],
        "require": ["score.rows >= 1000"],
        "action": "retrain",
        "message": "review+block rate {decision.flag_rate_cur:.2%} vs {decision.flag_rate_ref:.2%} in the"
                   " reference (p={decision.flag_rate_p_value:.1e})",
    },
    {
        "name": "performance_drop",
        "when": ["performance.pr_auc_drop > 0.1", "performance.pr_auc_drop_z >= 2"],
        "require": ["performance.rows >= 1000", "performance.frauds >= 20"],
        "action": "retrain",
        "message": "PR-AUC {performance.pr_auc:.3f} on {performance.rows:.0f} labelled rows"
                   " ({performance.frauds:.0f} frauds) vs {performance.baseline_pr_auc:.3f} at evaluation",
    },
    {
        "name": "volume_anomaly",
        "when": ["volume.anomalies >= 1"],
        "require": [],
        "action": "alert",
        "message": "{volume.anomalies:.0f} hourly volume anomalies: {volume.summary}",
    },
]


@dataclass(frozen=True)
class Condition:
    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str, where: str) -> Condition:
        m = _COND.match(str(text))
        if not m:
            raise ValueError(f"{where}: cannot parse condition {text!r}; expected '<metric> <op> <number>'")
        return cls(m.group(1), m.group(2), float(m.group(3)))

    def holds(self, metrics: dict[str, Any]) -> bool | None:
        """True/False, or None when the metric is missing or not a finite number."""
        v = metrics.get(self.metric)
        if isinstance(v, bool):
            v = float(v)
        if not isinstance(v, int | float) or (isinstance(v, float) and math.isnan(v)):
            return None
        return bool(OPS[self.op](float(v), self.value))

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


@dataclass
class Rule:
    name: str
    when: list[Condition]
    require: list[Condition] = field(default_factory=list)
    action: str = "retrain"
    message: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> Rule:
        if not isinstance(d, dict) or "name" not in d:
            raise ValueError(f"a rule needs at least 'name' and 'when', got {d!r}")
        name = str(d["name"])
        when = d.get("when") or []
        if isinstance(when, str):
            when = [when]
        if not when:
            raise ValueError(f"rule {name!r}: 'when' needs at least one condition")
        req = d.get("require") or []
        if isinstance(req, str):
            req = [req]
        action = d.get("action", "retrain")
        if action not in ACTIONS:
            raise ValueError(f"rule {name!r}: action must be one of {ACTIONS}, got {action!r}")
        return from_dict(  # the parsed values replace the raw ones; unknown keys fail here
            cls, d, f"rule {name!r}",
            name=name,
            when=[Condition.parse(c, f"rule {name!r}") for c in when],
            require=[Condition.parse(c, f"rule {name!r}") for c in req],
            action=action,
            message=str(d.get("message", "")),
        )


@dataclass
class Verdict:
    drift: bool  # a rule with action "retrain" fired
    alert: bool  # any rule fired
    reasons: list[dict]
    skipped: list[dict]
    metrics: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"drift": self.drift, "alert": self.alert, "reasons": self.reasons, "skipped": self.skipped,
                "metrics": self.metrics}


def load_rules(config: dict | None) -> list[Rule]:
    """Rules from a monitor config: ``rules:`` (replaces the defaults) and/or ``rule_overrides:``
    (``{name: {key: value}}``; ``{name: null}`` or ``{name: {enabled: false}}`` removes one)."""
    config = config or {}
    raw = copy.deepcopy(config.get("rules") if config.get("rules") is not None else DEFAULT_RULES)
    overrides = config.get("rule_overrides") or {}
    by_name = {r.get("name"): r for r in raw if isinstance(r, dict)}
    for name, patch in overrides.items():
        if patch is None or (isinstance(patch, dict) and patch.get("enabled") is False):
            raw = [r for r in raw if r.get("name") != name]
            continue
        if name not in by_name:
            raise ValueError(f"rule_overrides: no rule named {name!r} (known: {', '.join(by_name)})")
        by_name[name].update({k: v for k, v in patch.items() if k != "enabled"})
    rules = [Rule.from_dict(r) for r in raw]
    names = [r.name for r in rules]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"duplicate rule names {dup}")
    return rules


class _Fmt(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def _format(rule: Rule, metrics: dict[str, Any]) -> str:
    first = rule.when[0]
    ctx = {k.replace(".", "__"): v for k, v in metrics.items()}
    ctx.update(value=metrics.get(first.metric), threshold=first.value)
    template = rule.message or " and ".join(f"{c.metric}={{{c.metric}}} ({c})" for c in rule.when)
    try:
        text = re.sub(r"\{([A-Za-z_][\w.]*)", lambda m: "{" + m.group(1).replace(".", "__"), template)
        return text.format_map(_Fmt(ctx))
    except (ValueError, TypeError, KeyError, IndexError):
        return f"{rule.name}: " + ", ".join(f"{c.metric}={metrics.get(c.metric)}" for c in rule.when)


def evaluate_rules(metrics: dict[str, Any], rules: list[Rule] | None = None) -> Verdict:
    """Apply rules to metrics. Returns the verdict (reasons name the rule, the values and the message)."""
    rules = load_rules({}) if rules is None else rules
    reasons, skipped = [], []
    for rule in rules:
        unmet = [c for c in rule.require if c.holds(metrics) is not True]
        if unmet:
            skipped.append({
                "rule": rule.name,
                "why": "not enough data: " + ", ".join(f"{c} (have {metrics.get(c.metric)})" for c in unmet),
            })
            continue
        results = [c.holds(metrics) for c in rule.when]
        if any(r is None for r in results):
            missing = [str(c.metric) for c, r in zip(rule.when, results, strict=True) if r is None]
            skipped.append({"rule": rule.name, "why": f"metric unavailable: {', '.join(missing)}"})
            continue
        if all(results):
            reasons.append({
                "rule": rule.name,
                "action": rule.action,
                "message": _format(rule, metrics),
                "values": {c.metric: metrics.get(c.metric) for c in rule.when},
                "conditions": [str(c) for c in rule.when],
            })
    drift = any(r["action"] == "retrain" for r in reasons)
    return Verdict(drift=drift, alert=bool(reasons), reasons=reasons, skipped=skipped, metrics=metrics)
