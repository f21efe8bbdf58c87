"""Unsupervised anomaly detection for fraud nobody has labelled yet, and a rank blend with the
supervised score.

A supervised model only knows the fraud patterns in its labels. A new fraud ring, a new payment
scam, anything that never appeared as ``label = 1`` in training, can look "legitimate" to it. An
autoencoder trained on legitimate traffic only learns what normal rows look like; rows it cannot
reconstruct well are unusual, whatever their label history.

* :func:`fit_autoencoder` — a torch MLP autoencoder (input -> 64 -> 16 -> 64 -> input) trained
  on label-0 rows. Preprocessing fitted on those rows: numerics robust-scaled (median / IQR) and
  squashed with a signed log (extreme values stay extreme but cannot dominate the loss),
  categoricals one-hot over the training vocabulary. The score is the mean squared
  reconstruction error, each feature's residual divided by its typical size on held-out normal
  rows (features that are always hard to reconstruct do not drown the rest).
* :func:`blend` — ``(1 - w) * rank(supervised) + w * rank(anomaly)``. Ranks are percentiles
  against a *reference* sample (the validation scores), so a single request gets the same blended
  score as it would in a batch; without a reference they are ranks within the batch.
* :func:`choose_blend_weight` — the weight on a grid that maximises validation PR-AUC (ties go
  to the smaller weight: the anomaly score has to earn its place).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from riskops.training.tabular import robust_center_scale, signed_log_scaled

WEIGHTS_NAME = "autoencoder.safetensors"
META_NAME = "autoencoder.json"


@dataclass
class AutoencoderConfig:
    hidden: tuple[int, ...] = (64, 16)  # encoder widths; the decoder mirrors them
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 512
    max_epochs: int = 30
    patience: int = 3  # epochs without a lower held-out reconstruction loss
    holdout_fraction: float = 0.1  # of the normal rows, for early stopping and residual scales
    max_rows: int | None = 100_000  # subsample normal rows for speed (None: all)
    noise: float = 0.0  # denoising: Gaussian noise added to inputs while training
    seed: int = 0
    num_threads: int | None = 1
    progress: bool = False


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


@dataclass
class _Prep:
    numeric: list[str]
    categorical: list[str]
    median: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    vocabs: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, X: pd.DataFrame, numeric: list[str], categorical: list[str]) -> _Prep:
        p = cls(list(numeric), list(categorical))
        for c in p.numeric:
            med, scale = robust_center_scale(X[c].to_numpy(dtype="float64"))
            p.median.append(med)
            p.scale.append(scale)
        for c in p.categorical:
            counts = X[c].astype(str).value_counts()
            p.vocabs[c] = sorted(counts[counts >= 5].index.tolist())
        return p

    @property
    def width(self) -> int:
        return len(self.numeric) + sum(len(v) for v in self.vocabs.values())

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        missing = [c for c in (*self.numeric, *self.categorical) if c not in X.columns]
        if missing:
            raise ValueError(f"input is missing column(s) {missing}")
        parts = []
        if self.numeric:
            parts.append(
                signed_log_scaled(X[self.numeric].to_numpy(dtype="float64"), self.median, self.scale)
            )
        for c in self.categorical:
            vocab = self.vocabs[c]
            idx = pd.Categorical(X[c].astype(str), categories=vocab).codes
            oh = np.zeros((len(X), len(vocab)))
            ok = idx >= 0
            oh[np.flatnonzero(ok), idx[ok]] = 1.0
            parts.append(oh)
        return np.concatenate(parts, axis=1).astype("float32") if parts else np.zeros((len(X), 0), "float32")


def _as_frame(X, columns: list[str] | None = None) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    arr = np.asarray(X, dtype="float64")
    if arr.ndim != 2:
        raise ValueError("X must be 2-D")
    return pd.DataFrame(arr, columns=columns or [f"x{i}" for i in range(arr.shape[1])])


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class _MLPAutoencoder(nn.Module):
    def __init__(self, width: int, hidden: tuple[int, ...]):
        super().__init__()
        dims = [width, *hidden]
        enc, dec = [], []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            enc += [nn.Linear(a, b), nn.GELU()]
        enc = enc[:-1]  # linear bottleneck
        rdims = dims[::-1]
        for a, b in zip(rdims[:-1], rdims[1:], strict=True):
            dec += [nn.Linear(a, b), nn.GELU()]
        dec = dec[:-1]  # linear output
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


@torch.no_grad()
def _residuals(model: nn.Module, x: np.ndarray, batch: int = 16384) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i : i + batch])
        out.append((model(xb) - xb).numpy())
    return np.concatenate(out) if out else np.zeros((0, x.shape[1]), "float32")


class AnomalyDetector:
    """A fitted autoencoder. ``score(X)``: higher = more unusual (>= 0, not a probability)."""

    name = "autoencoder"

    def __init__(self, model: _MLPAutoencoder, prep: _Prep, residual_scale: np.ndarray,
                 config: AutoencoderConfig, info: dict | None = None):  # fmt: skip
        self.model = model
        self.prep = prep
        self.residual_scale = np.asarray(residual_scale, dtype="float64")
        self.config = config
        self.info = info or {}

    def score(self, X) -> np.ndarray:
        x = self.prep.transform(_as_frame(X, self.prep.numeric))
        r = _residuals(self.model, x).astype("float64") / self.residual_scale
        return np.mean(r * r, axis=1)

    def predict_scores(self, X) -> np.ndarray:  # the baselines' interface
        return self.score(X)

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(d / WEIGHTS_NAME))
        meta = {"config": asdict(self.config), "prep": asdict(self.prep),
                "residual_scale": self.residual_scale.tolist(), "info": self.info}  # fmt: skip
        (d / META_NAME).write_text(json.dumps(meta))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> AnomalyDetector:
        from safetensors.torch import load_file

        d = Path(directory)
        meta = json.loads((d / META_NAME).read_text())
        cfg = meta["config"]
        cfg["hidden"] = tuple(cfg["hidden"])
        config = AutoencoderConfig(**cfg)
        prep = _Prep(**meta["prep"])
        model = _MLPAutoencoder(prep.width, config.hidden)
        model.load_state_dict(load_file(str(d / WEIGHTS_NAME)))
        model.eval()
        return cls(model, prep, np.asarray(meta["residual_scale"]), config, meta.get("info"))


def fit_autoencoder(
    X_normal,
    config: AutoencoderConfig | None = None,
    numeric: list[str] | None = None,
    categorical: list[str] | None = None,
) -> AnomalyDetector:
    """Train on legitimate rows only (pass ``X[y == 0]``). Columns as in riskops.training.tabular."""
    from tqdm.auto import tqdm

    cfg = config or AutoencoderConfig()
    X = _as_frame(X_normal)
    if numeric is None and categorical is None:
        numeric = [
            c
            for c in X.columns
            if pd.api.types.is_numeric_dtype(X[c]) and not pd.api.types.is_bool_dtype(X[c])
        ]
        categorical = [c for c in X.columns if c not in numeric]
    numeric, categorical = list(numeric or []), list(categorical or [])
    if len(X) < 20:
        raise ValueError(f"need at least 20 normal rows to fit an autoencoder, got {len(X)}")
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.max_rows is not None and len(X) > cfg.max_rows:
        X = X.iloc[np.sort(rng.choice(len(X), cfg.max_rows, replace=False))]
    prev = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        t0 = time.perf_counter()
        prep = _Prep.fit(X, numeric, categorical)
        x = prep.transform(X)
        perm = rng.permutation(len(x))
        n_hold = max(10, int(len(x) * cfg.holdout_fraction))
        x_hold, x_fit = x[perm[:n_hold]], x[perm[n_hold:]]
        model = _MLPAutoencoder(x.shape[1], tuple(cfg.hidden))
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        best, best_state, bad, history = np.inf, None, 0, []
        for epoch in range(cfg.max_epochs):
            model.train()
            order = rng.permutation(len(x_fit))
            for i in tqdm(range(0, len(order), cfg.batch_size), disable=not cfg.progress, leave=False,
                          desc=f"autoencoder epoch {epoch + 1}"):  # fmt: skip
                xb = torch.from_numpy(x_fit[order[i : i + cfg.batch_size]])
                inp = xb + cfg.noise * torch.randn_like(xb) if cfg.noise > 0 else xb
                loss = nn.functional.mse_loss(model(inp), xb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            hold = float(np.mean(_residuals(model, x_hold) ** 2))
            history.append({"epoch": epoch + 1, "holdout_mse": hold})
            if hold < best - 1e-6:
                best, bad = hold, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        res = _residuals(model, x_hold).astype("float64")
        scale = np.sqrt(np.mean(res * res, axis=0)) + 1e-3
        info = {"rows": int(len(x)), "epochs_run": len(history), "holdout_mse": best, "history": history,
                "train_seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
        return AnomalyDetector(model, prep, scale, cfg, info)
    finally:
        torch.set_num_threads(prev)


# --------------------------------------------------------------------------------------------
# Rank blend
# --------------------------------------------------------------------------------------------


def percentile_rank(scores: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """Each score's position in [0, 1] relative to ``reference`` (or to the batch when None).

    Against a reference: the mid-rank ECDF of the reference, interpolated linearly between its
    distinct values, with exponential tails beyond them, so the map is continuous and strictly
    increasing — a test score above every reference score still ranks above a slightly lower one
    (a plain ECDF would tie them all at 1.0, exactly where the frauds are).
    """
    s = np.asarray(scores, dtype="float64").ravel()
    if reference is None:
        from scipy.stats import rankdata

        return (rankdata(s, method="average") - 0.5) / max(s.size, 1)
    ref = np.sort(np.asarray(reference, dtype="float64").ravel())
    if ref.size == 0:
        raise ValueError("empty reference sample")
    u, first = np.unique(ref, return_index=True)
    last = np.r_[first[1:], ref.size]  # one past the last position of each distinct value
    c = (first + last) / (2.0 * ref.size)  # mid-rank ECDF at each distinct value
    q1, q3 = np.quantile(ref, [0.25, 0.75])
    scale = float(q3 - q1) or float(np.std(ref)) or 1.0
    out = np.interp(s, u, c)
    hi, lo = s > u[-1], s < u[0]
    out[hi] = c[-1] + (1.0 - c[-1]) * -np.expm1(-(s[hi] - u[-1]) / scale)
    out[lo] = c[0] * np.exp(-(u[0] - s[lo]) / scale)
    return out


def blend(supervised, anomaly, weight: float, reference: tuple | None = None) -> np.ndarray:
    """Rank blend: ``(1 - weight) * pct(supervised) + weight * pct(anomaly)``, in [0, 1].

    ``reference = (supervised_ref, anomaly_ref)`` (e.g. validation scores) makes percentiles
    absolute; without it they are ranks within this batch.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    sup = np.asarray(supervised, dtype="float64").ravel()
    ano = np.asarray(anomaly, dtype="float64").ravel()
    if sup.shape != ano.shape:
        raise ValueError(f"{sup.size} supervised scores but {ano.size} anomaly scores")
    ref_s, ref_a = reference if reference is not None else (None, None)
    return (1.0 - weight) * percentile_rank(sup, ref_s) + weight * percentile_rank(ano, ref_a)


@dataclass
class RankBlender:
    """A blend fitted on validation: the chosen weight and the reference score samples."""

    weight: float
    supervised_ref: np.ndarray
    anomaly_ref: np.ndarray
    table: dict[float, float] = field(default_factory=dict)  # weight -> validation metric

    def __call__(self, supervised, anomaly) -> np.ndarray:
        return blend(supervised, anomaly, self.weight, (self.supervised_ref, self.anomaly_ref))


def choose_blend_weight(supervised_val, anomaly_val, y_val, grid=None, metric: str = "pr_auc") -> RankBlender:
    """The weight on ``grid`` (default 0, 0.05, ..., 1) with the best validation ``metric``
    (``pr_auc`` or ``roc_auc``); ties -> the smallest weight. Reference = the validation scores."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y_val).astype("int64").ravel()
    if y.min() == y.max():
        raise ValueError("choosing a blend weight needs both classes in the validation labels")
    fn = {"pr_auc": average_precision_score, "roc_auc": roc_auc_score}[metric]
    grid = np.round(np.linspace(0.0, 1.0, 21), 4) if grid is None else np.asarray(grid, dtype="float64")
    sup = np.asarray(supervised_val, dtype="float64").ravel()
    ano = np.asarray(anomaly_val, dtype="float64").ravel()
    table = {float(w): float(fn(y, blend(sup, ano, float(w), (sup, ano)))) for w in grid}
    best = max(table.values())
    weight = min(w for w, v in table.items() if v >= best - 1e-12)
    return RankBlender(weight, np.sort(sup), np.sort(ano), table)
