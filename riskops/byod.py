"""Bring your own data through the pipeline: what the dataset-driven steps do, as plain functions.

A dataset config (riskops.data.datasets) maps a user's columns to roles; every step adapts to it:

* **ingest** (:func:`load_canonical`) — read the source, check the mapping (``MappingError`` names
  every missing or mistyped column), hash PII, keep only the mapped columns, sort by event time,
  optionally keep only the newest ``max_rows`` rows (a contiguous time window, so windowed
  aggregates and the time split stay honest).
* **validate** (:func:`validate_dataset`) — a Great Expectations suite generated from the mapping
  (:func:`build_dataset_suite`): columns present, label not null and in {0, 1} with a plausible
  fraud rate, event time not null / timezone-aware / not in the future, numeric columns numeric and
  finite, categorical and text columns strings. A failure names the expectation, column, count
  and example rows/values, like the built-in gate.
* **features** (:func:`build_dataset_features`) — windowed per-entity aggregates through Feast
  (the same riskops.features.aggregates code and Feast repo as the built-in schema) for the MAPPED entities
  only, and only the aggregates the mapping can support (:func:`aggregate_feature_names`): no
  entities, no aggregates and no Feast at all (e.g. ULB); no ``amount`` column, no amount sums.
* **train** (:func:`train_dataset_model`) — text columns mapped: the text + tabular transformer
  (riskops.training.model.RiskModel fine-tuned by riskops.training.finetune.train_model, with this dataset's own
  numeric/categorical columns); no text: the FT-Transformer (riskops.training.tabular) with Platt /
  temperature calibration chosen on validation (riskops.training.calibration).
* **evaluate** (:func:`evaluate_dataset`) — the config's time split (riskops.data.datasets.fdb_split +
  train_val_split), the model vs LightGBM and logistic regression fitted on the same rows, the
  decision policy set on validation, metrics on the test period.
* **register** (:func:`register_dataset_model`) — a registry version under the dataset's own model
  name (``risk-model-<dataset>``): the serving champion (``risk-model``, built-in schema) is never
  replaced by a model that expects other columns.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from riskops.data.datasets import (
    ENTITY_ROLES,
    DatasetConfig,
    builtin_config,
    fdb_split,
    load_dataset,
    read_source,
    train_val_split,
    validate_mapping,
)
from riskops.features.contract import ENTITY_FEATURES, ENTITY_KEYS, TEXT_COLUMN
from riskops.settings import MODEL_NAME, PROJECT_ROOT

MODEL_META = "byod_model.json"
CALIBRATION_NAME = "calibration.json"
SINCE_LAST = "user_seconds_since_last_log"  # replaces user_last_event_epoch (raw epochs leak time)
_NEVER_SEEN_SECONDS = 30 * 24 * 3600.0
_DISTINCT_ROLE = {"users": "user", "devices": "device", "ips": "ip"}  # feature plural -> entity role
MIN_CATEGORY_COUNT = 5
MAX_VOCAB = 500


# --------------------------------------------------------------------------------------------
# Config in and out of the pipeline
# --------------------------------------------------------------------------------------------


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "dataset"


def registry_name(config: DatasetConfig) -> str:
    """The registry model name of a dataset's models (never the serving champion's name)."""
    return f"{MODEL_NAME}-{slug(config.name)}"


def resolve_config(dataset: str | Path) -> DatasetConfig:
    """A config path or built-in name, with a relative ``source.path`` made absolute.

    A relative path is taken relative to the config file first, then to the project root, then to
    the current directory, so pipeline steps (which run elsewhere) find the file.
    """
    p = Path(dataset)
    config = builtin_config(str(dataset))
    src = config.source
    if src.path and not Path(src.path).is_absolute():
        base = p.resolve().parent if p.suffix in (".yaml", ".yml") and p.exists() else PROJECT_ROOT
        for cand in (base / src.path, PROJECT_ROOT / src.path, Path.cwd() / src.path):
            if cand.exists():
                config = replace(config, source=replace(src, path=str(cand.resolve())))
                break
    return config


def config_text(config: DatasetConfig) -> str:
    """The config as one JSON string: what the pipeline passes to every step."""
    return json.dumps(config.to_dict(), sort_keys=True)


def parse_config(text: str) -> DatasetConfig:
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError("dataset_config must be a YAML/JSON mapping")
    return DatasetConfig.from_dict(data)


def check_source(config: DatasetConfig) -> None:
    """Read the source and check the mapping: fails fast with a MappingError naming the columns."""
    check_reserved(config)
    validate_mapping(read_source(config), config)


# --------------------------------------------------------------------------------------------
# Columns
# --------------------------------------------------------------------------------------------


def amount_column(config: DatasetConfig) -> str | None:
    """``amount`` from the config, else a numeric column called amount (any case), else None."""
    if config.amount:
        return config.amount
    return next((c for c in config.numeric if c.lower() == "amount"), None)


def mapped_columns(config: DatasetConfig) -> list[str]:
    """Every column with a role, in a fixed order (PII-only columns are hashed, then dropped)."""
    cols = [config.event_time.column, config.label, *config.entities.values(), *config.numeric]
    amount = amount_column(config)
    cols += [amount] if amount else []
    cols += [*config.categorical, *config.text]
    return list(dict.fromkeys(cols))


def aggregate_feature_names(config: DatasetConfig) -> list[str]:
    """The windowed aggregates the mapping supports (riskops.features.contract.ENTITY_FEATURES names).

    Only mapped entities; amount sums/means/stds only with an amount column; distinct counts only
    of mapped entities; refund rates and shipping-country counts never (no such roles). The raw
    ``user_last_event_epoch`` becomes ``user_seconds_since_last_log``.
    """
    amount = amount_column(config)
    out: list[str] = []
    for role in ENTITY_ROLES:
        if role not in config.entities:
            continue
        for f in ENTITY_FEATURES[role]:
            if "_refund_rate_" in f or ("_amount_" in f and not amount):
                continue
            if "_distinct_" in f:
                plural = f.split("_distinct_", 1)[1].rsplit("_", 1)[0]
                if _DISTINCT_ROLE.get(plural) not in config.entities:
                    continue
            out.append(SINCE_LAST if f == "user_last_event_epoch" else f)
    return out


def _all_derived() -> set[str]:
    return {f for fs in ENTITY_FEATURES.values() for f in fs} | {SINCE_LAST, TEXT_COLUMN}


def check_reserved(config: DatasetConfig) -> None:
    """Mapped columns must not carry the names of derived features (they would be overwritten)."""
    clash = sorted(set(mapped_columns(config)) & _all_derived())
    if clash:
        raise ValueError(
            f"dataset {config.name!r}: column(s) {clash} clash with derived feature names; rename them"
        )


def model_columns(config: DatasetConfig, frame: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """(numeric, categorical, text) model inputs: mapped numerics (+ the amount column) and the
    aggregates present in ``frame``; entity keys are never inputs (ids do not generalise)."""
    amount = amount_column(config)
    numeric = list(dict.fromkeys([*config.numeric, *([amount] if amount else [])]))
    numeric += [f for f in aggregate_feature_names(config) if f in frame.columns]
    return numeric, list(config.categorical), list(config.text)


# --------------------------------------------------------------------------------------------
# Ingest
# --------------------------------------------------------------------------------------------


def load_canonical(config: DatasetConfig, max_rows: int = 0) -> pd.DataFrame:
    """The mapped columns, PII hashed, sorted by event time (stable), newest ``max_rows`` kept."""
    check_reserved(config)
    df = load_dataset(config)  # MappingError first, naming every bad column
    df = df[mapped_columns(config)]
    order = np.argsort(pd.to_datetime(df[config.event_time.column], utc=True).to_numpy(), kind="stable")
    df = df.iloc[order].reset_index(drop=True)
    if max_rows and len(df) > max_rows:
        df = df.iloc[len(df) - int(max_rows) :].reset_index(drop=True)
    for c in config.text:
        df[c] = df[c].astype("string").fillna("").astype(str)
    for c in config.entities.values():
        if not pd.api.types.is_integer_dtype(df[c]):
            df[c] = df[c].astype("string").fillna("").astype(str)
    return df


# --------------------------------------------------------------------------------------------
# Validate: a GX suite generated from the mapping
# --------------------------------------------------------------------------------------------


def build_dataset_suite(config: DatasetConfig, validation):
    """GX ExpectationSuite for a canonical dataset frame (``validation``: ValidationConfig)."""
    from riskops.data.validation import _FLOAT_TYPES, _INT_TYPES, _import_gx, _time_window

    gx = _import_gx()
    import great_expectations.expectations as gxe

    exps: list = []

    def add(cls, rule: str, **kwargs) -> None:
        exps.append(cls(meta={"rule": rule}, **kwargs))

    big = float(np.finfo("float64").max)
    add(gxe.ExpectTableRowCountToBeBetween, "at least one row", min_value=1)
    add(gxe.ExpectTableColumnsToMatchSet, "every mapped column present", column_set=mapped_columns(config),
        exact_match=False)  # fmt: skip
    t = config.event_time.column
    start, end = _time_window(validation)
    add(gxe.ExpectColumnValuesToNotBeNull, "event time: no nulls", column=t)
    add(
        gxe.ExpectColumnValuesToBeOfType, "event time: timezone-aware timestamps", column=t, type_="Timestamp"
    )
    add(gxe.ExpectColumnValuesToBeBetween, f"event time: nothing later than {end.isoformat(timespec='seconds')}",
        column=t, min_value=start, max_value=end)  # fmt: skip
    y = config.label
    add(gxe.ExpectColumnValuesToNotBeNull, "label: no nulls", column=y)
    add(gxe.ExpectColumnValuesToBeInSet, "label must be 0 or 1", column=y, value_set=[0, 1])
    add(gxe.ExpectColumnMeanToBeBetween,
        f"fraud rate (mean of {y}) within [{validation.fraud_rate_min:g}, {validation.fraud_rate_max:g}]",
        column=y, min_value=validation.fraud_rate_min, max_value=validation.fraud_rate_max)  # fmt: skip
    amount = amount_column(config)
    for c in dict.fromkeys([*config.numeric, *([amount] if amount else [])]):
        add(
            gxe.ExpectColumnValuesToBeInTypeList, "numeric: must be numbers", column=c, type_list=_FLOAT_TYPES
        )
        add(gxe.ExpectColumnValuesToBeBetween, "numeric: must be finite (nulls allowed)", column=c,
            min_value=-big, max_value=big)  # fmt: skip
    for c in config.categorical:
        add(gxe.ExpectColumnValuesToNotBeNull, "categorical: no nulls", column=c)
        add(gxe.ExpectColumnValuesToBeOfType, "categorical: strings", column=c, type_="str")
    for c in config.text:
        add(gxe.ExpectColumnValuesToBeOfType, "text: strings", column=c, type_="str")
    for role, c in config.entities.items():
        add(gxe.ExpectColumnValuesToBeInTypeList, f"entity {role}: string or integer ids", column=c,
            type_list=["str", "object", "string", "StringDtype", *_INT_TYPES])  # fmt: skip
    return gx.ExpectationSuite(name=f"dataset_{slug(config.name)}", expectations=exps)


def validate_dataset(df: pd.DataFrame, config: DatasetConfig, validation, report_dir: Path):
    """Run the generated suite; write validation_report.{json,html}; return a ValidationResult."""
    from datetime import UTC, datetime

    from riskops.data.validation import (
        COLUMNS_EXPECTATION,
        REPORT_HTML,
        REPORT_JSON,
        ValidationResult,
        _describe,
        _examples,
        _exception_message,
        _failure,
        _jsonable,
        _run_gx,
        _time_window,
        render_html,
    )

    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    df = df.reset_index(drop=True)
    gx_result = _run_gx(df, build_dataset_suite(config, validation), None)
    missing = {c for c in mapped_columns(config) if c not in df.columns}
    expectations, failures = [], []
    for r in gx_result.results:
        cfg = r.expectation_config
        column = cfg.kwargs.get("column")
        res = dict(r.result or {})
        entry = {
            "expectation": cfg.type,
            "column": column,
            "success": bool(r.success),
            "unexpected_count": int(res.get("unexpected_count") or 0),
            "unexpected_percent": float(res.get("unexpected_percent") or 0.0),
            "examples": [] if r.success else _examples(df, cfg.type, res),
            "details": _describe(
                cfg.type,
                column,
                (cfg.meta or {}).get("rule", cfg.type),
                res,
                _exception_message(r.exception_info),
                missing,
            ),  # fmt: skip
            "observed_value": None
            if cfg.type == COLUMNS_EXPECTATION
            else _jsonable(res.get("observed_value")),
        }
        expectations.append(entry)
        if r.success or column in missing:
            continue
        if cfg.type == COLUMNS_EXPECTATION and missing:
            failures += [_failure(cfg.type, c, details=f"column '{c}' is missing") for c in sorted(missing)]
            continue
        failures.append(_failure(**{k: entry[k] for k in
                                    ("expectation", "column", "unexpected_count", "unexpected_percent",
                                     "examples", "details")}))  # fmt: skip
    stats = dict(gx_result.statistics)
    stats.update(rows=len(df), columns=len(df.columns))
    result = ValidationResult(bool(gx_result.success), stats, failures, expectations=expectations)
    result.report_json, result.report_html = report_dir / REPORT_JSON, report_dir / REPORT_HTML
    window = _time_window(validation)
    context = {
        "dataset": config.name,
        "window": [w.isoformat() if w is not None else None for w in window],
        "validated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    payload = {**result.to_dict(), "summary": result.summary(), **context}
    result.report_json.write_text(json.dumps(payload, indent=2, default=str))
    result.report_html.write_text(render_html(result, context))
    return result


# --------------------------------------------------------------------------------------------
# Features: windowed aggregates of the mapped entities, through Feast
# --------------------------------------------------------------------------------------------


def entity_events(df: pd.DataFrame, config: DatasetConfig) -> pd.DataFrame:
    """The frame riskops.features.aggregates reads: canonical key names, an amount (0 without one), row ids."""
    amount = amount_column(config)
    events = pd.DataFrame(
        {
            "transaction_id": [f"{i:012d}" for i in range(len(df))],  # string order = row order
            "event_timestamp": pd.to_datetime(df[config.event_time.column], utc=True).to_numpy(),
            "amount": df[amount].astype("float64").fillna(0.0).to_numpy() if amount else 0.0,
        },
        index=df.index,
    )
    for role, col in config.entities.items():
        events[ENTITY_KEYS[role]] = df[col].astype("string").fillna("").to_numpy()
    return events


def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def build_dataset_features(
    df: pd.DataFrame, config: DatasetConfig, repo_dir: Path | None
) -> tuple[pd.DataFrame, dict]:
    """``df`` + the supported aggregates (state just BEFORE each row, point in time, via Feast).

    No mapped entity: ``df`` unchanged and Feast is not touched. Otherwise the entity states are
    written as the Feast repo's offline sources, applied, joined back point in time
    (riskops.features.store.training_frame) and the mapped views are materialized online.
    """
    names = aggregate_feature_names(config)
    if not config.entities:
        return df.copy(), {"aggregates": [], "entities": [], "feast": False,
                           "note": "no entities mapped: no windowed aggregates"}  # fmt: skip
    from riskops.features import store as fs

    if repo_dir is None:
        raise ValueError("entities are mapped: a Feast repo folder is needed")
    t0 = time.perf_counter()
    events = entity_events(df, config)
    repo = fs.prepare_repo(Path(repo_dir))
    fs.write_feature_sources(repo, events)
    store = fs.apply(repo)
    joined = fs.training_frame(store, events)
    end = events["event_timestamp"].max()
    views = [fs.view_name(role) for role in ENTITY_ROLES if role in config.entities]
    store.materialize(start_date=fs._utc(end - fs.FEATURE_TTL), end_date=fs._utc(end), feature_views=views)
    out = df.copy()
    with np.errstate(all="ignore"):
        for f in names:
            if f == SINCE_LAST:
                last = joined["user_last_event_epoch"].to_numpy("float64")
                now = events["event_timestamp"].astype("int64").to_numpy() / 1e9
                since = np.clip(now - last, 0, None)
                out[f] = np.log1p(np.where(np.isnan(since), _NEVER_SEEN_SECONDS, since))
            elif "_amount_" in f:
                out[f] = _signed_log(joined[f].to_numpy("float64"))  # NaN (no history) stays NaN
            else:
                out[f] = joined[f].to_numpy("float64")
    info = {"aggregates": names, "entities": sorted(config.entities), "feast": True, "feature_views": views,
            "repo": str(repo), "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
    return out, info


# --------------------------------------------------------------------------------------------
# Split, model frames
# --------------------------------------------------------------------------------------------


def split_frame(df: pd.DataFrame, config: DatasetConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(fit, val, test) in time order: the config's split (FDB test cut, validation at the end of train)."""
    train, test = fdb_split(df, config)
    fit, val = train_val_split(train, config)
    return fit, val, test


def joined_text(frame: pd.DataFrame, text_columns: list[str]) -> list[str]:
    """One string per row for the text encoder: ``col: value | col: value``."""
    parts = [frame[c].astype(str).to_numpy(dtype=object) for c in text_columns]
    return [
        " | ".join(f"{c}: {v}" for c, v in zip(text_columns, vals, strict=True))
        for vals in zip(*parts, strict=True)
    ]


def text_model_frame(
    frame: pd.DataFrame, numeric: list[str], categorical: list[str], text: list[str]
) -> pd.DataFrame:
    out = {c: frame[c].to_numpy("float64") for c in numeric}
    out.update({c: frame[c].astype(str).to_numpy(dtype=object) for c in categorical})
    out[TEXT_COLUMN] = joined_text(frame, text)
    return pd.DataFrame(out, index=frame.index)


def vocabularies(frame: pd.DataFrame, categorical: list[str]) -> dict[str, tuple[str, ...]]:
    """Per categorical column: the training values seen >= MIN_CATEGORY_COUNT times (top MAX_VOCAB)."""
    out = {}
    for c in categorical:
        counts = frame[c].astype(str).value_counts()
        out[c] = tuple(sorted(counts[counts >= MIN_CATEGORY_COUNT].index[:MAX_VOCAB].tolist()))
    return out


def _labels(frame: pd.DataFrame, config: DatasetConfig) -> np.ndarray:
    return frame[config.label].to_numpy(dtype="int64")


# --------------------------------------------------------------------------------------------
# Train
# --------------------------------------------------------------------------------------------


def train_dataset_model(
    df: pd.DataFrame,
    config: DatasetConfig,
    out_dir: Path,
    *,
    encoder: str = "minilm",
    epochs: int = 2,
    max_steps: int = 0,
    finetune_layers: int = 2,
    max_train_rows: int = 6000,
    ft_max_epochs: int = 30,
    ft_patience: int = 4,
    max_train_seconds: float = 0.0,
    seed: int = 7,
) -> dict:
    """Train on the fit part, stop early and calibrate on validation; write the model folder.

    Text mapped: the text + tabular transformer (``max_train_rows``: all frauds + a legit sample).
    No text: the FT-Transformer (``max_train_rows``: all frauds + a fresh legit sample per epoch).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fit, val, _test = split_frame(df, config)
    y_fit, y_val = _labels(fit, config), _labels(val, config)
    for part, y in (("training", y_fit), ("validation", y_val)):
        if y.sum() == 0 or y.sum() == len(y):
            raise ValueError(
                f"dataset {config.name!r}: the {part} period has {int(y.sum())} frauds in {len(y)} rows; "
                "both classes are needed (use more rows or change split.time_fraction / val_fraction)"
            )
    numeric, categorical, text = model_columns(config, df)
    meta = {"dataset": config.to_dict(), "numeric": numeric, "categorical": categorical, "text": text,
            "label": config.label}  # fmt: skip
    t0 = time.perf_counter()
    if text:
        from riskops.training.finetune import TrainConfig, train_model

        vocabs = vocabularies(fit, categorical)
        tc = TrainConfig(
            epochs=epochs, encoder=encoder, max_steps=max_steps or None, finetune_layers=finetune_layers,
            seed=seed, max_train_rows=max_train_rows or None, progress=False, max_length=64,
            numeric_features=tuple(numeric), categorical_vocabs=vocabs,
        )  # fmt: skip
        result = train_model(
            text_model_frame(fit, numeric, categorical, text),
            text_model_frame(val, numeric, categorical, text),
            y_fit, y_val, tc, out_dir,
        )  # fmt: skip
        meta.update(kind="text_tabular", encoder=encoder)
        info = {"val_pr_auc": result.val_pr_auc, "best_epoch": result.best_epoch, "n_train": result.n_train,
                "calibration": result.calibration.get("method", "temperature")}  # fmt: skip
    else:
        from riskops.training.calibration import choose_calibrator
        from riskops.training.tabular import FTTransformerConfig, fit_ft_transformer

        n_pos = int(y_fit.sum())
        legit = max(max_train_rows - n_pos, 1000) if max_train_rows else None
        cfg = FTTransformerConfig(max_epochs=ft_max_epochs, patience=ft_patience, legit_per_epoch=legit,
                                  max_train_seconds=max_train_seconds or None, seed=seed, progress=False)  # fmt: skip
        cols = numeric + categorical
        model = fit_ft_transformer(fit[cols], y_fit, val[cols], y_val, cfg, numeric, categorical)
        model.save(out_dir)
        z_val = model.predict_logits(val[cols])
        # monotone calibrators only: the ranking (ROC/PR) of the raw model is kept exactly
        choice = choose_calibrator(z_val, y_val, scale="score", candidates=("temperature", "platt"))
        (out_dir / CALIBRATION_NAME).write_text(json.dumps(choice.to_dict(), indent=2))
        meta.update(kind="ft_transformer")
        info = {"val_pr_auc": model.info["best_val_pr_auc"], "best_epoch": model.info["best_epoch"],
                "epochs_run": model.info["epochs_run"], "n_train": int(len(fit)),
                "legit_rows_per_epoch": model.info["legit_rows_per_epoch"], "calibration": choice.name}  # fmt: skip
    info.update(kind=meta["kind"], n_val=int(len(val)), train_seconds=round(time.perf_counter() - t0, 2),
                n_numeric=len(numeric), n_categorical=len(categorical), n_text=len(text))  # fmt: skip
    meta["training"] = info
    (out_dir / MODEL_META).write_text(json.dumps(meta, indent=2, default=str))
    return info


class DatasetScorer:
    """Scores canonical dataset rows with a model folder written by :func:`train_dataset_model`."""

    def __init__(self, model_dir: Path | str):
        d = Path(model_dir)
        self.meta = json.loads((d / MODEL_META).read_text())
        self.kind = self.meta["kind"]
        self.numeric, self.categorical, self.text = (
            self.meta["numeric"],
            self.meta["categorical"],
            self.meta["text"],
        )
        if self.kind == "ft_transformer":
            from riskops.training.calibration import TemperatureCalibrator
            from riskops.training.tabular import FittedTabularModel

            self.model = FittedTabularModel.load(d)
            params = json.loads((d / CALIBRATION_NAME).read_text())["params"]
            self.calibrator = TemperatureCalibrator(params["temperature"], params["bias"], params["kind"])
        else:
            from riskops.training.model import RiskScorer

            self.model = RiskScorer.load(d, device="cpu")

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if self.kind == "ft_transformer":
            z = self.model.predict_logits(frame[self.numeric + self.categorical])
            return self.calibrator.transform_logits(z)
        return self.model.predict_proba(text_model_frame(frame, self.numeric, self.categorical, self.text))


# --------------------------------------------------------------------------------------------
# Baselines: LightGBM and logistic regression on the same numeric + categorical inputs
# --------------------------------------------------------------------------------------------

LGB_GRID: tuple[dict, ...] = (
    {"num_leaves": 15, "learning_rate": 0.1, "min_data_in_leaf": 20},
    {"num_leaves": 63, "learning_rate": 0.05, "min_data_in_leaf": 200},
)


def _lgb_frame(X: pd.DataFrame, numeric: list[str], categorical: list[str], vocabs: dict) -> pd.DataFrame:
    out = X[numeric].astype("float64").copy()
    for c in categorical:
        out[c] = pd.Categorical(X[c].astype(str), categories=list(vocabs[c]))
    return out


def _ap(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def fit_lightgbm(fit, y_fit, val, y_val, numeric, categorical, grid=LGB_GRID, rounds=1000, patience=50):
    """A small grid, each point early-stopped on validation PR-AUC; the best point by validation PR-AUC."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see riskops.training.baselines
    import lightgbm as lgb

    from riskops.training.baselines import NUM_THREADS

    vocabs = vocabularies(fit, categorical)
    xf, xv = _lgb_frame(fit, numeric, categorical, vocabs), _lgb_frame(val, numeric, categorical, vocabs)
    base = {"objective": "binary", "metric": "average_precision", "feature_fraction": 0.8, "bagging_fraction": 0.8,
            "bagging_freq": 1, "lambda_l2": 1.0, "num_threads": NUM_THREADS, "seed": 0, "deterministic": True,
            "force_row_wise": True, "verbosity": -1}  # fmt: skip
    best = (-1.0, None, None)
    tried = []
    for params in grid:
        dtrain = lgb.Dataset(xf, label=y_fit, categorical_feature=categorical or "auto", free_raw_data=False)
        dval = lgb.Dataset(xv, label=y_val, reference=dtrain)
        booster = lgb.train({**base, **params}, dtrain, rounds, valid_sets=[dval], valid_names=["val"],
                            callbacks=[lgb.early_stopping(patience, first_metric_only=True, verbose=False)])  # fmt: skip
        it = booster.best_iteration or booster.current_iteration()
        ap = _ap(y_val, booster.predict(xv, num_iteration=it))
        tried.append({**params, "rounds": int(it), "val_pr_auc": ap})
        if ap > best[0] or best[1] is None:
            best = (ap, booster, it)

    def score(X: pd.DataFrame) -> np.ndarray:
        return np.asarray(best[1].predict(_lgb_frame(X, numeric, categorical, vocabs), num_iteration=best[2]),
                          "float64")  # fmt: skip

    return score, tried


def fit_logistic_regression(fit, y_fit, val, y_val, numeric, categorical, Cs=(0.01, 0.1, 1.0)):
    """Median-imputed standardised numerics + one-hot categoricals, balanced classes, C by validation PR-AUC."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    best, tried = (-1.0, None), []
    for C in Cs:
        parts = [("num", Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                                   ("scale", StandardScaler())]), numeric)] if numeric else []  # fmt: skip
        if categorical:
            parts.append(("cat", OneHotEncoder(handle_unknown="ignore", min_frequency=MIN_CATEGORY_COUNT),
                          categorical))  # fmt: skip
        model = Pipeline([("prep", ColumnTransformer(parts)),
                          ("clf", LogisticRegression(C=C, class_weight="balanced", max_iter=2000))])  # fmt: skip
        model.fit(_lr_frame(fit, numeric, categorical), y_fit)
        ap = _ap(y_val, model.predict_proba(_lr_frame(val, numeric, categorical))[:, 1])
        tried.append({"C": C, "val_pr_auc": ap})
        if ap > best[0] or best[1] is None:
            best = (ap, model)
    model = best[1]
    return (lambda X: model.predict_proba(_lr_frame(X, numeric, categorical))[:, 1]), tried


def _lr_frame(X: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    out = X[numeric].astype("float64").replace([np.inf, -np.inf], np.nan)
    for c in categorical:
        out[c] = X[c].astype(str)
    return out


# --------------------------------------------------------------------------------------------
# Evaluate
# --------------------------------------------------------------------------------------------


def evaluate_dataset(
    df: pd.DataFrame,
    config: DatasetConfig,
    model_dir: Path,
    out_dir: Path,
    review_budget: float = 0.01,
    target_review_rate: float = 0.02,
    target_block_precision: float = 0.9,
):
    """The model vs LightGBM and logistic regression on the config's test period.

    Same split as training; baselines fit on the fit part (LightGBM early-stopped on validation,
    C chosen on validation); the decision policy is set on validation. Returns the
    riskops.training.evaluate.EvaluationResult (evaluation.json, metrics table, PR curve, histogram).
    """
    from riskops.training.evaluate import LIGHTGBM, RATIO_KEY, TRANSFORMER, evaluate_models, metrics_table
    from riskops.training.metrics import policy_report, thresholds_for_policy

    fit, val, test = split_frame(df, config)
    y_fit, y_val, y_test = _labels(fit, config), _labels(val, config), _labels(test, config)
    scorer = DatasetScorer(model_dir)
    numeric, categorical = scorer.numeric, scorer.categorical
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    val_scores, test_scores = scorer.predict_proba(val), scorer.predict_proba(test)
    timings[f"{TRANSFORMER}_scoring"] = round(time.perf_counter() - t0, 2)
    scores = {TRANSFORMER: test_scores}
    tuning: dict[str, list] = {}
    for name, fitter in ((LIGHTGBM, fit_lightgbm), ("logistic_regression", fit_logistic_regression)):
        t0 = time.perf_counter()
        score_fn, tuning[name] = fitter(fit, y_fit, val, y_val, numeric, categorical)
        scores[name] = score_fn(test)
        timings[name] = round(time.perf_counter() - t0, 2)

    result = evaluate_models(None, y_test, scores, Path(out_dir), review_budget)
    models = result.document["models"]
    kind = scorer.kind
    models[TRANSFORMER]["note"] = (
        "FT-Transformer (riskops/training/tabular.py, no text columns mapped), Platt/temperature-calibrated on validation"
        if kind == "ft_transformer"
        else f"text + tabular transformer ({scorer.meta.get('encoder')} encoder on {', '.join(scorer.text)}), "
        "calibrated on validation"
    )
    lgb_best = max(tuning[LIGHTGBM], key=lambda r: -1 if math.isnan(r["val_pr_auc"]) else r["val_pr_auc"])
    models[LIGHTGBM]["note"] = f"grid of {len(tuning[LIGHTGBM])}, chosen on validation: {lgb_best}"
    result.table = metrics_table(models, review_budget, result.document.get(RATIO_KEY))
    result.files["table"].write_text(result.table)
    thresholds = thresholds_for_policy(y_val, val_scores, target_review_rate, target_block_precision)
    ts = pd.to_datetime(df[config.event_time.column], utc=True)
    result.document.update(
        {
            "dataset": config.name,
            "model_kind": kind,
            "policy_thresholds": thresholds,
            "policy_targets": {
                "review_rate": target_review_rate,
                "block_precision": target_block_precision,
                "set_on": "validation",
            },  # fmt: skip
            "policy_validation": policy_report(y_val, val_scores, thresholds),
            "policy_test": policy_report(y_test, test_scores, thresholds),
            "data": {
                "start": str(ts.min()),
                "end": str(ts.max()),
                "rows": len(df),
                "train_rows": len(fit),
                "val_rows": len(val),
                "test_rows": len(test),
                "train_frauds": int(y_fit.sum()),
                "val_frauds": int(y_val.sum()),
                "test_frauds": int(y_test.sum()),
                "fraud_rate": float(df[config.label].mean()),
                "test_start": str(pd.to_datetime(test[config.event_time.column], utc=True).min()),
            },  # fmt: skip
            "split": {
                "time_fraction": config.split.time_fraction,
                "val_fraction": config.split.val_fraction,
                "protocol": "sorted by event time; first time_fraction train (last val_fraction of it "
                "validation), the rest test",
            },  # fmt: skip
            "features": {
                "numeric": numeric,
                "categorical": categorical,
                "text": scorer.text,
                "aggregates": [f for f in aggregate_feature_names(config) if f in numeric],
            },  # fmt: skip
            "baseline_tuning": tuning,
            "timings_seconds": timings,
        }
    )
    result.write_json()
    return result


# --------------------------------------------------------------------------------------------
# Register
# --------------------------------------------------------------------------------------------


def register_dataset_model(
    model_dir: Path, evaluation: dict, registry_root: Path, config: DatasetConfig,
    promotion: str = "if-none", git_commit: str = "",
):  # fmt: skip
    """A registry version under ``risk-model-<dataset>`` with metrics, policy and model card."""
    from riskops.registry.register import PROMOTION_POLICIES, RegistrationResult, model_card
    from riskops.registry.store import CHALLENGER, CHAMPION, ModelRegistry

    if promotion not in PROMOTION_POLICIES:
        raise ValueError(f"promotion must be one of {PROMOTION_POLICIES}, got {promotion!r}")
    model_dir = Path(model_dir)
    if evaluation.get("policy_thresholds"):
        (model_dir / "policy.json").write_text(json.dumps(evaluation["policy_thresholds"], indent=2))
    (model_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=2, default=float))
    registry = ModelRegistry(registry_root, name=registry_name(config))
    champion = registry.champion()
    mv = registry.register(
        model_dir,
        metrics=evaluation.get("models", {}).get("transformer", {}),
        tags={
            "git_commit": git_commit,
            "data": evaluation.get("data", {}),
            "dataset": config.name,
            "model_kind": evaluation.get("model_kind"),
        },  # fmt: skip
    )
    card = model_card(evaluation, evaluation.get("data", {}), git_commit, mv.version)
    card = card.replace("# risk-model", f"# {registry.name}", 1)
    card += f"\nDataset: `{config.name}`; model: {evaluation.get('model_kind')}.\n"
    (mv.path / "MODEL_CARD.md").write_text(card)
    if champion is None and promotion != "never":
        alias, reason = CHAMPION, "first model of this dataset in the registry"
    elif promotion == "always":
        alias, reason = CHAMPION, "promotion policy 'always'"
    else:
        alias = CHALLENGER
        reason = f"champion {champion.version} kept" if champion else "promotion policy 'never'"
    registry.set_alias(alias, mv.version)
    return RegistrationResult(mv.version, str(mv.path), alias, champion.version if champion else None, reason)
