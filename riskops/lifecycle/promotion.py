"""Champion/challenger: the offline promotion gate and the online canary.

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

Online canary (plain functions for the server)
----------------------------------------------
* `CanaryRouter(share, seed).use_challenger(transaction_id)` — deterministic per transaction id
  (a keyed BLAKE2 hash), so a retried request lands on the same arm;
* `CanaryState` — thread-safe counters per arm (requests, errors, score samples, flag rate,
  labelled outcomes) and `decide()`: ``rollback`` as soon as the challenger's error rate is out of
  bounds, after ``min_requests`` challenger requests ``rollback`` on insane scores (flag-rate ratio,
  or the mean absolute score shift against the champion's scores, out of bounds; PR-AUC clearly
  worse when labels exist) or ``promote``; ``continue`` before that. The score shift is the
  1-Wasserstein distance on the probability scale, not the KS distance: a model retrained on a
  shift legitimately moves the bulk of its near-zero legit scores (drift-demo --canary, fraud ring:
  challenger median 0.0003 vs 0.002, same flag rate, KS 0.41, gate +0.07 PR-AUC), which KS counts
  as a large difference and a probability-scale distance as the ~0.002 it is; a broken model (scores
  spread over [0, 1], or stuck) moves it by tenths. KS is still reported, and ``max_ks`` can veto.
  `apply_canary_decision` moves the registry aliases.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from riskops.registry.store import CHALLENGER, CHAMPION, ModelRegistry
from riskops.settings import Paths

log = logging.getLogger(__name__)

PREVIOUS_CHAMPION = "previous_champion"
GUARD_DEFAULTS = ("roc_auc", "recall_at_1pct_fpr")
_OTHER_SECTIONS = {"window", "drift", "volume", "rules", "rule_overrides", "retrain", "alerts", "reports"}


@dataclass
class CanarySettings:
    share: float = 0.1  # share of traffic the challenger answers
    seed: int = 0
    min_requests: int = 2000  # challenger requests before promote/rollback on scores
    min_requests_for_errors: int = 100  # errors are judged earlier: a broken model is rolled back fast
    max_error_rate: float = 0.01
    max_error_rate_increase: float = 0.005  # over the champion's error rate
    flag_rate_ratio_bounds: tuple[float, float] = (1 / 3, 3.0)  # challenger / champion review+block rate
    max_score_shift: float = 0.05  # 1-Wasserstein distance of the arms' scores (probability scale)
    max_ks: float | None = None  # optional veto on the KS distance (reported either way; see module doc)
    review_threshold: float = 0.5  # what counts as flagged (set from the model's policy by the server)
    min_labelled_frauds: int = 20  # per arm, before labels are compared
    pr_auc_tolerance: float = 0.05
    sample_size: int = 5000  # score samples kept per arm

    @classmethod
    def from_dict(cls, d: dict | None) -> CanarySettings:
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"promotion.canary: unknown keys {unknown}")
        if "flag_rate_ratio_bounds" in d:
            d["flag_rate_ratio_bounds"] = tuple(float(x) for x in d["flag_rate_ratio_bounds"])
        s = cls(**d)
        if not 0.0 <= s.share <= 1.0:
            raise ValueError(f"canary share must be in [0, 1], got {s.share}")
        return s


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
        if "promotion" in d or set(d) & _OTHER_SECTIONS:  # a whole monitor config was passed
            d = dict(d.get("promotion") or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"promotion: unknown keys {unknown} (known: {', '.join(cls.__dataclass_fields__)})")
        d["canary"] = CanarySettings.from_dict(d.get("canary"))
        from riskops.lifecycle.rollout import RolloutSettings

        d["rollout"] = RolloutSettings.from_dict(d.get("rollout")).to_dict()  # validate early
        return cls(**d)

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
    frame rebuilt from prediction-log rows (`riskops.monitoring.drift.model_frame_from_log`)."""
    from riskops.features.contract import CATEGORICAL_FEATURES, NUMERIC_FEATURES, TEXT_COLUMN

    if {*NUMERIC_FEATURES, *CATEGORICAL_FEATURES, TEXT_COLUMN} <= set(window.columns):
        return window
    from riskops.monitoring.drift import model_frame_from_log

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
    from sklearn.metrics import average_precision_score

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
    (`riskops.training.model.RiskScorer`) / ``predict_scores``. ``labelled_window`` needs ``is_fraud`` and,
    for models, the model inputs: a model frame, or prediction-log rows (rebuilt into one), or
    whatever ``frame_fn(labelled_window)`` returns."""
    from riskops.training.metrics import score_metrics

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
    the challenger is loaded with ``loader(path)`` (default `riskops.training.model.RiskScorer.load`) and
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
    import pandas as pd

    s = _settings(config)
    registry = ModelRegistry(paths.registry)
    champion = registry.champion()
    challenger = registry.get(challenger_version) if challenger_version else registry.by_alias(CHALLENGER)
    if champion is None or challenger is None:
        raise LookupError(f"promotion gate needs a champion and a challenger (have {registry.aliases()})")
    if labelled is None:
        from riskops.monitoring.feedback import labelled_window, load_feedback

        if log_df is None:
            from riskops.monitoring.prediction_log import read_prediction_log

            log_df = read_prediction_log(paths.prediction_log)
        labelled = labelled_window(log_df, load_feedback(paths))
        if len(labelled) and "model_version" in labelled.columns:
            labelled = labelled[labelled["model_version"].astype(str) == champion.version]
        if cutoff and len(labelled) and "event_timestamp" in labelled.columns:
            labelled = labelled[pd.to_datetime(labelled["event_timestamp"], utc=True) >= pd.Timestamp(cutoff)]
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
    rollout = None
    if decision.promote and apply:
        from riskops.lifecycle.rollout import RolloutError, rollout_from_config

        rollout = rollout_from_config(s.rollout, api=rollout_api)
        try:
            if rollout is not None:
                decision.rollout = rollout.start(challenger.version)
            if rollout is None or not rollout.settings.canary_percent:
                promote(registry, challenger.version)
                decision.applied = True
        except RolloutError as exc:
            decision.rollout = {"error": str(exc)}
            decision.alert = {"type": "rollout_failed", "reasons": [str(exc)]}
    record_decision(paths, decision)
    if decision.alert is not None:
        from riskops.monitoring.monitor import emit_alert

        emit_alert(paths, {**decision.alert, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                           "champion_version": champion.version, "challenger_version": challenger.version})
    return decision


def _load(loader: Any, path: Path):
    if loader is not None:
        return loader(path)
    from riskops.training.model import RiskScorer

    return RiskScorer.load(path, device="cpu")


# --------------------------------------------------------------------------------------------
# Canary
# --------------------------------------------------------------------------------------------


class CanaryRouter:
    """Deterministic traffic split: the same transaction id always gets the same arm."""

    def __init__(self, share: float, seed: int | str = 0) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"canary share must be in [0, 1], got {share}")
        self.share = float(share)
        self._key = str(seed).encode()[:64] or b"0"

    def bucket(self, transaction_id: str) -> float:
        """A uniform number in [0, 1) fixed by (seed, transaction_id)."""
        h = hashlib.blake2b(str(transaction_id).encode(), digest_size=8, key=self._key).digest()
        return int.from_bytes(h, "big") / 2.0**64

    def use_challenger(self, transaction_id: str) -> bool:
        return self.share > 0.0 and self.bucket(transaction_id) < self.share

    def arm(self, transaction_id: str) -> str:
        return CHALLENGER if self.use_challenger(transaction_id) else CHAMPION


@dataclass
class CanaryDecision:
    action: str  # continue | promote | rollback
    reasons: list[str]
    metrics: dict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Arm:
    def __init__(self, sample_size: int) -> None:
        self.requests = 0
        self.errors = 0
        self.flagged = 0
        self.scores: deque[float] = deque(maxlen=sample_size)
        self.labels: list[tuple[int, float]] = []


class CanaryState:
    """Per-arm counters for a canary rollout; `decide()` says continue / promote / rollback."""

    def __init__(self, settings: CanarySettings | dict | None = None, champion_version: str | None = None,
                 challenger_version: str | None = None) -> None:
        self.settings = settings if isinstance(settings, CanarySettings) else CanarySettings.from_dict(settings)
        self.champion_version = champion_version
        self.challenger_version = challenger_version
        self._lock = threading.Lock()
        self._arms = {CHAMPION: _Arm(self.settings.sample_size), CHALLENGER: _Arm(self.settings.sample_size)}

    def record_request(self, arm: str, score: float | None = None, error: bool = False) -> None:
        """One scored (or failed) request. A non-finite or out-of-[0,1] score counts as an error."""
        with self._lock:
            a = self._arms[arm]
            a.requests += 1
            bad = error or score is None or not math.isfinite(float(score)) or not 0.0 <= float(score) <= 1.0
            if bad:
                a.errors += 1
                return
            a.scores.append(float(score))
            if float(score) >= self.settings.review_threshold:
                a.flagged += 1

    def record_outcome(self, arm: str, is_fraud: int | bool, score: float) -> None:
        """A confirmed label for a request this arm answered (feedback joined by the server)."""
        with self._lock:
            self._arms[arm].labels.append((int(bool(is_fraud)), float(score)))

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out = {}
            for name, a in self._arms.items():
                ok = max(a.requests - a.errors, 0)
                out[name] = {
                    "requests": a.requests,
                    "errors": a.errors,
                    "error_rate": a.errors / a.requests if a.requests else 0.0,
                    "flag_rate": a.flagged / ok if ok else 0.0,
                    "labelled": len(a.labels),
                    "frauds": sum(y for y, _ in a.labels),
                }
            return out

    def decide(self) -> CanaryDecision:
        st = self.settings
        snap = self.snapshot()
        ch, cp = snap[CHALLENGER], snap[CHAMPION]
        reasons: list[str] = []
        with self._lock:
            s_ch = np.asarray(self._arms[CHALLENGER].scores, dtype="float64")
            s_cp = np.asarray(self._arms[CHAMPION].scores, dtype="float64")
            l_ch = list(self._arms[CHALLENGER].labels)
            l_cp = list(self._arms[CHAMPION].labels)
        metrics: dict[str, Any] = {"arms": snap}
        if ch["requests"] >= st.min_requests_for_errors:
            if ch["error_rate"] > st.max_error_rate or ch["error_rate"] > cp["error_rate"] + st.max_error_rate_increase:
                reasons.append(f"challenger error rate {ch['error_rate']:.2%} (champion {cp['error_rate']:.2%}, "
                               f"limit {st.max_error_rate:.2%})")
                return CanaryDecision("rollback", reasons, metrics)
        if ch["requests"] < st.min_requests:
            return CanaryDecision("continue", [f"{ch['requests']}/{st.min_requests} challenger requests"], metrics)
        if s_ch.size and s_cp.size:
            from scipy.stats import binomtest, ks_2samp, wasserstein_distance

            ks = float(ks_2samp(s_ch, s_cp).statistic)
            shift = float(wasserstein_distance(s_ch, s_cp))
            metrics.update(ks=ks, score_shift=shift)
            lo, hi = st.flag_rate_ratio_bounds
            n_ch, n_cp = s_ch.size, s_cp.size
            f_ch_n = int((s_ch >= st.review_threshold).sum())
            p_cp = (int((s_cp >= st.review_threshold).sum()) + 1) / (n_cp + 2)
            ratio = ((f_ch_n + 1) / (n_ch + 2)) / p_cp  # pseudo-counts: empty bands do not divide by 0
            p_value = float(binomtest(f_ch_n, n_ch, p_cp).pvalue)
            metrics.update(flag_rate_ratio=ratio, flag_rate_p_value=p_value)
            if shift > st.max_score_shift:
                reasons.append(f"score distributions differ: mean score shift {shift:.3f} > {st.max_score_shift}")
            if st.max_ks is not None and ks > st.max_ks:
                reasons.append(f"score distributions differ: KS {ks:.3f} > {st.max_ks}")
            if not lo <= ratio <= hi and p_value < 0.001:
                reasons.append(f"flag rate {ch['flag_rate']:.2%} vs champion {cp['flag_rate']:.2%} "
                               f"(ratio {ratio:.2f} outside [{lo:.2f}, {hi:.2f}])")
        elif not s_ch.size:
            reasons.append("challenger produced no valid scores")
        f_ch, f_cp = sum(y for y, _ in l_ch), sum(y for y, _ in l_cp)
        if f_ch >= st.min_labelled_frauds and f_cp >= st.min_labelled_frauds:
            from sklearn.metrics import average_precision_score

            ap_ch = float(average_precision_score(*zip(*l_ch, strict=True)))
            ap_cp = float(average_precision_score(*zip(*l_cp, strict=True)))
            metrics.update(pr_auc_challenger=ap_ch, pr_auc_champion=ap_cp)
            if ap_ch < ap_cp - st.pr_auc_tolerance:
                reasons.append(f"challenger PR-AUC {ap_ch:.3f} < champion {ap_cp:.3f} - {st.pr_auc_tolerance}")
        if reasons:
            return CanaryDecision("rollback", reasons, metrics)
        return CanaryDecision("promote", [f"{ch['requests']} challenger requests within bounds"], metrics)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "settings": {**asdict(self.settings), "flag_rate_ratio_bounds": list(self.settings.flag_rate_ratio_bounds)},
                "champion_version": self.champion_version,
                "challenger_version": self.challenger_version,
                "arms": {n: {"requests": a.requests, "errors": a.errors, "flagged": a.flagged,
                             "scores": list(a.scores), "labels": a.labels} for n, a in self._arms.items()},
            }

    @classmethod
    def from_dict(cls, d: dict) -> CanaryState:
        st = cls(d.get("settings"), d.get("champion_version"), d.get("challenger_version"))
        for n, v in (d.get("arms") or {}).items():
            a = st._arms[n]
            a.requests, a.errors, a.flagged = int(v["requests"]), int(v["errors"]), int(v["flagged"])
            a.scores.extend(float(x) for x in v.get("scores", []))
            a.labels = [(int(y), float(s)) for y, s in v.get("labels", [])]
        return st


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


__all__ = [
    "CanaryDecision",
    "CanaryRouter",
    "CanarySettings",
    "CanaryState",
    "PromotionDecision",
    "PromotionSettings",
    "apply_canary_decision",
    "compare_models",
    "promote",
    "run_promotion_gate",
]
