"""The feature build: Feast features and the point-in-time training set over raw transactions.

hash PII -> working copy of feature_repo/ -> entity states as parquet sources (+ each user's, device's
and IP's last events, riskops.features.sequences.recent_events, for serving; the history a fresh
Redis state replays, riskops.features.shared_state) -> `feast apply`
-> point-in-time training frame (every transaction + the entity state just before it, label kept)
-> materialize the online store up to the last event (serving reads the same repo copy).
"""

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class FeatureBuildResult:
    repo: Path  # the Feast repo working copy (feature_store.yaml, definitions.py, data/)
    training_frame: pd.DataFrame  # hashed transactions + ALL_ENTITY_FEATURES, input order, label kept
    source_paths: dict[str, Path]  # entity -> data/<entity>_features.parquet
    materialized_until: datetime | None  # the online store holds the state up to this event time
    timings_s: dict[str, float] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        out = {f"seconds_{k}": round(v, 3) for k, v in self.timings_s.items()}
        out.update(self.stats)
        return out


def build_features(transactions: pd.DataFrame, work_dir: Path, engine: str = "auto") -> FeatureBuildResult:
    """Transactions (raw PII allowed) -> Feast repo at `work_dir` + a point-in-time training frame."""
    from riskops.features import store as fs
    from riskops.features.contract import ENTITY_KEYS
    from riskops.features.sequences import RECENT_EVENTS_FILE, recent_events
    from riskops.features.shared_state import (
        HISTORY_FILE,
        SharedEntityState,
        load_history_file,
        write_history_file,
    )
    from riskops.pii import hash_pii
    from riskops.schema import coerce

    timings: dict[str, float] = {}

    def lap(name: str, started: float) -> float:
        now = time.perf_counter()
        timings[name] = now - started
        return now

    t = time.perf_counter()
    tx = hash_pii(coerce(transactions))
    if tx.empty:
        raise ValueError("no transactions to build features from")
    t = lap("hash_pii", t)
    repo = fs.prepare_repo(Path(work_dir))
    sources = fs.write_feature_sources(repo, tx)
    recent = recent_events(tx)
    recent.to_parquet(Path(repo) / "data" / RECENT_EVENTS_FILE, index=False)
    write_history_file(tx, recent["transaction_id"], Path(repo) / "data" / HISTORY_FILE)
    if os.environ.get("RISKOPS_REDIS_URL"):  # a cluster: start the replicas' shared state if it is empty
        state = SharedEntityState(os.environ["RISKOPS_REDIS_URL"])
        started = load_history_file(state, Path(repo) / "data" / HISTORY_FILE)
        log.info("shared entity state in Redis: %s", f"started from {started} events" if started else "already live")
    t = lap("write_sources", t)
    store = fs.apply(repo)
    t = lap("apply", t)
    frame = fs.training_frame(store, tx, engine=engine)
    t = lap("training_frame", t)
    last = pd.to_datetime(tx["event_timestamp"], utc=True).max().to_pydatetime()
    fs.materialize(store, last)
    lap("materialize", t)

    stats: dict[str, float] = {"rows": float(len(frame))}
    for entity, key in ENTITY_KEYS.items():
        stats[f"{entity}_entities"] = float(tx[key].astype("string").replace("", pd.NA).nunique())
        stats[f"{entity}_source_rows"] = float(len(pd.read_parquet(sources[entity], columns=[key])))
    stats["share_new_users"] = float(frame["user_last_event_epoch"].isna().mean())
    if "is_fraud" in frame.columns:
        stats["fraud_rate"] = float(pd.to_numeric(frame["is_fraud"], errors="coerce").mean())
    return FeatureBuildResult(
        repo=repo,
        training_frame=frame,
        source_paths=sources,
        materialized_until=last,
        timings_s=timings,
        stats=stats,
    )
