"""Feast objects for riskops: four entities, their parquet sources, push sources and feature views.

Everything is derived from the feature contract in riskops.features.contract (ENTITY_KEYS, ENTITY_FEATURES),
so adding a feature there and in riskops.features.aggregates is enough; nothing here names a feature.

* Entities `user`, `merchant`, `device`, `ip` (join keys user_id, merchant_id, device_id, ip_hash).
* FileSource `<entity>_source` over `data/<entity>_features.parquet` (written by
  riskops.features.store.write_feature_sources). A relative path is resolved by Feast against the
  repo directory; set RISKOPS_FEATURE_DATA_DIR to read the parquet files from elsewhere (the
  absolute path is then stored in the registry at apply time).
* PushSource `<entity>_push` wrapping the FileSource, so serving can push fresh entity state with
  `store.push("<entity>_push", df, to=PushMode.ONLINE)`.
* FeatureView `<entity>_features` (ttl 30 days = the longest window: an older snapshot has every
  window empty, so defaults are the right answer).

No FeatureService on purpose: Feast 0.67 lists every feature service on each `push` (to refresh
precomputed vectors), which costs serving latency for nothing here; riskops.features.store builds the
feature references from the contract instead.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float64, Int64, String

from riskops.features.aggregates import feature_dtype
from riskops.features.contract import ENTITY_FEATURES, ENTITY_KEYS

DATA_DIR_ENV = "RISKOPS_FEATURE_DATA_DIR"
FEATURE_TTL = timedelta(days=30)
TIMESTAMP_FIELD = "event_timestamp"


def source_path(entity: str) -> str:
    """`data/<entity>_features.parquet` (relative to the repo) or under $RISKOPS_FEATURE_DATA_DIR."""
    name = f"{entity}_features.parquet"
    data_dir = os.environ.get(DATA_DIR_ENV)
    return str(Path(data_dir).resolve() / name) if data_dir else f"data/{name}"


def _build(entity: str) -> tuple[Entity, FileSource, PushSource, FeatureView]:
    key = ENTITY_KEYS[entity]
    ent = Entity(
        name=entity,
        join_keys=[key],
        value_type=ValueType.STRING,
        description=f"{entity} (join key {key})",
    )
    batch = FileSource(
        name=f"{entity}_source",
        path=source_path(entity),
        timestamp_field=TIMESTAMP_FIELD,
        description=f"{entity} state after each of its events (riskops.features.aggregates)",
    )
    push = PushSource(name=f"{entity}_push", batch_source=batch)
    view = FeatureView(
        name=f"{entity}_features",
        entities=[ent],
        ttl=FEATURE_TTL,
        schema=[Field(name=key, dtype=String)]
        + [
            Field(name=f, dtype=Int64 if feature_dtype(f) == "int64" else Float64)
            for f in ENTITY_FEATURES[entity]
        ],
        source=push,
        online=True,
        description=f"windowed aggregates per {entity}",
    )
    return ent, batch, push, view


user, user_source, user_push, user_features = _build("user")
merchant, merchant_source, merchant_push, merchant_features = _build("merchant")
device, device_source, device_push, device_features = _build("device")
ip, ip_source, ip_push, ip_features = _build("ip")

ENTITY_OBJECTS = {
    "user": (user, user_source, user_push, user_features),
    "merchant": (merchant, merchant_source, merchant_push, merchant_features),
    "device": (device, device_source, device_push, device_features),
    "ip": (ip, ip_source, ip_push, ip_features),
}
assert set(ENTITY_OBJECTS) == set(ENTITY_FEATURES)
