"""The scoring bundle of the risk model (RiskScorer): model, normaliser, calibration, tokenizer.

Shared by training (riskops.training.finetune), evaluation and serving, so the inference path is kept
light: one forward of the text encoder per *unique, not yet seen* text (an LRU cache holds the
pooled text embeddings; popular products' texts repeat), then a small MLP on every row.

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

import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from riskops.features.contract import NUMERIC_FEATURES, TEXT_COLUMN, ColumnFrame
from riskops.features.sequences import SEQUENCE_COLUMNS
from riskops.training.model import (
    CONFIG_FILE,
    FORMAT_VERSION,
    SMALL_FRAME_ROWS,
    ModelConfig,
    RiskModel,
    autocast,
    categorical_indices,
    resolve_device,
    sequence_matrix,
)
from riskops.training.scaling import Calibration, Normalizer, fit_temperature

log = logging.getLogger(__name__)

TEXT_ATTRIBUTION = "text"  # the explain() key of the text's attribution
HISTORY_ATTRIBUTION = "history"  # the explain() key of the behaviour sequence's attribution
WEIGHTS_FILE = "model.safetensors"
NORMALIZER_FILE = "normalizer.json"
CALIBRATION_FILE = "calibration.json"
TOKENIZER_DIR = "tokenizer"
WARM_TEXTS_FILE = "warm_texts.json"  # optional: the training set's most frequent texts, pre-encoded on load
# Texts a model pre-encodes when served: every distinct text of its training + validation data up to
# this many (the default LRU cache size). With the top 2,000 only, 7.5% of the next 6,000 generated
# orders (seed 7, 20,000 rows of history, 2,608 distinct texts) missed the cache; with all, 2.0%.
WARM_TEXTS_LIMIT = 20_000


# --------------------------------------------------------------------------- normaliser
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
    sequence: torch.Tensor | None = None  # [n, len(SEQUENCE_COLUMNS)] float32 history tokens, if read

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, rows: Sequence[int]) -> ModelInputs:
        """The inputs of `rows` (positions), in that order."""
        idx = np.asarray(rows, dtype=np.int64)
        t = torch.from_numpy(idx)
        seq = None if self.sequence is None else self.sequence[t]
        return ModelInputs(self.numeric[t], self.categorical[t], self.texts[idx], seq)


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
        """The explain() keys: numeric features, categorical features, 'text', then 'history' (the
        behaviour sequence as one input) for a model that reads it."""
        history = [HISTORY_ATTRIBUTION] if self.config.sequence else []
        return [*self.config.numeric_features, *self.config.categorical_vocabs, TEXT_ATTRIBUTION, *history]

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
            sequence=torch.from_numpy(sequence_matrix(frame)) if self.config.sequence else None,
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
            seq = None if x.sequence is None else x.sequence[sl].to(self.device)
            with autocast(self.device):
                z = self.model.head(text_emb, numeric[sl].to(self.device), categorical[sl].to(self.device), seq)
            out.append(z.float().cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    @torch.inference_mode()
    def embeddings(self, frame: pd.DataFrame | ColumnFrame | ModelInputs, batch_size: int = 256) -> np.ndarray:
        """The fused representation of each row (each member's last hidden layer, side by side),
        float32 [n, members * hidden[-1]]: what the benchmark's "LightGBM on the model's embedding" reads."""
        x = self.inputs(frame)
        if self.model.training:
            self.model.eval()
        out = []
        for start in range(0, len(x), batch_size):
            sl = slice(start, start + batch_size)
            seq = None if x.sequence is None else x.sequence[sl].to(self.device)
            z = self.model.fused(
                self._text_batch(x.texts[sl]), x.numeric[sl].to(self.device), x.categorical[sl].to(self.device), seq
            )
            out.append(z.float().cpu().numpy())
        width = self.config.hidden[-1] * self.config.members
        return np.concatenate(out) if out else np.zeros((0, width), np.float32)

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
        dimensions for the text, each categorical and the history. Baselines: numeric 0 (the training
        median after normalisation), each categorical the mean embedding of its known values,
        the text the mean training text embedding, the history the encoded empty history (a
        first-time customer). Completeness: the attributions sum to
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
        base_text = self.model.text_baseline.float()
        alphas = ((torch.arange(steps, dtype=torch.float32) + 0.5) / steps).to(self.device)
        rows: list[np.ndarray] = []
        for start in range(0, len(x), batch_size):
            sl = slice(start, start + batch_size)
            with torch.inference_mode():
                text_emb = self._text_batch(texts[sl])
            text_emb = text_emb.clone()  # out of inference mode: autograd may read it
            seq = None if x.sequence is None else x.sequence[sl].to(self.device)
            # the head is the members' mean, so its attributions are the mean of theirs
            parts = [
                self._member_attributions(m, base_text, text_emb, numeric[sl].to(self.device),
                                          categorical[sl].to(self.device), seq, alphas)
                for m in self.model.members
            ]  # fmt: skip
            rows.append(np.mean(parts, axis=0))
        attr = np.concatenate(rows) / self.calibration.temperature
        assert attr.shape[1] == len(names) == len(cfg.numeric_features) + len(cfg.categorical_vocabs) + 1 + int(
            cfg.sequence
        )
        return [dict(zip(names, map(float, r), strict=True)) for r in attr]

    def _member_attributions(self, member, base_text, x_text, x_num, categorical, sequence, alphas) -> np.ndarray:
        """[rows, features] integrated-gradients attributions of one FusedHead (see ``explain``), in logits."""
        steps = len(alphas)
        with torch.no_grad():
            base_cats = [emb.weight[1:].mean(0) for emb in member.cat_embeddings.values()]
            x_cats = [v.clone() for v in member.categorical_vectors(categorical)]
        d_text, d_num = x_text - base_text, x_num
        d_cats = [x - b for x, b in zip(x_cats, base_cats, strict=True)]
        b = x_num.shape[0]
        p_cats = [_ig_path(base, d, alphas) for base, d in zip(base_cats, d_cats, strict=True)]
        inputs = [_ig_path(base_text, d_text, alphas), _ig_path(torch.zeros_like(d_num[0]), d_num, alphas), *p_cats]
        d_hist = p_hist = None
        if self.config.sequence:
            with torch.no_grad():
                empty = torch.zeros((1, len(SEQUENCE_COLUMNS)), device=self.device)
                base_hist = member.history_vector(empty)[0].float()
                d_hist = member.history_vector(sequence).float() - base_hist
            p_hist = _ig_path(base_hist, d_hist, alphas)
            inputs.append(p_hist)
        with torch.enable_grad():
            z = member.head_from_vectors(inputs[0], inputs[1], p_cats, p_hist)
            grads = torch.autograd.grad(z.sum(), inputs, allow_unused=True)  # unused: a history-only model
        g = [
            (torch.zeros_like(p) if gr is None else gr).reshape(steps, b, -1).mean(0)
            for p, gr in zip(inputs, grads, strict=True)
        ]
        n_cats = len(d_cats)
        parts = [
            d_num * g[1],
            *[(d * gc).sum(-1, keepdim=True) for d, gc in zip(d_cats, g[2 : 2 + n_cats], strict=True)],
            (d_text * g[0]).sum(-1, keepdim=True),
        ]
        if d_hist is not None:
            parts.append((d_hist * g[2 + n_cats]).sum(-1, keepdim=True))
        return torch.cat(parts, dim=-1).detach().float().cpu().numpy()
