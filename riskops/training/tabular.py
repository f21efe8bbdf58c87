"""FT-Transformer for tabular data without text (e.g. the ULB credit-card data).

The Feature-Tokenizer Transformer (Gorishniy et al., "Revisiting Deep Learning Models for Tabular
Data", 2021) turns every feature into a token and lets self-attention mix them:

* numeric feature j:       token = x_j * W_j + b_j          (a per-feature linear embedding; or,
                                                             with ``numeric_embedding``, periodic
                                                             or piecewise-linear embeddings, below)
* categorical feature j:   token = E_j[category] + b_j      (one embedding table per feature;
                                                             index 0 = unseen / rare category)
* a learned [CLS] token is prepended; the encoder is a stack of BERT layers
  (``transformers.models.bert.BertEncoder`` built from a small ``BertConfig`` — the same
  transformer family as the text model), and the CLS output goes through LayerNorm -> ReLU ->
  Linear to one fraud logit.

Numeric embeddings (Gorishniy et al., "On Embeddings for Numerical Features in Tabular Deep
Learning", NeurIPS 2022; package ``rtdl-num-embeddings``) let a token bend with its value, so the
model can learn the sharp thresholds trees find for free:

* ``"periodic"``: PeriodicEmbeddings(lite=False) — sin/cos of k learned frequencies of x_j, then a
  per-feature linear layer and ReLU ("PLR"); ``frequency_init_scale`` is the frequencies' initial
  spread (the paper's sigma, its most important setting).
* ``"ple"``: PiecewiseLinearEmbeddings(version "B") — x_j encoded against bin edges (quantiles of
  the transformed training values, ``n_bins`` at most) plus a linear term; the bin edges are part
  of the preprocessing state and are saved with the model.

Preprocessing is fitted on the training rows only: numerics go through a quantile transform to a
standard normal (robust to the heavy tails of money amounts; NaN -> 0 = the median), categoricals
get a vocabulary of the training values seen at least ``min_category_count`` times.

Training: AdamW, class-weighted BCE (or focal loss), early stopping on validation PR-AUC (average
precision). The validation rows must come from the END of the training period (see
riskops.data.datasets.train_val_split); the test period is never seen here. With
``legit_per_epoch`` set, every epoch trains on all frauds (``fraud_per_epoch``: a fresh sample of
at most that many) plus a fresh random sample of that many legitimate rows — over the epochs the model still sees most legitimate rows, at a fraction of
the cost per epoch. Seeds are fixed; on CPU the result is reproducible for a given thread count.

``FittedTabularModel.save(dir)`` writes ``model.safetensors`` (weights) + ``tabular_model.json``
(config, columns, preprocessing state, training history); ``load(dir)`` rebuilds it.

One module of ~550 lines on purpose: the config, the preprocessor (with its embedding bins), the
network and the fit loop share one saved state (``tabular_model.json`` + weights), and ``load``
rebuilds all of them together; the per-epoch sample budget lives in riskops.training.budget.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

WEIGHTS_NAME = "model.safetensors"
META_NAME = "tabular_model.json"
FORMAT_VERSION = 1
UNKNOWN = 0  # category index for unseen / rare values
NUMERIC_TRANSFORMS = ("quantile", "robust_log")
NUMERIC_EMBEDDINGS = ("linear", "periodic", "ple")


@dataclass
class FTTransformerConfig:
    d_token: int = 32
    n_layers: int = 2
    n_heads: int = 4
    ffn_factor: float = 4.0 / 3.0  # intermediate size = d_token * ffn_factor (FT-Transformer's 4/3)
    attention_dropout: float = 0.0  # > 0 forces the slow "math" attention path on CPU
    hidden_dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 512
    max_epochs: int = 30
    patience: int = 5  # epochs without a better validation PR-AUC before stopping
    loss: str = "bce"  # "bce" (class-weighted) or "focal"
    pos_weight: float | str | None = "sqrt"  # number, "sqrt" (sqrt(neg/pos)), "balanced" (neg/pos) or None
    focal_gamma: float = 2.0
    legit_per_epoch: int | None = None  # None: all legitimate rows every epoch
    fraud_per_epoch: int | None = None  # None: all frauds every epoch (a cap for fraud-heavy data)
    n_quantiles: int = 1000
    # "quantile": quantile transform to a standard normal (the FT-Transformer paper's choice);
    # "robust_log": sign(r) * log1p(|r|), r = (x - median) / IQR — keeps the order and size of the
    # far tails, where a quantile map squeezes the rarest 0.1% of values into 0.6 standard units
    numeric_transform: str = "quantile"
    numeric_embedding: str = "linear"  # "linear" | "periodic" | "ple" (see the module docstring)
    n_frequencies: int = 16  # periodic: frequencies per feature
    frequency_init_scale: float = 0.1  # periodic: sigma of the initial frequencies (inputs ~ N(0, 1))
    n_bins: int = 32  # ple: bins per feature at most (quantiles of the training rows)
    min_category_count: int = 5
    max_train_seconds: float | None = None  # stop after the epoch that crosses this budget
    seed: int = 0
    num_threads: int | None = 1  # on a shared, busy CPU one thread is ~3x faster than two (no spinning)
    progress: bool = True

    def __post_init__(self):
        if self.d_token % self.n_heads:
            raise ValueError(f"d_token ({self.d_token}) must be a multiple of n_heads ({self.n_heads})")
        if self.numeric_transform not in NUMERIC_TRANSFORMS:
            raise ValueError(
                f"numeric_transform must be one of {NUMERIC_TRANSFORMS}, got {self.numeric_transform!r}"
            )
        if self.numeric_embedding not in NUMERIC_EMBEDDINGS:
            raise ValueError(
                f"numeric_embedding must be one of {NUMERIC_EMBEDDINGS}, got {self.numeric_embedding!r}"
            )
        if self.loss not in ("bce", "focal"):
            raise ValueError(f"loss must be 'bce' or 'focal', got {self.loss!r}")


# --------------------------------------------------------------------------------------------
# Preprocessing (fitted on training rows only)
# --------------------------------------------------------------------------------------------


def robust_center_scale(col: np.ndarray) -> tuple[float, float]:
    """(median, IQR) of the finite values; the scale falls back to the std, then 1."""
    col = col[np.isfinite(col)]
    if not col.size:
        return 0.0, 1.0
    q1, med, q3 = np.quantile(col, [0.25, 0.5, 0.75])
    return float(med), float(q3 - q1) or float(np.std(col)) or 1.0


def signed_log_scaled(x: np.ndarray, centers, scales) -> np.ndarray:
    """sign(r) * log1p(|r|), r = (x - center) / scale: extreme values stay extreme but bounded; NaN -> 0."""
    r = (x - np.asarray(centers)) / np.asarray(scales)
    return np.nan_to_num(np.sign(r) * np.log1p(np.abs(r)), nan=0.0, posinf=10.0, neginf=-10.0)


@dataclass
class TabularPreprocessor:
    numeric: list[str]
    categorical: list[str]
    quantiles: list[list[float]] = field(default_factory=list)  # per numeric feature, ascending
    vocabs: dict[str, list[str]] = field(default_factory=dict)  # per categorical: index 1.. -> value
    numeric_transform: str = "quantile"
    medians: list[float] = field(default_factory=list)  # robust_log: per numeric feature
    scales: list[float] = field(default_factory=list)  # robust_log: IQR (std, then 1 if 0)
    bins: list[list[float]] = field(default_factory=list)  # ple: per numeric feature, ascending edges

    @classmethod
    def fit(
        cls, X: pd.DataFrame, numeric: list[str], categorical: list[str], n_quantiles: int = 1000,
        min_category_count: int = 5, numeric_transform: str = "quantile",
    ) -> TabularPreprocessor:  # fmt: skip
        pre = cls(list(numeric), list(categorical), numeric_transform=numeric_transform)
        levels = np.linspace(0.0, 1.0, max(2, min(n_quantiles, len(X))))
        for c in pre.numeric:
            col = X[c].to_numpy(dtype="float64")
            col = col[np.isfinite(col)]
            if numeric_transform == "robust_log":
                med, scale = robust_center_scale(col)
                pre.medians.append(med)
                pre.scales.append(scale)
                continue
            q = np.quantile(col, levels) if col.size else np.zeros_like(levels)
            pre.quantiles.append([float(v) for v in q])
        for c in pre.categorical:
            counts = X[c].astype(str).value_counts()
            kept = sorted(counts[counts >= min_category_count].index.tolist())
            pre.vocabs[c] = kept
        return pre

    @property
    def cardinalities(self) -> list[int]:
        return [len(self.vocabs[c]) + 1 for c in self.categorical]  # +1: the unknown slot

    def transform_numeric(self, X: pd.DataFrame) -> np.ndarray:
        from scipy.special import ndtri

        out = np.zeros((len(X), len(self.numeric)), dtype="float32")
        if self.numeric_transform == "robust_log":
            out[:] = signed_log_scaled(X[self.numeric].to_numpy(dtype="float64"), self.medians, self.scales)
            return out
        for j, c in enumerate(self.numeric):
            x = X[c].to_numpy(dtype="float64")
            q = np.asarray(self.quantiles[j])
            ref = np.linspace(0.0, 1.0, q.size)
            # average of the forward and backward interpolation: ties in the quantiles (many equal
            # values, e.g. Amount == 0) map to the middle of their probability range, as sklearn does
            u = 0.5 * (np.interp(x, q, ref) - np.interp(-x, -q[::-1], -ref[::-1]))
            u = np.clip(u, 1e-4, 1.0 - 1e-4)
            z = ndtri(u)
            z[~np.isfinite(x)] = 0.0
            out[:, j] = z
        return out

    def transform_categorical(self, X: pd.DataFrame) -> np.ndarray:
        out = np.zeros((len(X), len(self.categorical)), dtype="int64")
        for j, c in enumerate(self.categorical):
            index = {v: i + 1 for i, v in enumerate(self.vocabs[c])}
            out[:, j] = X[c].astype(str).map(index).fillna(UNKNOWN).to_numpy(dtype="int64")
        return out

    def transform(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        missing = [c for c in (*self.numeric, *self.categorical) if c not in X.columns]
        if missing:
            raise ValueError(f"input is missing column(s) {missing}")
        return self.transform_numeric(X), self.transform_categorical(X)

    def fit_bins(self, x_num: np.ndarray, n_bins: int) -> None:
        """Bin edges for piecewise-linear embeddings: quantiles of the *transformed* training numerics."""
        from rtdl_num_embeddings import compute_bins

        self.bins = []
        for j in range(x_num.shape[1]):
            col = torch.from_numpy(np.ascontiguousarray(x_num[:, j : j + 1], dtype="float32"))
            if len(col) < 3 or bool((col == col[0]).all()):
                self.bins.append([-1.0, 1.0])  # constant column: one bin, the embedding is linear
                continue
            edges = compute_bins(col, n_bins=max(2, min(n_bins, len(col) - 1)))[0]
            self.bins.append([float(v) for v in edges])

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def _bert_config(cfg: FTTransformerConfig, n_tokens: int):
    from transformers import BertConfig

    bert = BertConfig(
        vocab_size=1,  # unused: tokens come from the feature tokenizer, not a vocabulary
        hidden_size=cfg.d_token,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        intermediate_size=max(1, int(round(cfg.d_token * cfg.ffn_factor))),
        hidden_act="gelu",
        hidden_dropout_prob=cfg.hidden_dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
        max_position_embeddings=max(8, n_tokens),
    )
    bert._attn_implementation = "sdpa"
    return bert


def numeric_embedding(n_numeric: int, cfg: FTTransformerConfig, bins: list[list[float]] | None) -> nn.Module:
    """The rtdl module that turns [B, n] numbers into [B, n, d_token] tokens (periodic or ple)."""
    from rtdl_num_embeddings import PeriodicEmbeddings, PiecewiseLinearEmbeddings

    if cfg.numeric_embedding == "periodic":
        return PeriodicEmbeddings(n_numeric, cfg.d_token, n_frequencies=cfg.n_frequencies,
                                  frequency_init_scale=cfg.frequency_init_scale, lite=False)  # fmt: skip
    if not bins or len(bins) != n_numeric:
        raise ValueError(
            "numeric_embedding='ple' needs the preprocessor's bins (TabularPreprocessor.fit_bins)"
        )
    with warnings.catch_warnings():  # a single-bin (constant) feature warns; it is a linear token, on purpose
        warnings.simplefilter("ignore", UserWarning)
        edges = [torch.tensor(b, dtype=torch.float32) for b in bins]
        return PiecewiseLinearEmbeddings(edges, cfg.d_token, activation=False, version="B")


class FTTransformer(nn.Module):
    """Feature tokenizer + [CLS] + BertEncoder + head. ``forward(x_num, x_cat) -> logits (B,)``."""

    def __init__(self, n_numeric: int, cardinalities: list[int], cfg: FTTransformerConfig,
                 bins: list[list[float]] | None = None):  # fmt: skip
        super().__init__()
        from transformers.models.bert.modeling_bert import BertEncoder

        d = cfg.d_token
        bound = 1.0 / math.sqrt(d)
        self.n_numeric = n_numeric
        self.num_embedding = None
        if n_numeric and cfg.numeric_embedding != "linear":
            self.num_embedding = numeric_embedding(n_numeric, cfg, bins)
        else:  # parameter names kept from format 1's linear tokens, so older model files load
            self.num_weight = nn.Parameter(torch.empty(n_numeric, d).uniform_(-bound, bound))
            self.num_bias = nn.Parameter(torch.empty(n_numeric, d).uniform_(-bound, bound))
        self.n_categorical = len(cardinalities)
        if cardinalities:
            offsets = torch.tensor([0, *np.cumsum(cardinalities)[:-1].tolist()], dtype=torch.long)
            self.register_buffer("cat_offsets", offsets, persistent=False)
            self.cat_embedding = nn.Embedding(int(sum(cardinalities)), d)
            nn.init.uniform_(self.cat_embedding.weight, -bound, bound)
            self.cat_bias = nn.Parameter(torch.empty(len(cardinalities), d).uniform_(-bound, bound))
        self.cls = nn.Parameter(torch.empty(1, 1, d).uniform_(-bound, bound))
        self.input_norm = nn.LayerNorm(d)  # BERT layers are post-norm: give them normalised tokens
        self.input_dropout = nn.Dropout(cfg.hidden_dropout)
        self.encoder = BertEncoder(_bert_config(cfg, 1 + n_numeric + len(cardinalities)))
        self.head = nn.Sequential(nn.LayerNorm(d), nn.ReLU(), nn.Linear(d, 1))

    def tokens(self, x_num: torch.Tensor, x_cat: torch.Tensor | None) -> torch.Tensor:
        parts = [self.cls.expand(x_num.shape[0], -1, -1)]
        if self.num_embedding is not None:
            parts.append(self.num_embedding(x_num))
        elif self.n_numeric:
            parts.append(x_num.unsqueeze(-1) * self.num_weight + self.num_bias)
        if self.n_categorical:
            parts.append(self.cat_embedding(x_cat + self.cat_offsets) + self.cat_bias)
        return torch.cat(parts, dim=1)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor | None = None) -> torch.Tensor:
        h = self.input_dropout(self.input_norm(self.tokens(x_num, x_cat)))
        h = self.encoder(h).last_hidden_state
        return self.head(h[:, 0]).squeeze(-1)


# --------------------------------------------------------------------------------------------
# Fitted model
# --------------------------------------------------------------------------------------------


class FittedTabularModel:
    name = "ft_transformer"

    def __init__(self, model: FTTransformer, pre: TabularPreprocessor, config: FTTransformerConfig,
                 history: list[dict] | None = None, info: dict | None = None):  # fmt: skip
        self.model = model
        self.pre = pre
        self.config = config
        self.history = history or []
        self.info = info or {}

    @property
    def features(self) -> list[str]:
        return [*self.pre.numeric, *self.pre.categorical]

    def _frame(self, X) -> pd.DataFrame:
        if isinstance(X, pd.DataFrame):
            return X
        arr = np.asarray(X)
        if self.pre.categorical or arr.ndim != 2 or arr.shape[1] != len(self.pre.numeric):
            raise ValueError(
                "pass a DataFrame with the training columns (arrays only for numeric-only models)"
            )
        return pd.DataFrame(arr, columns=self.pre.numeric)

    @torch.no_grad()
    def predict_logits(self, X, batch_size: int = 8192) -> np.ndarray:
        x_num, x_cat = self.pre.transform(self._frame(X))
        return _predict(self.model, x_num, x_cat, batch_size)

    def predict_proba(self, X, batch_size: int = 8192) -> np.ndarray:
        """P(fraud) per row, as trained (class weights / legit subsampling shift it: calibrate on val)."""
        z = self.predict_logits(X, batch_size)
        return 1.0 / (1.0 + np.exp(-z))

    def predict_scores(self, X) -> np.ndarray:  # the baselines' interface
        return self.predict_proba(X)

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(d / WEIGHTS_NAME))
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": "ft_transformer",
            "config": asdict(self.config),
            "preprocessor": self.pre.to_dict(),
            "history": self.history,
            "info": self.info,
        }
        (d / META_NAME).write_text(json.dumps(meta, indent=1))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> FittedTabularModel:
        from safetensors.torch import load_file

        d = Path(directory)
        meta = json.loads((d / META_NAME).read_text())
        if meta.get("format_version") != FORMAT_VERSION or meta.get("kind") != "ft_transformer":
            raise ValueError(f"{d / META_NAME} is not a riskops FT-Transformer (format {FORMAT_VERSION})")
        config = FTTransformerConfig(**meta["config"])
        pre = TabularPreprocessor(**meta["preprocessor"])
        model = FTTransformer(len(pre.numeric), pre.cardinalities, config, pre.bins)
        model.load_state_dict(load_file(str(d / WEIGHTS_NAME)))
        model.eval()
        return cls(model, pre, config, meta.get("history"), meta.get("info"))


def load(directory: str | Path) -> FittedTabularModel:
    return FittedTabularModel.load(directory)


@torch.no_grad()
def _predict(model: FTTransformer, x_num: np.ndarray, x_cat: np.ndarray, batch_size: int) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(x_num), batch_size):
        xn = torch.from_numpy(x_num[i : i + batch_size])
        xc = torch.from_numpy(x_cat[i : i + batch_size]) if x_cat.shape[1] else None
        out.append(model(xn, xc).float().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype="float32")


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _split_columns(X: pd.DataFrame, numeric, categorical) -> tuple[list[str], list[str]]:
    if numeric is None and categorical is None:
        numeric = [
            c
            for c in X.columns
            if pd.api.types.is_numeric_dtype(X[c]) and not pd.api.types.is_bool_dtype(X[c])
        ]
        categorical = [c for c in X.columns if c not in numeric]
    return list(numeric or []), list(categorical or [])


def _pos_weight(cfg: FTTransformerConfig, n_pos: int, n_neg: int) -> float:
    pw = cfg.pos_weight
    if pw is None:
        return 1.0
    if pw == "sqrt":
        return math.sqrt(n_neg / max(n_pos, 1))
    if pw == "balanced":
        return n_neg / max(n_pos, 1)
    return float(pw)


def _loss(logits: torch.Tensor, y: torch.Tensor, cfg: FTTransformerConfig, pos_weight: float) -> torch.Tensor:
    w = torch.where(y > 0.5, torch.full_like(y, pos_weight), torch.ones_like(y))
    if cfg.loss == "bce":
        per_row = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    else:
        p = torch.sigmoid(logits)
        p_t = torch.where(y > 0.5, p, 1 - p)
        ce = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
        per_row = (1 - p_t).pow(cfg.focal_gamma) * ce
    return (w * per_row).sum() / w.sum()


def _average_precision(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    if y.min() == y.max():
        return float("nan")
    return float(average_precision_score(y, s))


def fit_ft_transformer(
    X_train: pd.DataFrame,
    y_train,
    X_val: pd.DataFrame,
    y_val,
    config: FTTransformerConfig | None = None,
    numeric: list[str] | None = None,
    categorical: list[str] | None = None,
) -> FittedTabularModel:
    """Train an FT-Transformer; keep the epoch with the best validation PR-AUC.

    ``numeric`` / ``categorical`` name the columns (default: number columns are numeric, the rest
    categorical). ``X_val`` must be later in time than ``X_train`` and earlier than any test data.

    One loop over epochs (sample, train, validate, keep the best), kept whole (over 80 lines) so
    that the early-stopping and time-budget rules read in one place.
    """
    from tqdm.auto import tqdm

    cfg = config or FTTransformerConfig()
    if not isinstance(X_train, pd.DataFrame):
        X_train = pd.DataFrame(np.asarray(X_train)).rename(columns=str)
        X_val = pd.DataFrame(np.asarray(X_val)).rename(columns=str)
    numeric, categorical = _split_columns(X_train, numeric, categorical)
    if not numeric and not categorical:
        raise ValueError("no feature columns to train on")
    y_tr = np.asarray(y_train).astype("float32").ravel()
    y_va = np.asarray(y_val).astype("int64").ravel()
    if len(y_tr) != len(X_train) or len(y_va) != len(X_val):
        raise ValueError("labels and rows differ in length")
    n_pos, n_neg = int(y_tr.sum()), int(len(y_tr) - y_tr.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("training labels need both classes")

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    prev_threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        pre = TabularPreprocessor.fit(
            X_train, numeric, categorical, cfg.n_quantiles, cfg.min_category_count, cfg.numeric_transform
        )
        xn_tr, xc_tr = pre.transform(X_train)
        xn_va, xc_va = pre.transform(X_val)
        if cfg.numeric_embedding == "ple" and numeric:
            pre.fit_bins(xn_tr, cfg.n_bins)
        model = FTTransformer(len(numeric), pre.cardinalities, cfg, pre.bins)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        pos_idx, neg_idx = np.flatnonzero(y_tr > 0.5), np.flatnonzero(y_tr <= 0.5)
        n_neg_epoch = n_neg if cfg.legit_per_epoch is None else min(n_neg, int(cfg.legit_per_epoch))
        n_pos_epoch = n_pos if cfg.fraud_per_epoch is None else max(1, min(n_pos, int(cfg.fraud_per_epoch)))
        pos_weight = _pos_weight(cfg, n_pos_epoch, n_neg_epoch)

        best_ap, best_epoch, best_state, bad = -1.0, -1, None, 0
        history: list[dict] = []
        t0 = time.perf_counter()
        for epoch in range(cfg.max_epochs):
            model.train()
            negs = neg_idx if n_neg_epoch == n_neg else rng.choice(neg_idx, n_neg_epoch, replace=False)
            poss = pos_idx if n_pos_epoch == n_pos else rng.choice(pos_idx, n_pos_epoch, replace=False)
            idx = rng.permutation(np.concatenate([poss, negs]))
            total, steps = 0.0, 0
            bar = tqdm(range(0, len(idx), cfg.batch_size), desc=f"ft-transformer epoch {epoch + 1}",
                       leave=False, disable=not cfg.progress, mininterval=2.0)  # fmt: skip
            for i in bar:
                b = idx[i : i + cfg.batch_size]
                xn = torch.from_numpy(xn_tr[b])
                xc = torch.from_numpy(xc_tr[b]) if categorical else None
                loss = _loss(model(xn, xc), torch.from_numpy(y_tr[b]), cfg, pos_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                steps += 1
            val_ap = _average_precision(y_va, _predict(model, xn_va, xc_va, 8192))
            elapsed = time.perf_counter() - t0
            history.append({"epoch": epoch + 1, "train_loss": total / max(steps, 1), "val_pr_auc": val_ap,
                            "seconds": round(elapsed, 1)})  # fmt: skip
            if cfg.progress:
                tqdm.write(f"epoch {epoch + 1}: loss {total / max(steps, 1):.4f}  val PR-AUC {val_ap:.4f}  "
                           f"({elapsed:.0f}s)")  # fmt: skip
            score = -math.inf if math.isnan(val_ap) else val_ap
            if score > best_ap:
                best_ap, best_epoch, bad = score, epoch + 1, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
            if bad >= cfg.patience:
                break
            if cfg.max_train_seconds is not None and elapsed >= cfg.max_train_seconds:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        info = {
            "best_epoch": best_epoch,
            "best_val_pr_auc": best_ap,
            "epochs_run": len(history),
            "train_rows": int(len(y_tr)),
            "train_frauds": n_pos,
            "frauds_per_epoch": n_pos_epoch,
            "legit_rows_per_epoch": n_neg_epoch,
            "pos_weight": pos_weight,
            "train_seconds": round(time.perf_counter() - t0, 2),
            "parameters": int(sum(p.numel() for p in model.parameters())),
        }
        return FittedTabularModel(model, pre, cfg, history, info)
    finally:
        torch.set_num_threads(prev_threads)
