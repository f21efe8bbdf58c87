"""Per-entity window state kept by the serving process, and how it meets the online store.

The problem: windowed aggregates (counts/sums/distincts over 1h..30d) can only be updated
exactly from the *events*, and the Feast online store holds only the latest *snapshot* of each
entity. A snapshot cannot be turned back into events, so an `EntityWindowState` cannot be seeded
from it.

The choice made here (docs/serving.md, "How it decides"; the combining rules: serving/entity_baseline.py):

* The first time this process sees an entity, its online snapshot is read from Feast and kept as
  a frozen **baseline** (defaults for a never-seen entity). From then on the process records the
  entity's events in its own `riskops.features.aggregates.EntityWindowState` (**live** part, exact, the
  same code as the offline backfill).
* The features of an entity are `combine(baseline, live)`: counts and sums add up; distinct
  counts take the larger of the two (the overlap is unknown); means, standard deviations and
  rates are pooled, weighted by event counts; the last-event time is the latest. The baseline's
  time is the snapshot's event time in the online store (the entity's last event). A baseline's
  counts and sums *age* as the newest event moves past that time: the shorter windows of the same
  quantity split a window into shells (last hour, rest of the day, rest of the week), each shell's
  events are taken as evenly spread, and a shell loses its events only once the window's start
  reaches it (`aged_baseline_sum`); after a full window nothing is left. A distinct count keeps
  its full value until then: max(baseline, live), the overlap being unknown. (Counting it in full
  until then over-counted: a restarted server saw every merchant's day-old 1h count for an hour,
  which the drift monitor rightly reported as a shift.) Exact for entities first seen by this
  process.
* After each scored transaction the combined state *after* the event is pushed to the online
  store (coalesced by a background pusher), so other replicas and the next process start see it.
* Tracks live in a bounded LRU (`capacity`); an evicted entity is re-baselined from the online
  store, which by then holds the state this process pushed.
* Concurrent requests of one entity are serialised on the event loop: the lookup and the update
  happen together with no await in between, so the 2nd of two simultaneous transactions of a
  user already counts the 1st (what burst detection needs).
* An event older than the entity's clock (clients' clocks disagree) is counted at the clock's
  time, because windows only move forward.
* Each user / device / IP track also keeps its last events (`HISTORY_PER_ENTITY`), from which
  `history_tokens` builds the transaction's behaviour-sequence inputs with the same encoder as the
  offline backfill (riskops.features.sequences). An entity met for the first time starts from the
  events the feature build left next to the online store (`recent_events.parquet`), so a restarted
  server sees the same history the model was trained with.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from riskops.features.aggregates import (
    ENTITIES,
    EntityWindowState,
    event_tuple,
    from_epoch_us,
    to_epoch_us,
    with_time,
)
from riskops.features.contract import ENTITY_FEATURE_DEFAULTS, ENTITY_KEYS
from riskops.features.sequences import EVENT_FIELDS, HISTORY_PER_ENTITY, encode_one, event_record
from riskops.features.shared_state import keys_of
from serving.entity_baseline import FrozenBaseline, combine, holds_only_defaults, snapshot_time_us


@dataclass(slots=True, weakref_slot=True)
class _Track:
    entity: str
    baseline: FrozenBaseline | None
    state: EntityWindowState
    # the features after the track's last event. `combine` depends on (baseline, state) alone, so
    # they are also the features *before* its next event: one combine per event instead of two
    features: dict[str, float] | None = None
    # (arrival number, event tuple) of the entity's last events (user / device / IP tracks only)
    events: deque | None = None

    def current(self) -> dict[str, float]:
        """The entity's features now (computed once per change of the state)."""
        if self.features is None:
            self.features = combine(self.entity, self.baseline, None, self.state)
        return self.features

    def include(self, ev: tuple) -> dict[str, float]:
        """Add the event tuple; the features after it (shared with the push: never mutate them)."""
        self.state.add_event(ev)
        self.features = combine(self.entity, self.baseline, None, self.state)
        return self.features


@dataclass(slots=True)
class Push:
    entity: str
    key: str
    event_timestamp: datetime
    features: dict[str, float]


_KEY_FIELDS = tuple((entity, ENTITY_KEYS[entity]) for entity in ENTITIES)


HistorySeed = Mapping[tuple[str, str], list[tuple[int, tuple]]]


def load_recent_events(path: Path | str) -> dict[tuple[str, str], list[tuple[int, tuple]]]:
    """The feature build's recent-events table (riskops.features.sequences.recent_events) as
    {(entity, key): [(arrival, event tuple), ...]}; arrivals are negative (before any live event),
    in the table's order, which is time order within an entity."""
    path = Path(path)
    if not path.exists():
        return {}
    table = pd.read_parquet(path)
    out: dict[tuple[str, str], list[tuple[int, tuple]]] = {}
    columns = [table[c].tolist() for c in EVENT_FIELDS]
    arrivals = table["arrival"].tolist() if "arrival" in table.columns else range(-len(table), 0)
    for i, (entity, key) in enumerate(zip(table["entity"].tolist(), table["key"].tolist(), strict=True)):
        ev = tuple(int(col[i]) if name == "t_us" else col[i] for name, col in zip(EVENT_FIELDS, columns, strict=True))
        out.setdefault((entity, key), []).append((int(arrivals[i]), ev))
    return out


class EntityTracker:
    """Bounded LRU of entity tracks (all four entity types together).

    history_seed: the last events of entities as the offline history ends (`load_recent_events`);
    an entity's track starts from them when this process first meets it.
    """

    def __init__(self, capacity: int = 200_000, history_seed: HistorySeed | None = None) -> None:
        self.capacity = int(capacity)
        self._tracks: OrderedDict[tuple[str, str], _Track] = OrderedDict()
        self._seed: HistorySeed = history_seed or {}
        self._arrivals = itertools.count()

    def __len__(self) -> int:
        return len(self._tracks)

    # (entity, key) pairs of a hashed record; a missing key belongs to no entity (both backends)
    keys_of = staticmethod(keys_of)

    def untracked(self, records: list[Mapping[str, Any]]) -> list[tuple[str, str]]:
        """Distinct (entity, key) pairs of `records` that need a baseline from the online store."""
        seen: dict[tuple[str, str], None] = {}
        for r in records:
            for ek in self.keys_of(r):
                if ek not in self._tracks:
                    seen.setdefault(ek, None)
        return list(seen)

    def observe(
        self,
        record: Mapping[str, Any],
        baselines: Mapping[tuple[str, str], dict[str, float] | None],
    ) -> tuple[dict[str, float], list[Push], bool]:
        """Features for `record` (state before it), then include it; returns (features, pushes, degraded).

        `baselines` holds the online snapshot of every untracked entity of the record; a missing
        entry means the online store could not be read: that entity gets defaults, is not
        tracked and not pushed (its history could not be combined), and the answer is degraded.
        """
        features: dict[str, float] = dict(ENTITY_FEATURE_DEFAULTS)
        pushes: list[Push] = []
        degraded = False
        t_us = to_epoch_us(record["event_timestamp"])
        ev: tuple | None = None  # the record as an event tuple, built once for all its entities
        ev_time: datetime | None = None
        ev_time_us = t_us
        recorded: tuple[int, tuple] | None = None  # (arrival, event tuple) for the history deques
        for ek in self.keys_of(record):
            entity, key = ek
            track = self._tracks.get(ek)
            if track is None:
                if ek not in baselines:
                    degraded = True
                    continue
                base = baselines[ek]
                frozen = None
                if base is not None and not holds_only_defaults(entity, base):
                    frozen = FrozenBaseline(entity, base, snapshot_time_us(entity, base, t_us))
                track = _Track(entity, frozen, EntityWindowState(entity))
                if entity in HISTORY_PER_ENTITY:
                    track.events = deque(self._seed.get(ek, ()), maxlen=HISTORY_PER_ENTITY[entity])
                self._tracks[ek] = track
                while len(self._tracks) > self.capacity:
                    self._tracks.popitem(last=False)
            else:
                self._tracks.move_to_end(ek)
            features.update(track.current())
            clock = track.state.clock_us
            ev_us = t_us if clock is None or t_us >= clock else clock
            if ev is None:
                ev = event_tuple(record, t_us)
            if ev_time is None or ev_time_us != ev_us:  # one datetime per distinct time of the record
                ev_time, ev_time_us = from_epoch_us(ev_us), ev_us
            pushes.append(Push(entity, key, ev_time, track.include(with_time(ev, ev_us))))
            if track.events is not None:
                if recorded is None:
                    recorded = (next(self._arrivals), event_record(record, t_us))
                track.events.append(recorded)
        return features, pushes, degraded

    def history_tokens(self, record: Mapping[str, Any]) -> tuple[np.ndarray, list[str]]:
        """The record's behaviour-sequence tokens (SEQUENCE_COLUMNS order) from the events its user,
        device and IP hold *before* it (call before `observe` includes it), and those events' ids."""
        prior: list[Iterable[tuple[int, tuple]]] = []
        for ek in self.keys_of(record):
            if ek[0] not in HISTORY_PER_ENTITY:
                continue
            track = self._tracks.get(ek)
            events = track.events if track is not None and track.events is not None else self._seed.get(ek)
            if events:
                prior.append(events)
        t_us = to_epoch_us(record["event_timestamp"])
        return encode_one(event_record(record, t_us), itertools.chain.from_iterable(prior))

    def peek(
        self, record: Mapping[str, Any], baselines: Mapping[tuple[str, str], dict[str, float] | None]
    ) -> tuple[dict[str, float], bool]:
        """Like `observe` without including the record (explanations must not count as events)."""
        features: dict[str, float] = dict(ENTITY_FEATURE_DEFAULTS)
        degraded = False
        for ek in self.keys_of(record):
            entity, _ = ek
            track = self._tracks.get(ek)
            if track is not None:
                features.update(track.current())
            elif ek in baselines:
                features.update(combine(entity, baselines[ek], None, None))
            else:
                degraded = True
        return features, degraded
