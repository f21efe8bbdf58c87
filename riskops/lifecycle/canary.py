"""The online canary: plain functions the server uses to split traffic and judge a challenger.

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

`riskops.lifecycle.promotion.apply_canary_decision` moves the registry aliases on a decision.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from riskops.registry.store import CHALLENGER, CHAMPION
from riskops.settings import from_dict


@dataclass
class CanarySettings:
    """The `promotion.canary:` section of configs/monitor.yaml (read by the server's canary too)."""

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
        if "flag_rate_ratio_bounds" in d:  # YAML gives a list
            d["flag_rate_ratio_bounds"] = tuple(float(x) for x in d["flag_rate_ratio_bounds"])
        s = from_dict(cls, d, "promotion.canary")
        if not 0.0 <= s.share <= 1.0:
            raise ValueError(f"canary share must be in [0, 1], got {s.share}")
        return s


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


def state_from_log(log_df: Any, labels: Any, settings: CanarySettings, champion: str, challenger: str) -> CanaryState:
    """The canary's counters from the prediction log, for a split the server does not make itself.

    On a cluster KServe splits traffic between two revisions (``canaryTrafficPercent``) and no one
    process sees both arms; the shipped log does: each row says which version answered. Rows of
    either version from the challenger's first answer on count as requests (a degraded answer too:
    the features, not the model, were missing); `labels` (feedback: transaction_id, is_fraud) join
    by transaction id. A failed request is not in the log: errors are the alerts' to catch.
    """
    state = CanaryState(settings, champion, challenger)
    if log_df is None or len(log_df) == 0 or "model_version" not in log_df.columns:
        return state
    versions = log_df["model_version"].astype(str)
    rows = log_df[versions.isin([champion, challenger])]
    first = rows.loc[rows["model_version"].astype(str) == challenger, "logged_at"].min()
    if first != first or first is None:  # NaN: the challenger has not answered yet
        return state
    rows = rows[rows["logged_at"] >= first]
    known: dict[str, int] = {}
    if labels is not None and len(labels):
        known = dict(zip(labels["transaction_id"].astype(str), labels["is_fraud"].astype(int), strict=True))
    for version, score, tid in zip(rows["model_version"].astype(str), rows["risk_score"], rows["transaction_id"].astype(str), strict=True):
        arm = CHALLENGER if version == challenger else CHAMPION
        state.record_request(arm, float(score))
        if tid in known:
            state.record_outcome(arm, known[tid], float(score))
    return state
