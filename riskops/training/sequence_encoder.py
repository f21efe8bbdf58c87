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

  Beside the CLS readout, ``history_summary`` pools the tokens as a set: how many events, the
  masked mean / max / min of every numeric token field over all events and over the user's own
  events, and how many events share the device or IP but not the user (and the reverse). Softmax
  attention averages; it finds "larger than every earlier order", "never on this device" or "three
  refunds" only with effort, and those extremes and counts are what the hand-made behaviour
  features give the trees. A linear layer adds the summary to the CLS state before the last norm.
"""

from __future__ import annotations

import torch
from rtdl_num_embeddings import PeriodicEmbeddings
from torch import nn

from riskops.features.sequences import (
    RELATIONS,
    SAME_DEVICE_BIT,
    SAME_IP_BIT,
    SAME_USER_BIT,
    SEQUENCE_LENGTH,
    TOKEN_NUMERIC,
    TOKEN_VOCABS,
)

# Token numerics that get periodic embeddings, and a fixed scale bringing each near unit range
# (log-amounts ~0..10, log-gaps ~0..16 for up to ~100 days, ratios ~-10..10); the rest are 0/1 flags.
CONTINUOUS_TOKEN_FIELDS: dict[str, float] = {"amount_log": 5.0, "gap_log": 8.0, "amount_ratio_log": 3.0}
FLAG_TOKEN_FIELDS: tuple[str, ...] = tuple(f for f in TOKEN_NUMERIC if f not in CONTINUOUS_TOKEN_FIELDS)
N_TOKEN_CATEGORICAL = len(TOKEN_VOCABS) + 1  # + relation
# per group (every event, the user's own events): share of the sequence + mean / max / min of each numeric field
_GROUP_STATS = 1 + 3 * len(TOKEN_NUMERIC)
N_SUMMARY = 2 * _GROUP_STATS + 4  # + shares of device-not-user, ip-not-user, user-not-device, user-not-ip
_EMPTY = -1e4  # masked out of a max (or, negated, a min); never reaches the output


def token_numeric_scale() -> torch.Tensor:
    """[len(TOKEN_NUMERIC)] divisors bringing each numeric token field near unit range (flags: 1)."""
    return torch.tensor([CONTINUOUS_TOKEN_FIELDS.get(f, 1.0) for f in TOKEN_NUMERIC])


def history_summary(x: torch.Tensor, numeric_scale: torch.Tensor) -> torch.Tensor:
    """[B, N_SUMMARY] set statistics of history tokens x [B, L, F] (see the module docstring)."""
    length = x.shape[1]
    rel = x[..., N_TOKEN_CATEGORICAL - 1].round().long()
    valid = rel > 0  # relation 0 = padding
    bits = (rel - 1).clamp_min(0)
    user, device, ip = ((bits & b) > 0 for b in (SAME_USER_BIT, SAME_DEVICE_BIT, SAME_IP_BIT))
    user, device, ip = user & valid, device & valid, ip & valid
    num = x[..., N_TOKEN_CATEGORICAL:] / numeric_scale
    parts = []
    for group in (valid, user):
        g = group.unsqueeze(-1)
        n = g.sum(1).to(num.dtype)  # [B, 1]
        seen = n > 0
        high = torch.where(g, num, _EMPTY).amax(1)
        low = torch.where(g, num, -_EMPTY).amin(1)
        parts += [n / length, (num * g).sum(1) / n.clamp_min(1.0),
                  torch.where(seen, high, 0.0), torch.where(seen, low, 0.0)]  # fmt: skip
    for mask in (device & ~user, ip & ~user, user & ~device, user & ~ip):
        parts.append(mask.sum(1, keepdim=True).to(num.dtype) / length)
    return torch.cat(parts, dim=-1)


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
                 length: int = SEQUENCE_LENGTH, summary: bool = True) -> None:  # fmt: skip
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
        self.register_buffer("numeric_scale", token_numeric_scale(), persistent=False)
        self.summary = nn.Linear(N_SUMMARY, dim) if summary else None
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
        cls = self.encoder(seq, src_key_padding_mask=mask)[:, 0]
        if self.summary is not None:
            x = flat.reshape(b, self.length, self.n_fields)
            cls = cls + self.summary(history_summary(x, self.numeric_scale).to(cls.dtype))
        return self.norm(cls)
