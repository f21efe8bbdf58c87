"""Champion/challenger: the offline promotion gate, and the registry moves after a gate or a canary.

Offline gate
------------
`compare_models(champion, challenger, labelled_window, config)` scores both models on the most
recent labelled window that neither trained on and promotes only if

* the primary metric (PR-AUC) improves by at least ``min_improvement`` (absolute), and
* no guard metric (ROC-AUC, recall at 1% FPR) drops by more than ``guard_tolerance``, and
* the window is big enough (``min_rows`` rows, ``min_frauds`` frauds) to tell.

Otherwise the champion stays and the decision carries an alert with the comparison. A paired
bootstrap interval of the PR-AUC difference is reported alongside (``require_significance: true``
also demands that its lower bound be above 0). `run_promotion_gate` wires it to the registry, the
prediction log and feedback; on promotion it moves the ``champion`` alias (the server picks the
new version up) and remembers the previous one as ``previous_champion`` for a manual rollback.

The online canary (traffic split and its decision) is `riskops.lifecycle.canary`;
`apply_canary_decision` here moves the registry aliases on its decision.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from riskops.features.contract import CATEGORICAL_FEATURES, NUMERIC_FEATURES, TEXT_COLUMN
from riskops.lifecycle.canary import CanaryDecision, CanarySettings, CanaryState, state_from_log
from riskops.lifecycle.rollout import RolloutError, RolloutSettings, rollout_from_config
from riskops.monitoring.alerts import emit_alert
from riskops.monitoring.feedback import labelled_window, load_feedback
from riskops.monitoring.prediction_log import read_prediction_log
from riskops.monitoring.reference import model_frame_from_log
from riskops.registry.store import CHALLENGER, CHAMPION, ModelRegistry, ModelVersion
from riskops.settings import Paths, from_dict

log = logging.getLogger(__name__)

PREVIOUS_CHAMPION = "previous_champion"
GUARD_DEFAULTS = ("roc_auc", "recall_at_1pct_fpr")


@dataclass
class PromotionSettings:
    """The `promotion:` section of configs/monitor.yaml."""

    auto: bool = True  # the monitor gates a freshly retrained challenger by itself
    primary_metric: str = "pr_auc"
    min_improvement: float = 0.01
    guard_metrics: list[str] = field(default_factory=lambda: list(GUARD_DEFAULTS))
    guard_tolerance: float | dict = 0.02  # absolute; or {metric: tolerance}
    min_rows: int = 1000
    min_frauds: int = 20
    bootstrap: int = 200
    require_significance: bool = False
    seed: int = 0
    canary: CanarySettings = field(default_factory=CanarySettings)
    rollout: dict = field(default_factory=dict)  # riskops.lifecycle.rollout.RolloutSettings (cluster: patch the InferenceService)

    @classmethod
    def from_dict(cls, d: dict | None) -> PromotionSettings:
        d = dict(d or {})
        return from_dict(cls, d, "promotion", canary=CanarySettings.from_dict(d.get("canary")),
                         # validated early; kept as a dict for rollout_from_config
                         rollout=RolloutSettings.from_dict(d.get("rollout")).to_dict())

    def tolerance(self, metric: str) -> float:
        if isinstance(self.guard_tolerance, dict):
            return float(self.guard_tolerance.get(metric, 0.02))
        return float(self.guard_tolerance)


def _settings(config: Any) -> PromotionSettings:
    if isinstance(config, PromotionSettings):
        return config
    return PromotionSettings.from_dict(config if isinstance(config, dict) else None)


# --------------------------------------------------------------------------------------------
# Offline gate
# --------------------------------------------------------------------------------------------


@dataclass
class PromotionDecision:
    promote: bool
    reasons: list[str]
    champion: dict
    challenger: dict
    delta: dict
    n: int
    frauds: int
    champion_version: str | None = None
    challenger_version: str | None = None
    alert: dict | None = None
    applied: bool = False  # the registry alias was moved
    rollout: dict | None = None  # the InferenceService patch (promotion.rollout.mode: kserve), or its error

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=float))


def default_model_frame(window):
    """The model inputs of a labelled window: the window itself when it is a model frame, else the
    frame rebuilt from prediction-log rows (`riskops.monitoring.reference.model_frame_from_log`)."""
    if {*NUMERIC_FEATURES, *CATEGORICAL_FEATURES, TEXT_COLUMN} <= set(window.columns):
        return window
    return model_frame_from_log(window)


def _scores(model: Any, window, y_len: int, frame_fn: Any = None) -> np.ndarray:
    """Scores from an array-like, or from an object with predict_proba/predict_scores(model_frame)."""
    if not (hasattr(model, "predict_proba") or hasattr(model, "predict_scores")):
        s = np.asarray(model, dtype="float64").ravel()
    else:
        frame = (frame_fn or default_model_frame)(window)
        fn = getattr(model, "predict_proba", None) or model.predict_scores
        s = np.asarray(fn(frame), dtype="float64")
        if s.ndim == 2:
            s = s[:, -1]
        s = s.ravel()
    if s.size != y_len:
        raise ValueError(f"{s.size} scores for {y_len} labelled rows")
    return s


def _paired_bootstrap(y: np.ndarray, a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    from sklearn.metrics import (
        average_precision_score,  # scikit-learn: loaded when a gate runs, not by the server
    )

    if n_boot <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, y.size, y.size)
        yb = y[idx]
        if 0 < yb.sum() < yb.size:
            diffs.append(average_precision_score(yb, b[idx]) - average_precision_score(yb, a[idx]))
    if len(diffs) < 10:
        return float("nan"), float("nan")
    return float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


def compare_models(
    champion: Any,
    challenger: Any,
    labelled_window,
    config: PromotionSettings | dict | None = None,
    frame_fn: Any = None,
) -> PromotionDecision:
    """The offline gate. ``champion`` / ``challenger``: scores aligned with ``labelled_window``'s rows
    (e.g. the champion's logged ``risk_score``) or a model with ``predict_proba(model_frame)``
    (`riskops.training.scorer.RiskScorer`) / ``predict_scores``. ``labelled_window`` needs ``is_fraud`` and,
    for models, the model inputs: a model frame, or prediction-log rows (rebuilt into one), or
    whatever ``frame_fn(labelled_window)`` returns."""
    from riskops.training.metrics import (
        score_metrics,  # scikit-learn: loaded when a gate runs, not by the server
    )

    s = _settings(config)
    y = np.asarray(labelled_window["is_fraud"], dtype="int64").ravel()
    a = _scores(champion, labelled_window, y.size, frame_fn)
    b = _scores(challenger, labelled_window, y.size, frame_fn)
    keys = [s.primary_metric, *s.guard_metrics]
    ma = score_metrics(y, a) if y.size else {}
    mb = score_metrics(y, b) if y.size else {}
    champ = {k: float(ma.get(k, float("nan"))) for k in keys}
    chall = {k: float(mb.get(k, float("nan"))) for k in keys}
    delta = {k: chall[k] - champ[k] for k in keys}
    n, frauds = int(y.size), int(y.sum())
    reasons: list[str] = []
    ok = True
    if n < s.min_rows or frauds < s.min_frauds:
        ok = False
        reasons.append(f"window too small to decide: {n} rows / {frauds} frauds "
                       f"(need >= {s.min_rows} / {s.min_frauds})")
    p = s.primary_metric
    if ok:
        if not math.isfinite(delta[p]) or delta[p] < s.min_improvement:
            ok = False
            reasons.append(f"{p} {chall[p]:.4f} vs champion {champ[p]:.4f}: improvement {delta[p]:+.4f} "
                           f"< required {s.min_improvement:+.4f}")
        else:
            reasons.append(f"{p} improves {champ[p]:.4f} -> {chall[p]:.4f} ({delta[p]:+.4f})")
        for g in s.guard_metrics:
            tol = s.tolerance(g)
            if not math.isfinite(delta[g]) or delta[g] < -tol:
                ok = False
                reasons.append(f"guard {g} degrades {champ[g]:.4f} -> {chall[g]:.4f} ({delta[g]:+.4f}, "
                               f"tolerance -{tol:.4f})")
    lo, hi = _paired_bootstrap(y, a, b, s.bootstrap, s.seed) if n and 0 < frauds < n else (float("nan"),) * 2
    delta[f"{p}_ci95"] = [lo, hi]
    if ok and s.require_significance and not (lo > 0):
        ok = False
        reasons.append(f"{p} improvement not significant (95% CI [{lo:+.4f}, {hi:+.4f}])")
    decision = PromotionDecision(promote=ok, reasons=reasons, champion=champ, challenger=chall, delta=delta,
                                 n=n, frauds=frauds)
    if not ok:
        decision.alert = {"type": "promotion_rejected", "reasons": reasons, "champion": champ,
                          "challenger": chall, "delta": delta, "n": n, "frauds": frauds}
    return decision


def promote(registry: ModelRegistry, version: str) -> str | None:
    """Make `version` the champion; the old one becomes ``previous_champion``; the challenger alias
    is dropped when it pointed at `version`. Returns the previous champion version."""
    previous = registry.champion()
    registry.set_alias(CHAMPION, version)
    if previous is not None and previous.version != version:
        registry.set_alias(PREVIOUS_CHAMPION, previous.version)
    if registry.aliases().get(CHALLENGER) == version:
        registry.delete_alias(CHALLENGER)
    return previous.version if previous else None


def decisions_file(paths: Paths) -> Path:
    return paths.root / "promotion" / "decisions.jsonl"


def record_decision(paths: Paths, decision: PromotionDecision, kind: str = "gate") -> None:
    f = decisions_file(paths)
    f.parent.mkdir(parents=True, exist_ok=True)
    rec = {"kind": kind, "at": datetime.now(UTC).isoformat(timespec="seconds"), **decision.to_dict()}
    with open(f, "a") as fh:
        fh.write(json.dumps(rec, default=str, sort_keys=True) + "\n")


def run_promotion_gate(
    paths: Paths,
    config: dict | PromotionSettings | None = None,
    challenger_version: str | None = None,
    log_df=None,
    cutoff: str | None = None,
    holdout_file: str | None = None,
    labelled=None,
    loader: Any = None,
    apply: bool = True,
    frame_fn: Any = None,
    rollout_api: Any = None,
) -> PromotionDecision:
    """Gate the challenger (default: the ``challenger`` alias) against the champion.

    Window: ``labelled`` if given, else prediction-log rows (``log_df`` or the whole log) joined with
    feedback, scored by the champion, at/after ``cutoff`` (the retraining data's holdout start:
    rows neither model trained on). Champion scores are the logged ones (exactly what served);
    the challenger is loaded with ``loader(path)`` (default `riskops.training.scorer.RiskScorer.load`) and
    scored on the logged model inputs (or ``frame_fn(window)``). On promotion (and ``apply``) the
    aliases move. The decision
    is appended to ``<home>/promotion/decisions.jsonl``; a rejection also raises an alert event.

    On a cluster (``rollout.mode: kserve``, riskops.lifecycle.rollout) a passed gate also patches the
    InferenceService: with ``rollout.canary_percent`` > 0 the new version gets that share of the
    traffic and the aliases stay (champion + challenger: a canary in progress, decided later through
    `apply_canary_decision`); with 0 it takes all traffic and the champion alias moves. A failed
    patch leaves the registry as it was and raises an alert. ``rollout_api``: the Kubernetes
    CustomObjectsApi (default: created from the in-cluster config).
    """
    s = _settings(config)
    registry = ModelRegistry(paths.registry)
    champion = registry.champion()
    challenger = registry.get(challenger_version) if challenger_version else registry.by_alias(CHALLENGER)
    if champion is None or challenger is None:
        raise LookupError(f"promotion gate needs a champion and a challenger (have {registry.aliases()})")
    if labelled is None:
        labelled = gate_window(paths, champion, log_df, cutoff)
    labelled = labelled.reset_index(drop=True)
    champ_scores: Any
    if "risk_score" in labelled.columns and labelled["risk_score"].notna().all():
        champ_scores = labelled["risk_score"].to_numpy(dtype="float64")
    else:
        champ_scores = _load(loader, champion.path)
    chall_model = _load(loader, challenger.path)
    if len(labelled):
        decision = compare_models(champ_scores, chall_model, labelled, s, frame_fn=frame_fn)
    else:
        decision = PromotionDecision(False, ["no labelled rows that neither model trained on"], {}, {}, {}, 0, 0)
        decision.alert = {"type": "promotion_rejected", "reasons": decision.reasons}
    decision.champion_version, decision.challenger_version = champion.version, challenger.version
    if decision.promote and apply:
        _apply_gate(registry, decision, s, rollout_api)
    record_decision(paths, decision)
    if decision.alert is not None:
        emit_alert(paths, {**decision.alert, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                           "champion_version": champion.version, "challenger_version": challenger.version})
    return decision


def gate_window(paths: Paths, champion: ModelVersion, log_df: pd.DataFrame | None = None,
                cutoff: str | None = None) -> pd.DataFrame:
    """The labelled rows the gate judges on: prediction-log rows (``log_df`` or the whole log) joined
    with feedback, scored by the champion, at/after ``cutoff`` (rows neither model trained on)."""
    if log_df is None:
        log_df = read_prediction_log(paths.prediction_log_source)
    labelled = labelled_window(log_df, load_feedback(paths))
    if len(labelled) and "model_version" in labelled.columns:
        labelled = labelled[labelled["model_version"].astype(str) == champion.version]
    if cutoff and len(labelled) and "event_timestamp" in labelled.columns:
        labelled = labelled[pd.to_datetime(labelled["event_timestamp"], utc=True) >= pd.Timestamp(cutoff)]
    return labelled


def _apply_gate(registry: ModelRegistry, decision: PromotionDecision, s: PromotionSettings, rollout_api: Any) -> None:
    """A passed gate: patch the InferenceService (rollout.mode kserve) and/or move the champion alias.

    With a canary share on the cluster the aliases stay (champion + challenger: a canary in progress);
    a failed patch leaves the registry as it was and turns the decision's alert into ``rollout_failed``.
    """
    version = decision.challenger_version
    rollout = rollout_from_config(s.rollout, api=rollout_api)
    try:
        if rollout is not None:
            decision.rollout = rollout.start(version)
        if rollout is None or not rollout.settings.canary_percent:
            promote(registry, version)
            decision.applied = True
    except RolloutError as exc:
        decision.rollout = {"error": str(exc)}
        decision.alert = {"type": "rollout_failed", "reasons": [str(exc)]}


def _load(loader: Any, path: Path):
    if loader is not None:
        return loader(path)
    from riskops.training.scorer import RiskScorer  # torch + transformers: only when a challenger is scored

    return RiskScorer.load(path, device="cpu")



def apply_canary_decision(registry: ModelRegistry, state: CanaryState, decision: CanaryDecision,
                          paths: Paths | None = None, rollout: Any = None) -> bool:
    """Promote (challenger -> champion) or roll back (drop the challenger alias); True if the
    registry changed. ``continue`` does nothing. Records the outcome under ``paths`` when given.

    ``rollout`` (a `riskops.lifecycle.rollout.KServeRollout`, on a cluster): the InferenceService's canary
    goes to 100% (promote) or 0% (rollback) first; if that patch fails, the registry is left as it
    was and `riskops.lifecycle.rollout.RolloutError` propagates (the cluster and the registry never disagree)."""
    version = state.challenger_version or registry.aliases().get(CHALLENGER)
    if rollout is not None and version and decision.action in ("promote", "rollback"):
        (rollout.promote if decision.action == "promote" else rollout.rollback)()
    changed = False
    if decision.action == "promote" and version:
        promote(registry, version)
        changed = True
    elif decision.action == "rollback" and registry.aliases().get(CHALLENGER) == version and version:
        registry.delete_alias(CHALLENGER)
        changed = True
    if paths is not None and decision.action != "continue":
        f = decisions_file(paths)
        f.parent.mkdir(parents=True, exist_ok=True)
        with open(f, "a") as fh:
            fh.write(json.dumps({"kind": "canary", "at": datetime.now(UTC).isoformat(timespec="seconds"),
                                 "action": decision.action, "reasons": decision.reasons,
                                 "challenger_version": version, "metrics": decision.metrics},
                                default=float, sort_keys=True) + "\n")
    return changed


def judge_cluster_canary(paths: Paths, s: PromotionSettings, log_df: pd.DataFrame | None,
                         rollout_api: Any = None) -> CanaryDecision | None:
    """The canary's decision on a cluster, from the shipped prediction log (the monitor's pass).

    A gate passed with ``rollout.mode: kserve`` and a ``canary_percent`` leaves champion + challenger
    aliases while KServe splits traffic; each pass rebuilds both arms' counters from the log
    (`riskops.lifecycle.canary.state_from_log`) and, once they decide, applies it: the
    InferenceService to 100 % or 0 %, then the aliases (`apply_canary_decision`). None when no canary
    runs; the ``continue`` decision while it does."""
    rollout = rollout_from_config(s.rollout, api=rollout_api)
    if rollout is None or not rollout.settings.canary_percent:
        return None
    registry = ModelRegistry(paths.registry)
    aliases = registry.aliases()
    champion, challenger = aliases.get(CHAMPION), aliases.get(CHALLENGER)
    if not champion or not challenger or log_df is None:
        return None
    state = state_from_log(log_df, load_feedback(paths), s.canary, champion, challenger)
    decision = state.decide()
    if decision.action != "continue":
        apply_canary_decision(registry, state, decision, paths, rollout=rollout)
    return decision
