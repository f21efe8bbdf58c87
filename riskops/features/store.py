"""Feast plumbing for riskops: a per-run repo copy, sources, apply, training frames, online reads/pushes.

Feast is imported lazily inside the functions (the import takes ~5 s), so importing this module
is cheap. The Feast objects themselves live in `feature_repo/definitions.py`. One module (~520
lines) on purpose: it is riskops' only boundary with Feast, and the offline and online halves share
the key, view and timestamp conventions below.

Point-in-time semantics (see riskops.features.contract and riskops.features.aggregates):

* The offline sources hold, per entity, the state *after* each event, stamped with the event
  time (microsecond resolution). Several events of one entity at the same timestamp keep only
  the state after the last of them: "the state at time t" includes every event at t.
* `training_frame` asks for every transaction at ``t - 1 microsecond`` (``QUERY_OFFSET``), so a
  transaction sees the state after the entity's latest event strictly *before* it: never its own
  event, nor one at the same timestamp, nor any later one. Serving reads the online store, which
  holds the state after the entity's latest event; both see "history before this transaction".
* A stored state older than the feature views' ttl (30 days, the longest window) is not used
  (every window of it is empty by then): the entity looks never seen and gets
  ENTITY_FEATURE_DEFAULTS. `online_features(..., now=...)` applies the same rule online, which
  Feast's online store does not do by itself.

Feast's file offline store returns rows in another order than the entity frame, collapses entity
rows that share keys and timestamp, and drops the rows of a known entity with no state in range.
`training_frame` therefore queries each feature view with unique (key, time) rows carrying a row
id, joins the answers back by that id, asserts the row count, and fills what is missing with the
defaults: no transaction is ever dropped.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import shutil
import sys
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from riskops.features.aggregates import ENTITIES, compute_entity_features, feature_dtype
from riskops.features.contract import (
    ALL_ENTITY_FEATURES,
    ENTITY_FEATURE_DEFAULTS,
    ENTITY_FEATURES,
    ENTITY_KEYS,
    snapshot_time_key,
)
from riskops.settings import PROJECT_ROOT

if TYPE_CHECKING:  # pragma: no cover
    from feast import FeatureStore

log = logging.getLogger(__name__)

PACKAGED_REPO = PROJECT_ROOT / "feature_repo"
REPO_FILES: tuple[str, ...] = ("feature_store.yaml", "definitions.py", "README.md")
QUERY_OFFSET = pd.Timedelta(microseconds=1)
FEATURE_TTL = timedelta(days=30)  # keep equal to feature_repo/definitions.py (checked in apply())
# Above this many (entity row x feature row) pairs per view, the file offline store's cross join
# gets too slow/large; training_frame(engine="auto") then joins the same parquet with merge_asof.
MAX_FEAST_MERGE_ROWS = 5_000_000

_ROW = "__riskops_row"


def view_name(entity: str) -> str:
    return f"{entity}_features"


def push_source_name(entity: str) -> str:
    return f"{entity}_push"


def source_file(repo: Path, entity: str) -> Path:
    return Path(repo) / "data" / f"{entity}_features.parquet"


# ---------------------------------------------------------------------------------------------
# Repo, sources, apply
# ---------------------------------------------------------------------------------------------


def prepare_repo(work_dir: Path) -> Path:
    """Copy the packaged feature_repo definitions into `work_dir` (the repo); data/ is kept."""
    repo = Path(work_dir).resolve()
    (repo / "data").mkdir(parents=True, exist_ok=True)
    for name in REPO_FILES:
        src = PACKAGED_REPO / name
        if src.exists():
            shutil.copyfile(src, repo / name)
    if not (repo / "feature_store.yaml").exists():
        raise FileNotFoundError(f"no feature_store.yaml in the packaged repo {PACKAGED_REPO}")
    return repo


def _dedupe_same_time(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """Keep, per (key, event_timestamp), the last row: the state after every event at that time."""
    return frame[~frame.duplicated([key, "event_timestamp"], keep="last")]


def write_feature_sources(repo: Path, transactions_hashed: pd.DataFrame) -> dict[str, Path]:
    """Compute the entity states and write `data/<entity>_features.parquet`; returns the paths."""
    frames = compute_entity_features(transactions_hashed)
    out: dict[str, Path] = {}
    for entity, frame in frames.items():
        path = source_file(repo, entity)
        path.parent.mkdir(parents=True, exist_ok=True)
        _dedupe_same_time(frame, ENTITY_KEYS[entity]).to_parquet(path, index=False)
        out[entity] = path
    return out


def open_store(repo: Path) -> FeatureStore:
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(Path(repo).resolve()))
    use_wal(store)
    return store


def sqlite_online_path(store: FeatureStore) -> Path | None:
    """The SQLite file of a `type: sqlite` online store (None for Redis and the others)."""
    online = store.config.online_store
    if getattr(online, "type", None) != "sqlite":
        return None
    path = Path(online.path)
    return path if path.is_absolute() else Path(store.repo_path) / path


def use_wal(store: FeatureStore) -> bool:
    """Put a SQLite online store in write-ahead-log mode (persistent in the file); True when it is.

    Why: in SQLite's default rollback-journal mode a writer's commit locks readers out, and a
    blocked reader sleeps in SQLite's busy handler (1, 2, 5, 10 ms ... up to the connection's
    timeout). The server reads the online store for first-seen entities while its pusher writes
    entity states every 0.5 s; with WAL, readers and the writer do not block each other (the
    latency effect measured so far is within the noise: docs/serving.md, benchmark). The file
    must exist (Feast creates it on apply).
    """
    import sqlite3

    path = sqlite_online_path(store)
    if path is None or not path.exists():
        return False
    try:
        with sqlite3.connect(path, timeout=5.0) as conn:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except sqlite3.Error as exc:  # e.g. a read-only file: it still works, only slower under pushes
        log.warning("could not switch the online store %s to WAL mode: %s", path, exc)
        return False
    return str(mode).lower() == "wal"


def load_definitions(repo: Path):
    """Import `<repo>/definitions.py` under a unique module name (no chdir, no sys.path change)."""
    path = Path(repo) / "definitions.py"
    name = f"_riskops_feast_definitions_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load Feast definitions from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def feast_objects(module) -> list:
    """The Feast objects a definitions module holds (what `feast apply` would register)."""
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    objs: list = []
    for attr in sorted(vars(module)):
        obj = getattr(module, attr)
        if isinstance(obj, Entity | DataSource | FeatureView | FeatureService) and not any(
            obj is o for o in objs
        ):
            objs.append(obj)
    return objs


def apply(repo: Path) -> FeatureStore:
    """Programmatic `feast apply`: register the repo's definitions and create online tables."""
    module = load_definitions(repo)
    objs = feast_objects(module)
    for entity in ENTITIES:
        fv = next(o for o in objs if getattr(o, "name", None) == view_name(entity) and hasattr(o, "ttl"))
        if fv.ttl != FEATURE_TTL:
            raise ValueError(f"{fv.name}: ttl {fv.ttl} differs from riskops.features.store.FEATURE_TTL")
    store = open_store(repo)
    store.apply(objs)
    use_wal(store)  # the online store's file may only exist now
    return store


# ---------------------------------------------------------------------------------------------
# Offline: training frames
# ---------------------------------------------------------------------------------------------


def _keys(series: pd.Series) -> pd.Series:
    return series.astype("string").fillna("")


def _feature_refs(entity: str) -> list[str]:
    return [f"{view_name(entity)}:{f}" for f in ENTITY_FEATURES[entity]]


def _query_rows(transactions: pd.DataFrame, entity: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Unique (key, query time) rows for one view, and for each transaction its query row (-1: none)."""
    key = ENTITY_KEYS[entity]
    keys = (
        _keys(transactions[key]) if key in transactions.columns else pd.Series("", index=transactions.index)
    )
    ts = pd.to_datetime(transactions["event_timestamp"], utc=True).dt.floor("us") - QUERY_OFFSET
    pairs = pd.DataFrame({key: keys.to_numpy(), "event_timestamp": ts.to_numpy()})
    has_key = (pairs[key] != "").to_numpy()
    codes = np.full(len(pairs), -1, dtype=np.int64)
    if has_key.any():
        sub = pairs[has_key]
        grp = sub.groupby([key, "event_timestamp"], sort=False, observed=True).ngroup().to_numpy()
        codes[has_key] = grp
        uniq = sub.assign(**{_ROW: grp}).drop_duplicates(_ROW).sort_values(_ROW).reset_index(drop=True)
    else:
        uniq = pairs.iloc[:0].assign(**{_ROW: np.array([], dtype=np.int64)})
    uniq[key] = uniq[key].astype("string")
    uniq["event_timestamp"] = pd.to_datetime(uniq["event_timestamp"], utc=True)
    return uniq, codes


def _merge_rows_estimate(store: FeatureStore, entity: str, query: pd.DataFrame) -> int:
    key = ENTITY_KEYS[entity]
    src = _source_keys(store, entity, [key])
    per_key_src = src[key].value_counts()
    per_key_q = query[key].value_counts()
    both = per_key_q.to_frame("q").join(per_key_src.to_frame("s"), how="inner")
    return int((both["q"] * both["s"]).sum())


def _source_path(store: FeatureStore, entity: str) -> str:
    from feast.infra.offline_stores.file_source import FileSource

    fv = store.get_feature_view(view_name(entity))
    src = fv.batch_source
    if not isinstance(src, FileSource):
        raise TypeError(f"{fv.name}: engine='asof' needs a FileSource, got {type(src).__name__}")
    return FileSource.get_uri_for_file_path(store.config.repo_path, src.path)


def _source_keys(store: FeatureStore, entity: str, columns: list[str]) -> pd.DataFrame:
    return pd.read_parquet(_source_path(store, entity), columns=columns)


def _features_feast(store: FeatureStore, entity: str, query: pd.DataFrame) -> pd.DataFrame:
    got = store.get_historical_features(entity_df=query, features=_feature_refs(entity)).to_df()
    return got[[_ROW, *ENTITY_FEATURES[entity]]]


def _features_asof(store: FeatureStore, entity: str, query: pd.DataFrame) -> pd.DataFrame:
    """The same point-in-time join as Feast's (latest state with ttl-bounded ts <= query time)."""
    key = ENTITY_KEYS[entity]
    fv = store.get_feature_view(view_name(entity))
    src = pd.read_parquet(
        _source_path(store, entity), columns=[key, "event_timestamp", *ENTITY_FEATURES[entity]]
    )
    src[key] = _keys(src[key])
    src["event_timestamp"] = pd.to_datetime(src["event_timestamp"], utc=True)
    src = src.sort_values("event_timestamp", kind="stable")
    src = src.rename(columns={"event_timestamp": "__feature_ts"})
    q = query.sort_values("event_timestamp", kind="stable")
    got = pd.merge_asof(
        q,
        src,
        left_on="event_timestamp",
        right_on="__feature_ts",
        by=key,
        direction="backward",
        allow_exact_matches=True,
        tolerance=pd.Timedelta(fv.ttl) if fv.ttl else None,
    )
    return got[[_ROW, *ENTITY_FEATURES[entity]]]


def training_frame(
    store: FeatureStore,
    transactions_hashed: pd.DataFrame,
    engine: str = "auto",
    max_feast_merge_rows: int = MAX_FEAST_MERGE_ROWS,
) -> pd.DataFrame:
    """Every transaction with the entity state just before it (its own event excluded).

    Returns `transactions_hashed` (same rows, same order, same index) plus ALL_ENTITY_FEATURES.
    engine: 'feast' (store.get_historical_features), 'asof' (pandas merge_asof over the same
    parquet sources, identical semantics, for sizes where the file store's cross join explodes),
    or 'auto' (Feast unless a view's join would exceed `max_feast_merge_rows` pairs).
    """
    if engine not in ("auto", "feast", "asof"):
        raise ValueError(f"engine must be 'auto', 'feast' or 'asof', not {engine!r}")
    tx = transactions_hashed
    if "ip_address" in tx.columns and "ip_hash" not in tx.columns:
        raise ValueError("transactions carry raw ip_address: hash PII first (riskops.pii.hash_pii)")
    if "transaction_id" in tx.columns and tx["transaction_id"].duplicated().any():
        dup = tx.loc[tx["transaction_id"].duplicated(), "transaction_id"].iloc[0]
        raise ValueError(f"transaction_id must be unique; {dup!r} repeats")

    out = tx.copy()
    for entity in ENTITIES:
        query, codes = _query_rows(tx, entity)
        names = list(ENTITY_FEATURES[entity])
        # one slot per query row (row id == position), pre-filled with the never-seen defaults
        values = {f: np.full(len(query), ENTITY_FEATURE_DEFAULTS[f], dtype="float64") for f in names}
        if len(query):
            use = engine
            if engine == "auto":
                pairs = _merge_rows_estimate(store, entity, query)
                use = "feast" if pairs <= max_feast_merge_rows else "asof"
                if use == "asof":
                    log.info(
                        "%s: %d join pairs > %d, using merge_asof",
                        view_name(entity),
                        pairs,
                        max_feast_merge_rows,
                    )
            started = time.perf_counter()
            got = (_features_feast if use == "feast" else _features_asof)(store, entity, query)
            log.debug("%s via %s: %.2fs", view_name(entity), use, time.perf_counter() - started)
            rows = got[_ROW].to_numpy().astype(np.int64)
            if len(got) > len(query) or pd.Series(rows).duplicated().any():
                raise AssertionError(f"{view_name(entity)}: the offline store returned duplicate rows")
            if not np.isin(rows, query[_ROW].to_numpy()).all():
                raise AssertionError(f"{view_name(entity)}: the offline store returned unknown rows")
            # got rows in any order, possibly fewer than asked (entity without state in range)
            for f in names:
                col = pd.to_numeric(got[f], errors="coerce").astype("float64").to_numpy()
                values[f][rows] = np.where(np.isnan(col), ENTITY_FEATURE_DEFAULTS[f], col)
        for f in names:
            col = np.full(len(tx), ENTITY_FEATURE_DEFAULTS[f], dtype="float64")
            hit = codes >= 0
            col[hit] = values[f][codes[hit]]
            out[f] = col.astype(feature_dtype(f)) if feature_dtype(f) == "int64" else col
    if len(out) != len(tx) or not out.index.equals(tx.index):
        raise AssertionError("training_frame lost or reordered transactions")
    return out


# ---------------------------------------------------------------------------------------------
# Online: materialize, read, push
# ---------------------------------------------------------------------------------------------


def _utc(ts: Any) -> datetime:
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.to_pydatetime()


def materialize(store: FeatureStore, end: datetime, start: datetime | None = None) -> None:
    """Load the latest state per entity with event time in [end - ttl, end] into the online store.

    Older states are expired anyway (see the module docstring), so they are not loaded.
    """
    end_dt = _utc(end)
    start_dt = _utc(start) if start is not None else end_dt - FEATURE_TTL
    store.materialize(start_date=start_dt, end_date=end_dt)


def online_feature_refs() -> list[str]:
    return [ref for e in ENTITIES for ref in _feature_refs(e)]


def online_features(
    store: FeatureStore, entity_rows: Sequence[Mapping[str, Any]], now: Any = None
) -> list[dict[str, float]]:
    """ALL_ENTITY_FEATURES (floats) for each row (a mapping holding some of the join keys).

    Unknown entities and rows without a key get ENTITY_FEATURE_DEFAULTS. With `now` (the
    request's event time), a state older than the ttl counts as unknown, as it does in training;
    Feast's online store itself ignores the ttl. With `now`, each row also carries
    `snapshot_time_key(entity)`: when the entity's snapshot was taken (its last event, whole
    epoch seconds as Feast's online response gives it; NaN when unknown), which serving needs to
    age the snapshot's windows.

    Reads go through the provider's `online_read`, one call per feature view: the call that
    `FeatureStore.get_online_features` makes for each view, part of the online store interface
    every Feast online store (SQLite here, Redis on a cluster) implements. Skipping the SDK's
    request resolution and response assembly around it makes a serving lookup (one row, four
    views) ~0.2 ms instead of ~0.55 ms in a hot loop, and ~0.6 instead of ~1.5 ms when calls come
    a few ms apart as they do in the server (`test_online_features_equal_feasts_get_online_features`
    holds the two paths to the same answer).
    """
    if not entity_rows:
        return []
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    views = _online_views(store)
    provider, config = store.provider, store.config
    cutoff = None
    if now is not None:
        cutoff = (_utc(now) - FEATURE_TTL).timestamp()
    out: list[dict[str, float]] = [{} for _ in entity_rows]
    for entity in ENTITIES:
        names = ENTITY_FEATURES[entity]
        key = ENTITY_KEYS[entity]
        keys = [_key_str(r.get(key)) for r in entity_rows]
        asked = [i for i, k in enumerate(keys) if k]
        found: dict[int, tuple[Any, Any]] = {}
        if asked:
            entity_keys = [
                EntityKey(join_keys=[key], entity_values=[Value(string_val=keys[i])]) for i in asked
            ]
            found = dict(
                zip(asked, provider.online_read(config, views[entity], entity_keys, list(names)), strict=True)
            )
        for i, row in enumerate(out):
            ts, values = found.get(i, (None, None))
            seconds = math.floor(ts.timestamp()) if ts is not None else 0
            known = values is not None and not (cutoff is not None and seconds < cutoff)
            for f in names:
                v = _proto_float(values.get(f)) if known else None
                row[f] = ENTITY_FEATURE_DEFAULTS[f] if v is None else v
            if cutoff is not None:
                row[snapshot_time_key(entity)] = float(seconds) if known and seconds else float("nan")
    return out


def _online_views(store: FeatureStore) -> dict[str, Any]:
    """The store's feature view objects by entity, looked up in the registry once per store object."""
    views = _VIEWS.get(store)
    if views is None:
        views = _VIEWS[store] = {e: store.get_feature_view(view_name(e)) for e in ENTITIES}
    return views


_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _proto_float(value: Any) -> float | None:
    """A Feast ValueProto's number as a float; None for an absent or null value."""
    if value is None:
        return None
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    return float(getattr(value, kind))


def _key_str(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def push_entity_state(
    store: FeatureStore, entity: str, rows: pd.DataFrame | Iterable[Mapping[str, Any]]
) -> None:
    """Write entity states (join key, event_timestamp, the entity's features) to the online store."""
    from feast.data_source import PushMode

    if entity not in ENTITY_FEATURES:
        raise ValueError(f"unknown entity {entity!r}; expected one of {ENTITIES}")
    key = ENTITY_KEYS[entity]
    names = ENTITY_FEATURES[entity]
    if isinstance(rows, pd.DataFrame):
        columns = {c: rows[c].tolist() for c in rows.columns}
        n = len(rows)
    else:
        records = list(rows)
        n = len(records)
        columns = {
            c: [r.get(c) for r in records]
            for c in (key, "event_timestamp", *names)
            if all(c in r for r in records)
        }
    missing = [c for c in (key, "event_timestamp", *names) if c not in columns]
    if missing:
        raise ValueError(f"push to {entity}: missing columns {missing}")
    if not n:
        return
    data: dict[str, Any] = {
        key: [_key_str(k) for k in columns[key]],
        "event_timestamp": pd.to_datetime(columns["event_timestamp"], utc=True),
    }
    for f in names:
        col = np.asarray(columns[f], dtype="float64")
        if feature_dtype(f) == "int64":
            if np.isnan(col).any():
                raise ValueError(f"push to {entity}: count {f} has missing values")
            col = col.astype("int64")
        data[f] = col
    df = pd.DataFrame(data)
    store.push(push_source_name(entity), df, to=PushMode.ONLINE)


__all__ = [
    "ALL_ENTITY_FEATURES",
    "FEATURE_TTL",
    "QUERY_OFFSET",
    "apply",
    "feast_objects",
    "load_definitions",
    "materialize",
    "online_feature_refs",
    "online_features",
    "open_store",
    "prepare_repo",
    "push_entity_state",
    "source_file",
    "training_frame",
    "write_feature_sources",
]
