"""The risk model's input scaling and output calibration: fitted on data, saved next to the weights.

* ``Normalizer`` — robust per-feature scaling of the numeric inputs (fitted on the training frame);
* ``Calibration`` / ``fit_temperature`` — temperature and bias on the logits (fitted on validation).

Shared by training (riskops.training.finetune_run), scoring (riskops.training.scorer) and serving.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from riskops.features.contract import NUMERIC_FEATURES, ColumnFrame

log = logging.getLogger(__name__)

@dataclass
class Normalizer:
    """Robust per-feature scaling of the numeric inputs, fitted on the training frame.

    z = (x - median) / scale with scale = IQR / 1.349 (= std for a normal), falling back to the
    std and then 1 for (near-)constant or mostly-zero features such as counts and flags. Beyond
    ±soft_clip, z grows logarithmically (monotone, so extreme values stay ordered but cannot blow
    up the MLP), then a hard clip at ±hard_clip. Non-finite inputs map to 0 (the median).
    """

    features: tuple[str, ...]
    center: list[float]
    scale: list[float]
    soft_clip: float = 5.0
    hard_clip: float = 50.0

    @classmethod
    def fit(cls, frame: pd.DataFrame, features: Sequence[str] = NUMERIC_FEATURES) -> Normalizer:
        x = frame[list(features)].to_numpy(dtype=np.float64)
        x = np.where(np.isfinite(x), x, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            center = np.nan_to_num(np.nanmedian(x, axis=0))
            q75, q25 = np.nanpercentile(x, [75, 25], axis=0)
            scale = np.nan_to_num((q75 - q25) / 1.349)
            std = np.nan_to_num(np.nanstd(x, axis=0))
        scale = np.where(scale > 1e-6, scale, np.where(std > 1e-6, std, 1.0))
        return cls(tuple(features), center.tolist(), scale.tolist())

    def transform(self, frame: pd.DataFrame | ColumnFrame) -> np.ndarray:
        """[n, n_features] float32 normalised values, in `features` order."""
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise KeyError(f"model frame lacks numeric features: {missing}")
        # column by column: several times faster than frame[list] for the 1-row frames of serving
        return self.transform_matrix(
            np.column_stack([np.asarray(frame[f], dtype=np.float64) for f in self.features])
        )

    def transform_matrix(self, x: np.ndarray) -> np.ndarray:
        """`transform` of a float matrix whose columns are `features`, in order."""
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(
                f"expected a [n, {len(self.features)}] matrix of {self.features}, got shape {x.shape}"
            )
        z = (x - np.asarray(self.center)) / np.asarray(self.scale)
        z = np.where(np.isfinite(z), z, 0.0)
        c = self.soft_clip
        a = np.abs(z)
        z = np.where(a > c, np.sign(z) * (c + np.log1p(np.maximum(a - c, 0.0))), z)
        return np.clip(z, -self.hard_clip, self.hard_clip).astype(np.float32)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        return cls(
            features=tuple(d["features"]),
            center=[float(v) for v in d["center"]],
            scale=[float(v) for v in d["scale"]],
            soft_clip=float(d.get("soft_clip", 5.0)),
            hard_clip=float(d.get("hard_clip", 50.0)),
        )

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path | str) -> Normalizer:
        return cls.from_dict(json.loads(Path(path).read_text()))


# --------------------------------------------------------------------------- calibration
@dataclass
class Calibration:
    """p = sigmoid(logit / temperature + bias), fitted on validation logits."""

    temperature: float = 1.0
    bias: float = 0.0
    method: str = "none"
    n: int = 0
    nll_before: float | None = None
    nll_after: float | None = None

    def apply(self, logits: np.ndarray) -> np.ndarray:
        return np.asarray(logits, dtype=np.float64) / self.temperature + self.bias

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path | str) -> Calibration:
        d = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(logits, labels)


T_MIN, T_MAX = 0.1, 20.0


def fit_temperature(logits, labels, fit_bias: bool = True, max_iter: int = 100) -> Calibration:
    """Fit the temperature T (and a bias b) minimising validation NLL of sigmoid(z / T + b).

    The bias is needed because training re-weights the classes (pos_weight, legit down-sampling),
    which shifts logits by a constant that a temperature alone cannot undo; fit_bias=False gives
    pure temperature scaling. Guards against over-fitting a small validation set (few frauds):
    the fit uses Platt's smoothed targets (N+ + 1)/(N+ + 2) and 1/(N- + 2) instead of 1/0, so
    a perfectly separated validation set does not drive T to 0; T is fitted on a log scale and
    bounded to [T_MIN, T_MAX]. If the fit does not lower the (plain) validation NLL, or the
    labels hold a single class, the identity (T=1, b=0) is kept.
    """
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64))
    if z.shape != y.shape or z.ndim != 1:
        raise ValueError(
            f"logits and labels must be 1-d and the same length, got {tuple(z.shape)}, {tuple(y.shape)}"
        )
    n = int(z.numel())
    if n == 0 or y.min() == y.max():
        log.warning("calibration skipped: validation labels hold a single class (%d rows)", n)
        return Calibration(method="none", n=n)
    n_pos = float(y.sum())
    n_neg = n - n_pos
    target = torch.where(y > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    before = float(_nll(z, y))
    lo, hi = math.log(T_MIN), math.log(T_MAX)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=fit_bias)
    params = [log_t, bias] if fit_bias else [log_t]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = _nll(z / log_t.clamp(lo, hi).exp() + bias, target)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().clamp(lo, hi).exp())
    b = float(bias.detach())
    after = float(_nll(z / t + b, y))
    if not math.isfinite(after) or after > before:
        return Calibration(method="none", n=n, nll_before=before, nll_after=before)
    method = "temperature+bias" if fit_bias else "temperature"
    return Calibration(temperature=t, bias=b, method=method, n=n, nll_before=before, nll_after=after)
