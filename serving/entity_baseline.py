"""How a frozen online snapshot (baseline) and this process's live window state combine.

The rules (serving/entity_state.py says why there are two parts): counts and sums add up, a
baseline's counts and sums aging as the newest event moves past the snapshot's time
(`aged_baseline_sum`); distinct counts take the larger of the two (the overlap is unknown); means,
standard deviations and rates are pooled, weighted by event counts; the last-event time is the
latest. `combine` is generated code per entity (`COMBINE_SOURCE[entity]` shows it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from riskops.features.aggregates import (
    ENTITIES,
    EXPRESSION_NAMES,
    WINDOW_SECONDS,
    EntityWindowState,
    compile_function,
    expression,
    feature_expressions,
    window_local,
)
from riskops.features.contract import ENTITY_FEATURE_DEFAULTS, ENTITY_FEATURES, snapshot_time_key

US = 1_000_000


def _parse(entity: str) -> list[tuple[str, str, str | None]]:
    """(feature, kind, window) per feature of `entity`."""
    out = []
    prefix = entity + "_"
    for name in ENTITY_FEATURES[entity]:
        rest = name[len(prefix) :]
        if rest == "last_event_epoch":
            out.append((name, "last", None))
            continue
        stem, _, w = rest.rpartition("_")
        if stem in ("txn_count", "amount_sum"):
            kind = "add"
        elif stem.startswith("distinct_"):
            kind = "max"
        elif stem == "amount_mean":
            kind = "mean"
        elif stem == "amount_std":
            kind = "std"
        elif stem == "refund_rate":
            kind = "rate"
        else:  # pragma: no cover - riskops.features.aggregates rejects unknown features first
            raise ValueError(f"no combine rule for {name}")
        out.append((name, kind, w))
    return out


_SPECS = {e: _parse(e) for e in ENTITIES}
# For each count/sum feature, the same quantity over the shorter windows, shortest first, as
# (feature, seconds): e.g. user_txn_count_7d -> [(user_txn_count_1h, 3600), (user_txn_count_24h, 86400)].
_NESTED = {
    name: sorted(
        (
            (other, WINDOW_SECONDS[ow])
            for other, ok, ow in _SPECS[e]
            if ok == "add"
            and other.rpartition("_")[0] == name.rpartition("_")[0]
            and WINDOW_SECONDS[ow] < WINDOW_SECONDS[w]
        ),
        key=lambda t: t[1],
    )
    for e in ENTITIES
    for name, kind, w in _SPECS[e]
    if kind == "add"
}
# ...and the shells `aged_baseline_sum` walks for it: those windows, then its own.
_SHELLS = {
    e: {
        name: tuple((n, float(s)) for n, s in [*_NESTED[name], (name, WINDOW_SECONDS[w])])
        for name, kind, w in _SPECS[e]
        if kind == "add"
    }
    for e in ENTITIES
}
# The count feature used to weigh a baseline's mean/std/rate: the longest txn_count window known.
_BASE_WEIGHT = {
    e: max(
        (f for f, k, w in _SPECS[e] if k == "add" and "_txn_count_" in f),
        key=lambda f: WINDOW_SECONDS[f.rsplit("_", 1)[1]],
    )
    for e in ENTITIES
}


_NUMBER = (int, float)  # a tuple: `int | float` would build a union object on every call


def _finite(v: Any) -> bool:
    return isinstance(v, _NUMBER) and math.isfinite(v)


def baseline_share(baseline_t_us: int | None, anchor_us: int, window_s: float) -> float:
    """Share of a snapshot's window still inside the window at `anchor_us` (linear ageing, see module doc)."""
    if baseline_t_us is None:
        return 1.0
    return min(1.0, max(0.0, 1.0 - (anchor_us - baseline_t_us) / (window_s * US)))


def aged_baseline_sum(
    name: str, baseline: Mapping[str, float], baseline_t_us: int | None, anchor_us: int, window_s: float
) -> float:
    """How much of the baseline's count/sum `name` is still inside its window at `anchor_us`.

    The shorter windows of the same quantity split the window into shells: the last hour before
    the snapshot, the rest of its last day, the rest of its week. Events of a shell are taken as
    spread evenly across it, so a shell ages linearly, and only once the window's start has
    reached it: a week's count keeps its last day in full for six days. Bursty entities (a
    user's events cluster before the snapshot) keep their recent events instead of losing a
    fixed share per hour. See `test_served_entity_features_stay_close_to_the_exact_offline_ones`.
    """
    total = baseline.get(name)
    if not _finite(total):
        return 0.0
    if baseline_t_us is None:
        return float(total)
    elapsed = (anchor_us - baseline_t_us) / US
    if elapsed <= 0:
        return float(total)
    kept, inner_value, inner_s = 0.0, 0.0, 0.0
    for shell_name, shell_s in [*_NESTED.get(name, []), (name, window_s)]:
        v = baseline.get(shell_name)
        value = float(v) if _finite(v) else inner_value
        value = max(value, inner_value)  # nested windows never hold less than the shorter ones
        # the window's start has moved `elapsed` into the past window; this shell spans
        # [window_s - shell_s, window_s - inner_s] measured back from that start
        share = (window_s - inner_s - elapsed) / (shell_s - inner_s)
        kept += (value - inner_value) * min(1.0, max(0.0, share))
        inner_value, inner_s = value, shell_s
    return kept


def holds_only_defaults(entity: str, baseline: Mapping[str, Any]) -> bool:
    """True when every feature of the snapshot is at its default (NaN matching NaN).

    The online store answers so for an entity it has never seen. `combine` of such a baseline
    with any live state is the live state (counts, sums and distinct counts add 0, the means
    have no weight), and without one it is the defaults: the tracker keeps no baseline for it and
    skips the combining (`test_a_defaults_snapshot_combines_like_no_snapshot`).
    """
    for name in ENTITY_FEATURES[entity]:
        default = ENTITY_FEATURE_DEFAULTS[name]
        v = baseline.get(name, default)
        if not (v == default or (v != v and default != default)):
            return False
    return True


class FrozenBaseline:
    """An entity's online snapshot, prepared once for the many `combine` calls of its track.

    The baseline never changes while it is tracked, so what `aged_baseline_sum` and the pooling
    rules read from it (finite values, nested window shells, the weight of its means) is worked
    out here once; a combine then costs a few float operations per feature. The same arithmetic
    as `aged_baseline_sum` (`test_frozen_baseline_ages_like_aged_baseline_sum`).
    """

    __slots__ = ("entity", "raw", "t_us", "values", "base_n", "shells")

    def __init__(self, entity: str, baseline: Mapping[str, float], t_us: int | None) -> None:
        self.entity, self.raw, self.t_us = entity, baseline, t_us
        # per feature: its value as a float, or None when missing / not finite
        self.values: dict[str, float | None] = {}
        for name, _, _ in _SPECS[entity]:
            v = baseline.get(name, ENTITY_FEATURE_DEFAULTS[name])
            self.values[name] = float(v) if _finite(v) else None
        base_n = baseline.get(_BASE_WEIGHT[entity], 0.0)
        self.base_n = float(base_n) if _finite(base_n) else 0.0
        # per count/sum feature: (total, [(events the shell adds, inner s, shell s)]), or None when
        # the total is missing (aged_baseline_sum: 0). Every track combines all of them at its
        # first event, so they are worked out here rather than on first use.
        self.shells: dict[str, tuple[float, list[tuple[float, float, float]]] | None] = {
            name: self._shells(name, shells) for name, shells in _SHELLS[entity].items()
        }

    def _shells(
        self, name: str, shells: tuple[tuple[str, float], ...]
    ) -> tuple[float, list[tuple[float, float, float]]] | None:
        baseline = self.raw
        total = baseline.get(name)
        if not _finite(total):
            return None
        parts, inner_value, inner_s = [], 0.0, 0.0
        for shell_name, shell_s in shells:
            v = baseline.get(shell_name)
            value = max(float(v) if _finite(v) else inner_value, inner_value)
            parts.append((value - inner_value, inner_s, shell_s))
            inner_value, inner_s = value, shell_s
        return float(total), parts

    def aged_sum(self, name: str, anchor_us: int, window_s: float) -> float:
        """`aged_baseline_sum(name, raw, t_us, anchor_us, window_s)`."""
        elapsed = 0.0 if self.t_us is None else (anchor_us - self.t_us) / US
        return _aged(self.shells[name], elapsed, window_s)


# `combine` of one entity type is one generated function (as `dataclasses` writes `__init__`): for
# every feature, its live value (the offline backfill's own expression,
# `riskops.features.aggregates.feature_expressions`) joined with the frozen baseline by the rule of its
# kind, with the baseline's age and each window's kept share worked out once per call instead of
# once per feature, and no call per feature but the rule's arithmetic
# (benchmarks/micro_entity_state.py; `COMBINE_SOURCE[entity]` shows the code).


def _aged(found: tuple[float, list[tuple[float, float, float]]] | None, elapsed_s: float, window_s: float) -> float:
    """`aged_baseline_sum` over a `FrozenBaseline.shells` entry, `elapsed_s` after the snapshot."""
    if found is None:
        return 0.0
    total, parts = found
    if elapsed_s <= 0:
        return total
    kept = 0.0
    for delta, inner_s, shell_s in parts:
        share = (window_s - inner_s - elapsed_s) / (shell_s - inner_s)
        if share > 0:
            kept += delta * (share if share < 1.0 else 1.0)
    return kept


def _last(live: float, base: float | None) -> float:
    if _finite(live):
        return live
    return math.nan if base is None else base


def _larger(base: float | None, keep: float, live: float) -> float:
    # distinct counts: the overlap of the two parts is unknown, so the larger one counts, and
    # the baseline in full while its window lasts (an aged baseline under a small live part
    # under-counted: measured as drift of merchant_distinct_users_24h after a restart)
    return max(base if base is not None and keep > 0 else 0.0, live)


def _pooled(base: float | None, n_base: float, live: float, n_live: float) -> float:
    """mean, rate: pooled, weighted by the event counts of both parts."""
    if base is None or n_base <= 0:
        return live
    if n_live <= 0 or not _finite(live):
        return base
    return (n_base * base + n_live * live) / (n_base + n_live)


def _pooled_std(
    base: float | None, base_mean: float | None, n_base: float, live: float, live_mean: float | None, n_live: float
) -> float:
    """std: pooled from both parts' means and standard deviations."""
    if base is None or n_base <= 0:
        return live
    if n_live <= 0 or not _finite(live):
        return base
    if base_mean is None or not _finite(live_mean):
        return live
    n = n_base + n_live
    m = (n_base * base_mean + n_live * live_mean) / n
    var = (n_base * (base * base + base_mean * base_mean) + n_live * (live * live + live_mean * live_mean)) / n - m * m
    return math.sqrt(max(var, 0.0))


def _combine_source(entity: str) -> str:
    """The source of ``combine_<entity>(s, fb, anchor)``: the features of live state `s` joined
    with FrozenBaseline `fb`, windows anchored at `anchor` (us)."""
    exprs = dict(zip(ENTITY_FEATURES[entity], feature_expressions(entity), strict=True))
    specs = _SPECS[entity]

    def live(name: str) -> str:
        w, _ = exprs[name]
        return expression(exprs[name], "s", window_local(w) if w else None)

    lines = [
        f"def combine_{entity}(s, fb, anchor):",
        "    t = fb.t_us",
        "    elapsed = 0.0 if t is None else (anchor - t) / US",
        "    vals = fb.values",
        "    shells = fb.shells",
        "    base_n = fb.base_n",
        "    W = s.windows",
    ]
    lines += [f"    {window_local(w)} = W[{w!r}]" for w in dict.fromkeys(w for _, _, w in specs if w)]
    for w in dict.fromkeys(w for _, kind, w in specs if kind in ("max", "mean", "std", "rate")):
        # baseline_share of window w (the same arithmetic, once per call)
        span_us = WINDOW_SECONDS[w] * US
        lines.append(f"    keep_{w} = 1.0 if t is None else min(1.0, max(0.0, 1.0 - (anchor - t) / {span_us}))")
    lines.append("    return {")
    for name, kind, w in specs:
        if kind == "last":
            value = f"_last({live(name)}, vals[{name!r}])"
        elif kind == "add":
            value = f"_aged(shells[{name!r}], elapsed, {WINDOW_SECONDS[w]}) + {live(name)}"
        elif kind == "max":
            value = f"_larger(vals[{name!r}], keep_{w}, {live(name)})"
        elif kind == "std":
            mean_name = name.replace("_amount_std_", "_amount_mean_")
            live_mean = live(mean_name) if mean_name in exprs else "None"
            value = (
                f"_pooled_std(vals[{name!r}], vals.get({mean_name!r}), keep_{w} * base_n, {live(name)},"
                f" {live_mean}, float({window_local(w)}.count))"
            )
        else:  # mean, rate
            value = f"_pooled(vals[{name!r}], keep_{w} * base_n, {live(name)}, float({window_local(w)}.count))"
        lines.append(f"        {name!r}: {value},")
    lines.append("    }")
    return "\n".join(lines) + "\n"


_COMBINE_NAMES = {
    **EXPRESSION_NAMES,
    "US": US,
    "_aged": _aged,
    "_last": _last,
    "_larger": _larger,
    "_pooled": _pooled,
    "_pooled_std": _pooled_std,
}
_COMBINE: dict[str, Callable[[EntityWindowState, FrozenBaseline, int], dict[str, float]]] = {
    e: compile_function(_combine_source(e), f"combine_{e}", _COMBINE_NAMES) for e in ENTITIES
}
COMBINE_SOURCE: dict[str, str] = {e: fn.__source__ for e, fn in _COMBINE.items()}


def combine(
    entity: str,
    baseline: Mapping[str, float] | FrozenBaseline | None,
    baseline_t_us: int | None,
    state: EntityWindowState | None,
) -> dict[str, float]:
    """The entity's features from a frozen online baseline plus the events seen since (see module doc).

    `baseline` may be a `FrozenBaseline` (its own time is used, `baseline_t_us` is ignored).
    """
    has_live = state is not None and state.last_event_us is not None
    if baseline is None:
        if has_live:
            return state.snapshot()
        return {f: ENTITY_FEATURE_DEFAULTS[f] for f in ENTITY_FEATURES[entity]}
    if not has_live:
        raw = baseline.raw if isinstance(baseline, FrozenBaseline) else baseline
        return {f: float(raw.get(f, ENTITY_FEATURE_DEFAULTS[f])) for f in ENTITY_FEATURES[entity]}
    if not isinstance(baseline, FrozenBaseline):
        baseline = FrozenBaseline(entity, baseline, baseline_t_us)
    return _COMBINE[entity](state, baseline, state.last_event_us)


def snapshot_time_us(entity: str, baseline: Mapping[str, Any], default_us: int) -> int:
    """When the online snapshot was taken: its event time in the store, else the user's last event.

    A snapshot with no time at all (a never-seen entity, a reader without timestamps) is taken as
    current: `default_us`, the first event this process sees for the entity.
    """
    for key in (snapshot_time_key(entity), f"{entity}_last_event_epoch"):
        v = baseline.get(key)
        if _finite(v) and v > 0:
            return int(float(v) * US)
    return default_us
