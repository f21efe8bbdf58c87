"""Probability calibration: measure it (ECE, reliability plot) and fix it on validation data.

A fraud score is used as a probability by the decision policy and by people reading it, so a
model trained with class weights or on subsampled legitimate rows (which inflates P(fraud)) is
recalibrated on the validation period before its ECE is reported:

* :func:`fit_temperature` — one parameter T > 0: p = sigmoid(logit / T) (keeps the ranking);
  ``with_bias=True`` adds an offset b: sigmoid(logit / T + b) — Platt scaling, which also
  undoes the prior shift of class weights / subsampling;
* :class:`IsotonicCalibrator` — a monotone step function fitted by isotonic regression;
* :func:`choose_calibrator` — fits the candidates and keeps the one with the lowest validation
  negative log-likelihood. The NLL used for the choice is cross-fitted (k folds inside the
  validation set: fit on k-1, score the held-out fold), because an isotonic fit scored on its own
  training rows always looks best. The winner is then refitted on the whole validation set.

Calibrators only ever see validation rows; the test period is scored once with the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from riskops.training.metrics import ECE_BINS
from riskops.training.metrics import expected_calibration_error as _ece

EPS = 1e-6


def _arrays(y, s) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype("int64").ravel()
    s = np.asarray(s, dtype="float64").ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain non-finite values")
    return y, s


def expected_calibration_error(y_true, probs, n_bins: int = ECE_BINS) -> float:
    """ECE with ``n_bins`` equal-width bins on [0, 1] (the same definition as riskops.training.metrics):
    sum over bins of (rows in bin / rows) * |fraud rate in bin - mean probability in bin|."""
    y, p = _arrays(y_true, probs)
    return _ece(y, p, n_bins)


def reliability_curve(y_true, probs, n_bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Per equal-width bin: mean predicted probability, observed fraud rate, row count."""
    y, p = _arrays(y_true, probs)
    idx = np.minimum((p * n_bins).astype("int64"), n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, weights=p, minlength=n_bins) / counts
        rate = np.bincount(idx, weights=y, minlength=n_bins) / counts
    return {"mean_predicted": mean_p, "fraud_rate": rate, "count": counts}


def reliability_plot(
    curves: dict[str, tuple], path: str | Path, title: str = "Reliability", n_bins: int = ECE_BINS
) -> Path:
    """A reliability diagram PNG. ``curves``: label -> (y_true, probs). Marker area ~ log(bin rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect")
    for label, (y, p) in curves.items():
        c = reliability_curve(y, p, n_bins)
        ok = c["count"] > 0
        ece = expected_calibration_error(y, p, n_bins)
        ax.plot(
            c["mean_predicted"][ok], c["fraud_rate"][ok], marker="o", lw=1.2, label=f"{label} (ECE {ece:.4f})"
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted P(fraud) in bin")
    ax.set_ylabel("observed fraud rate in bin")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def nll(y_true, probs) -> float:
    """Mean negative log-likelihood (log loss) with probabilities clipped to [1e-6, 1 - 1e-6]."""
    y, p = _arrays(y_true, probs)
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype="float64"), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


# --------------------------------------------------------------------------------------------
# Calibrators
# --------------------------------------------------------------------------------------------


@dataclass
class TemperatureCalibrator:
    """p = sigmoid(logit / temperature + bias); bias is 0 for pure temperature scaling."""

    temperature: float = 1.0
    bias: float = 0.0
    name: str = "temperature"

    def transform_logits(self, logits) -> np.ndarray:
        return _sigmoid(np.asarray(logits, dtype="float64") / self.temperature + self.bias)

    def transform(self, probs) -> np.ndarray:
        return self.transform_logits(logit(probs))

    def to_dict(self) -> dict:
        return {"kind": self.name, "temperature": self.temperature, "bias": self.bias}


def fit_temperature(logits, y, with_bias: bool = False) -> TemperatureCalibrator:
    """Minimise the NLL of sigmoid(logits / T [+ b]) over T > 0 (and b): L-BFGS on (log T, b)."""
    from scipy.optimize import minimize

    y_arr, z = _arrays(y, logits)
    t = y_arr.astype("float64")

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        inv_t = np.exp(-theta[0])
        b = theta[1] if with_bias else 0.0
        a = z * inv_t + b
        # mean BCE with logits, written stably: softplus(a) - t * a
        loss = np.mean(np.logaddexp(0.0, a) - t * a)
        r = _sigmoid(a) - t  # d loss / d a, per row
        grad_log_t = np.mean(r * (-z * inv_t))
        grad = np.array([grad_log_t, np.mean(r)] if with_bias else [grad_log_t])
        return float(loss), grad

    x0 = np.zeros(2 if with_bias else 1)
    res = minimize(
        objective,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=[(-7.0, 7.0)] + ([(-30.0, 30.0)] if with_bias else []),
    )
    temperature = float(np.exp(res.x[0]))
    bias = float(res.x[1]) if with_bias else 0.0
    return TemperatureCalibrator(temperature, bias, "platt" if with_bias else "temperature")


@dataclass
class IsotonicCalibrator:
    """Monotone (non-decreasing) step function from score to probability, via isotonic regression.

    Scores outside the fitted range are clipped to it. Works on any score scale."""

    x_: np.ndarray | None = None
    y_: np.ndarray | None = None
    name: str = "isotonic"

    def fit(self, scores, y) -> IsotonicCalibrator:
        from sklearn.isotonic import IsotonicRegression

        y_arr, s = _arrays(y, scores)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(s, y_arr)
        self.x_ = np.asarray(iso.X_thresholds_, dtype="float64")
        self.y_ = np.asarray(iso.y_thresholds_, dtype="float64")
        return self

    def transform(self, scores) -> np.ndarray:
        if self.x_ is None:
            raise RuntimeError("IsotonicCalibrator is not fitted")
        return np.interp(np.asarray(scores, dtype="float64"), self.x_, self.y_)

    def to_dict(self) -> dict:
        return {"kind": self.name, "x": self.x_.tolist(), "y": self.y_.tolist()}


@dataclass
class IdentityCalibrator:
    name: str = "none"

    def transform(self, probs) -> np.ndarray:
        return np.clip(np.asarray(probs, dtype="float64"), 0.0, 1.0)

    def to_dict(self) -> dict:
        return {"kind": self.name}


@dataclass
class CalibrationChoice:
    calibrator: object
    scale: str  # "prob" or "score": what the calibrator's transform expects
    cv_nll: dict[str, float] = field(default_factory=dict)  # candidate -> cross-fitted validation NLL

    @property
    def name(self) -> str:
        return self.calibrator.name

    def transform(self, scores) -> np.ndarray:
        return _apply(self.calibrator, np.asarray(scores, dtype="float64"), self.scale)

    def to_dict(self) -> dict:
        return {
            "chosen": self.name,
            "scale": self.scale,
            "cv_nll": self.cv_nll,
            "params": self.calibrator.to_dict(),
        }


def _fit(kind: str, s: np.ndarray, y: np.ndarray, scale: str):
    if kind == "isotonic":
        return IsotonicCalibrator().fit(s, y)
    z = logit(s) if scale == "prob" else s
    return fit_temperature(z, y, with_bias=(kind == "platt"))


def _apply(cal, s: np.ndarray, scale: str) -> np.ndarray:
    if isinstance(cal, TemperatureCalibrator):
        return cal.transform_logits(logit(s) if scale == "prob" else s)
    return cal.transform(s)


def choose_calibrator(
    scores_val, y_val, scale: str = "prob", candidates: tuple[str, ...] = ("temperature", "platt", "isotonic"),
    folds: int = 5, seed: int = 0,
) -> CalibrationChoice:  # fmt: skip
    """Pick the calibrator with the lowest cross-fitted validation NLL and refit it on all of val.

    ``scale="prob"``: scores are probabilities (temperature/Platt act on their logits; "none" is a
    candidate too). ``scale="score"``: scores are unbounded (logits, decision values, anomaly
    scores) and temperature/Platt treat them as logits. Folds are stratified so each holds frauds.
    """
    if scale not in ("prob", "score"):
        raise ValueError("scale must be 'prob' or 'score'")
    y, s = _arrays(y_val, scores_val)
    if y.min() == y.max():
        raise ValueError("calibration needs both classes in the validation labels")
    rng = np.random.default_rng(seed)
    fold = np.empty(y.size, dtype="int64")
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        fold[idx] = rng.permutation(np.arange(idx.size) % folds)
    cv: dict[str, float] = {}
    if scale == "prob":
        cv["none"] = nll(y, np.clip(s, 0, 1))
    for kind in candidates:
        pred = np.empty(y.size)
        for k in range(folds):
            tr, te = fold != k, fold == k
            if y[tr].min() == y[tr].max():
                pred[te] = y[tr].mean()
                continue
            pred[te] = _apply(_fit(kind, s[tr], y[tr], scale), s[te], scale)
        cv[kind] = nll(y, pred)
    best = min(cv, key=cv.get)
    cal = IdentityCalibrator() if best == "none" else _fit(best, s, y, scale)
    return CalibrationChoice(cal, scale, cv)
