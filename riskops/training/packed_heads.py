"""Scoring every member of a RiskModel in one pass: their weights stacked, their maths batched.

A model of K members (riskops.training.model.FusedHead) scored member by member runs K times the
same ~40 small operations; for one transaction each costs mostly Python and dispatch overhead, so
three members cost three times one. ``PackedHeads`` stacks the members' weights along a leading
member axis and runs each operation once for all of them (batched matmuls, one attention call over
``members x rows``). Same inputs, same weights, same maths: the logits equal the member-by-member
ones up to float rounding (``tests/unit/test_model.py``).

Inference only: it holds detached copies of the weights, so ``RiskModel`` rebuilds it whenever it
is put in eval mode or loads a state, and never uses it when gradients are needed (training,
explanations).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from riskops.training.sequence_encoder import history_summary


def _stack(tensors) -> torch.Tensor:
    return torch.stack([t.detach() for t in tensors])


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, shared: bool = False) -> torch.Tensor:
    """Each member's Linear: x [K, ..., i] (or [..., i], the same for every member, when ``shared``),
    weight [K, o, i], bias [K, o] -> [K, ..., o]."""
    k = weight.shape[0]
    if shared:
        x = x.unsqueeze(0).expand(k, *x.shape)
    shape = x.shape
    out = torch.baddbmm(bias.unsqueeze(1), x.reshape(k, -1, shape[-1]), weight.transpose(1, 2))
    return out.reshape(*shape[:-1], weight.shape[1])


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the last axis with each member's affine: x [K, ..., d], weight/bias [K, d]."""
    view = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    return F.layer_norm(x, x.shape[-1:], eps=eps) * weight.view(view) + bias.view(view)


class _Periodic:
    """Stacked riskops.training.sequence_encoder.NumericEmbedding (periodic, lite, ReLU) incl. its projection."""

    def __init__(self, modules) -> None:
        self.frequencies = _stack(m.periodic.periodic.weight for m in modules)  # [K, n, f]
        self.lin_w = _stack(m.periodic.linear.weight for m in modules)
        self.lin_b = _stack(m.periodic.linear.bias for m in modules)
        self.proj_w = _stack(m.proj.weight for m in modules)
        self.proj_b = _stack(m.proj.bias for m in modules)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., n] shared by the members -> [K, ..., out]."""
        k, n, f = self.frequencies.shape
        z = 2 * math.pi * self.frequencies.view(k, *([1] * (x.dim() - 1)), n, f) * x.unsqueeze(-1)
        z = torch.relu(_linear(torch.cat([torch.cos(z), torch.sin(z)], -1), self.lin_w, self.lin_b))
        return _linear(z.flatten(-2), self.proj_w, self.proj_b)


class _SequenceEncoders:
    """Stacked riskops.training.sequence_encoder.EventSequenceEncoder (pre-norm transformer, CLS)."""

    def __init__(self, encoders) -> None:
        first = encoders[0]
        self.length, self.n_fields = first.length, first.n_fields
        self.continuous_idx, self.flag_idx = first._continuous_idx, first._flag_idx
        self.scale = first.continuous_scale
        self.fields = [_stack(e.field_embeddings[j].weight for e in encoders) for j in range(len(first.field_embeddings))]
        self.continuous = _Periodic([e.continuous for e in encoders])
        self.flags_w, self.flags_b = _stack(e.flags.weight for e in encoders), _stack(e.flags.bias for e in encoders)
        self.position = _stack(e.position.weight for e in encoders)  # [K, L, d]
        self.cls = _stack(e.cls for e in encoders)  # [K, 1, 1, d]
        self.norm = (_stack(e.norm.weight for e in encoders), _stack(e.norm.bias for e in encoders), first.norm.eps)
        self.numeric_scale = first.numeric_scale
        self.summary = (
            (_stack(e.summary.weight for e in encoders), _stack(e.summary.bias for e in encoders))
            if first.summary is not None
            else None
        )
        self.layers = []
        for i, layer in enumerate(first.encoder.layers):
            ls = [e.encoder.layers[i] for e in encoders]
            self.layers.append({
                "heads": layer.self_attn.num_heads,
                "in_w": _stack(x.self_attn.in_proj_weight for x in ls),
                "in_b": _stack(x.self_attn.in_proj_bias for x in ls),
                "out_w": _stack(x.self_attn.out_proj.weight for x in ls),
                "out_b": _stack(x.self_attn.out_proj.bias for x in ls),
                "ff1_w": _stack(x.linear1.weight for x in ls), "ff1_b": _stack(x.linear1.bias for x in ls),
                "ff2_w": _stack(x.linear2.weight for x in ls), "ff2_b": _stack(x.linear2.bias for x in ls),
                "norm1": (_stack(x.norm1.weight for x in ls), _stack(x.norm1.bias for x in ls), layer.norm1.eps),
                "norm2": (_stack(x.norm2.weight for x in ls), _stack(x.norm2.bias for x in ls), layer.norm2.eps),
            })  # fmt: skip

    def _attention(self, x: torch.Tensor, keep: torch.Tensor, p: dict) -> torch.Tensor:
        k, b, t, d = x.shape
        h = p["heads"]
        q, key, v = _linear(x, p["in_w"], p["in_b"]).chunk(3, dim=-1)

        def split(z):
            return z.reshape(k * b, t, h, d // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(q), split(key), split(v), attn_mask=keep)
        return _linear(out.transpose(1, 2).reshape(k, b, t, d), p["out_w"], p["out_b"])

    def __call__(self, flat: torch.Tensor) -> torch.Tensor:
        """flat history tokens [B, L * F] -> [K, B, d] history vectors."""
        b = flat.shape[0]
        x = flat.reshape(b, self.length, self.n_fields)
        cats = x[..., : len(self.fields)].round().long().clamp_min(0)
        emb = sum(w[:, cats[..., j].clamp_max(w.shape[1] - 1)] for j, w in enumerate(self.fields))
        emb = emb + self.continuous(x[..., self.continuous_idx] / self.scale)
        emb = emb + _linear(x[..., self.flag_idx], self.flags_w, self.flags_b, shared=True)
        emb = emb + self.position.unsqueeze(1)
        k, d = emb.shape[0], emb.shape[-1]
        seq = torch.cat([self.cls.expand(k, b, 1, d).to(emb.dtype), emb], dim=2)  # [K, B, L + 1, d]
        padding = cats[..., -1] == 0  # relation 0 = padding
        keep = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=flat.device), ~padding], dim=1)
        keep = keep.repeat(k, 1).view(k * b, 1, 1, self.length + 1)  # which keys each query may read
        for p in self.layers:  # pre-norm: x + attention(norm1(x)), then x + feed-forward(norm2(x))
            seq = seq + self._attention(_layer_norm(seq, *p["norm1"]), keep, p)
            ff = F.gelu(_linear(_layer_norm(seq, *p["norm2"]), p["ff1_w"], p["ff1_b"]))
            seq = seq + _linear(ff, p["ff2_w"], p["ff2_b"])
        cls = seq[:, :, 0]
        if self.summary is not None:
            cls = cls + _linear(history_summary(x, self.numeric_scale).to(cls.dtype), *self.summary, shared=True)
        return _layer_norm(cls, *self.norm)


class PackedHeads:
    """K FusedHeads as one: ``__call__`` gives their logits [B, K], as ``RiskModel.member_logits`` does."""

    def __init__(self, members: Sequence[torch.nn.Module]) -> None:
        first = members[0]
        self.tabular = first.config.tabular
        if first.config.numeric_embedding != "periodic":
            raise ValueError("PackedHeads packs periodic numeric embeddings only")
        self.text_w, self.text_b = _stack(m.text_proj.weight for m in members), _stack(m.text_proj.bias for m in members)
        self.numeric = _Periodic([m.numeric_proj for m in members])
        self.cats = [_stack(m.cat_embeddings[name].weight for m in members) for name in first.cat_embeddings]
        self.sequence = _SequenceEncoders([m.sequence_encoder for m in members]) if first.sequence_encoder else None
        linears = [i for i, layer in enumerate(first.mlp) if isinstance(layer, torch.nn.Linear)]
        self.mlp = [(_stack(m.mlp[i].weight for m in members), _stack(m.mlp[i].bias for m in members)) for i in linears]

    def __call__(self, text_emb, numeric, categorical, sequence=None) -> torch.Tensor:
        parts = []
        if self.tabular:
            parts += [_linear(text_emb, self.text_w, self.text_b, shared=True), self.numeric(numeric)]
            parts += [w[:, categorical[:, j]] for j, w in enumerate(self.cats)]
        if self.sequence is not None:
            if sequence is None:
                raise ValueError("this model reads behaviour sequences: pass the SEQUENCE_COLUMNS tokens")
            parts.append(self.sequence(sequence))
        x = torch.cat(parts, dim=-1)
        for w, b in self.mlp[:-1]:
            x = F.gelu(_linear(x, w, b))  # FusedHead's Linear + GELU (+ dropout, a no-op in eval)
        w, b = self.mlp[-1]
        return _linear(x, w, b).squeeze(-1).transpose(0, 1)  # [B, K]

