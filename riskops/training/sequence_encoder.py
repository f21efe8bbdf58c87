"""The network parts that read numbers and event histories (used by riskops.training.model.RiskModel).

* ``NumericEmbedding`` — each numeric feature through periodic embeddings (sin/cos of learned
  frequencies, then a shared linear layer + ReLU: "PLR-lite", Gorishniy et al., NeurIPS 2022,
  package ``rtdl-num-embeddings``), flattened and projected. An MLP on raw numbers has a hard time
  with the sharp thresholds trees find for free; periodic embeddings close most of that gap.
* ``EventSequenceEncoder`` — a transaction's history tokens (riskops.features.sequences) through a
  small transformer encoder with a CLS token:

      token_i = sum of field embeddings (payment method, channel, shipping country, category,
                relation to the scored transaction)
              + periodic embeddings of (amount, time gap, amount ratio) + linear(same-X flags)
              + position embedding (0 = newest)
      [CLS, token_0 .. token_L-1] -> TransformerEncoder (pre-norm, padding masked) -> CLS -> LayerNorm

  A transaction without history is CLS alone (padding is masked), which the encoder learns to
  treat as "no history".
"""

from __future__ import annotations

import torch
from rtdl_num_embeddings import PeriodicEmbeddings
from torch import nn

from riskops.features.sequences import RELATIONS, SEQUENCE_LENGTH, TOKEN_NUMERIC, TOKEN_VOCABS

# Token numerics that get periodic embeddings, and a fixed scale bringing each near unit range
# (log-amounts ~0..10, log-gaps ~0..16 for up to ~100 days, ratios ~-10..10); the rest are 0/1 flags.
CONTINUOUS_TOKEN_FIELDS: dict[str, float] = {"amount_log": 5.0, "gap_log": 8.0, "amount_ratio_log": 3.0}
FLAG_TOKEN_FIELDS: tuple[str, ...] = tuple(f for f in TOKEN_NUMERIC if f not in CONTINUOUS_TOKEN_FIELDS)
N_TOKEN_CATEGORICAL = len(TOKEN_VOCABS) + 1  # + relation


class NumericEmbedding(nn.Module):
    """[B, n] numbers -> [B, out_dim]: periodic embeddings per feature, flattened, projected."""

    def __init__(self, n_features: int, out_dim: int, d_embedding: int = 8, n_frequencies: int = 16) -> None:
        super().__init__()
        self.periodic = PeriodicEmbeddings(
            n_features, d_embedding, n_frequencies=n_frequencies, frequency_init_scale=0.1, lite=True
        )
        self.proj = nn.Linear(n_features * d_embedding, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.periodic(x).flatten(1))


class EventSequenceEncoder(nn.Module):
    """[B, L * F] flat history tokens (SEQUENCE_COLUMNS order) -> [B, dim] history vector."""

    def __init__(self, dim: int = 32, layers: int = 2, heads: int = 4, dropout: float = 0.1,
                 length: int = SEQUENCE_LENGTH) -> None:  # fmt: skip
        super().__init__()
        self.length = length
        self.n_fields = N_TOKEN_CATEGORICAL + len(TOKEN_NUMERIC)
        sizes = [len(v) + 1 for v in TOKEN_VOCABS.values()] + [RELATIONS + 1]
        self.field_embeddings = nn.ModuleList(nn.Embedding(s, dim) for s in sizes)
        self.register_buffer(
            "continuous_scale", torch.tensor(list(CONTINUOUS_TOKEN_FIELDS.values())), persistent=False
        )
        self.continuous = NumericEmbedding(len(CONTINUOUS_TOKEN_FIELDS), dim, d_embedding=8)
        self.flags = nn.Linear(len(FLAG_TOKEN_FIELDS), dim)
        self.position = nn.Embedding(length, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.cls, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=dropout, activation="gelu", batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        numeric_names = list(TOKEN_NUMERIC)
        self._continuous_idx = [N_TOKEN_CATEGORICAL + numeric_names.index(f) for f in CONTINUOUS_TOKEN_FIELDS]
        self._flag_idx = [N_TOKEN_CATEGORICAL + numeric_names.index(f) for f in FLAG_TOKEN_FIELDS]

    def tokens(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(token embeddings [B, L, dim], padding mask [B, L]) of flat history tokens."""
        b = flat.shape[0]
        x = flat.reshape(b, self.length, self.n_fields)
        cats = x[..., :N_TOKEN_CATEGORICAL].round().long().clamp_min(0)
        emb = sum(e(cats[..., j].clamp_max(e.num_embeddings - 1)) for j, e in enumerate(self.field_embeddings))
        cont = (x[..., self._continuous_idx] / self.continuous_scale).reshape(b * self.length, -1)
        emb = emb + self.continuous(cont).reshape(b, self.length, -1) + self.flags(x[..., self._flag_idx])
        emb = emb + self.position.weight.unsqueeze(0)
        return emb, cats[..., -1] == 0  # relation 0 = padding

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        emb, padding = self.tokens(flat)
        b = emb.shape[0]
        seq = torch.cat([self.cls.expand(b, -1, -1).to(emb.dtype), emb], dim=1)
        mask = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=padding.device), padding], dim=1)
        out = self.encoder(seq, src_key_padding_mask=mask)
        return self.norm(out[:, 0])
