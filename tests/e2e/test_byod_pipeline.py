"""Bring your own data through the pipeline: a user's own CSV with its own column names.

The end-to-end test runs the real kfp.local pipeline (GX, Feast with SQLite, training, evaluation,
registry); the others exercise the steps' plain functions on small frames.
"""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from support.data import shop_config, shop_orders

from riskops.byod.config import (
    SINCE_LAST,
    aggregate_feature_names,
    check_source,
    mapped_columns,
    model_columns,
    resolve_config,
)
from riskops.byod.features import build_dataset_features
from riskops.byod.ingest import load_canonical
from riskops.byod.train import MODEL_META, DatasetScorer, joined_text, train_dataset_model
from riskops.byod.validate import validate_dataset
from riskops.data.datasets import DatasetConfig, MappingError
from riskops.features.sequences import column_name, has_sequence_columns


def write_config(tmp_path, cfg: dict, name: str = "my-shop.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture
def shop_csv(tmp_path):
    path = tmp_path / "orders.csv"
    shop_orders().to_csv(path, index=False)
    return path


# ------------------------------------------------------------------------------------- mapping


def test_missing_or_mistyped_mapped_columns_fail_fast_naming_them(tmp_path, shop_csv, capsys):
    from cli.main import main

    bad = shop_config(shop_csv, numeric=["order_total", "pay_method"], categorical=["country", "coupon_code"])
    path = write_config(tmp_path, bad, "bad.yaml")
    started = pd.Timestamp.now()
    assert main(["pipeline", "run", "--dataset", str(path), "--encoder", "tiny"]) == 2
    out = capsys.readouterr().out
    assert "'pay_method' (numeric) must be a number column, got object" in out
    assert "'coupon_code' (categorical) is missing from the data" in out
    assert (pd.Timestamp.now() - started).total_seconds() < 30  # before any pipeline step
    with pytest.raises(MappingError, match="coupon_code"):
        load_canonical(resolve_config(path))  # what the ingest step runs
    amount = shop_config(shop_csv, amount="pay_method", numeric=["order_total"], categorical=["country"])
    with pytest.raises(MappingError, match=r"'pay_method' \(amount\) must be a number column"):
        check_source(DatasetConfig.from_dict(amount))


def test_ingest_keeps_mapped_columns_hashes_pii_sorts_and_caps(shop_csv):
    config = resolve_config(write_config(shop_csv.parent, shop_config(shop_csv)))
    df = load_canonical(config, max_rows=1000)
    assert len(df) == 1000 and "email" not in df.columns  # PII-only column hashed, then dropped
    assert list(df.columns) == mapped_columns(config)
    ts = df["order_ts"]
    assert str(ts.dtype) == "datetime64[ns, UTC]" and ts.is_monotonic_increasing
    assert ts.min() >= pd.to_datetime(shop_orders()["order_ts"], utc=True).sort_values().iloc[-1000]
    assert not df["client_ip"].str.startswith("10.0.").any()  # keyed hash, not the raw IP


# ------------------------------------------------------------------------------------- features


def test_aggregates_follow_the_mapping(shop_csv):
    full = DatasetConfig.from_dict(shop_config(shop_csv))
    names = aggregate_feature_names(full)
    assert "user_amount_sum_24h" in names and "user_distinct_devices_24h" in names
    assert SINCE_LAST in names and "user_last_event_epoch" not in names
    assert not [n for n in names if n.startswith("merchant_") or "refund" in n or "shipping" in n]
    user_only = DatasetConfig.from_dict(shop_config(shop_csv, entities={"user": "customer"}, amount=None,
                                                    numeric=["items"]))  # fmt: skip
    names = aggregate_feature_names(user_only)
    assert names and all(n.startswith("user_") for n in names)
    assert not [n for n in names if "amount" in n or "distinct" in n]


def test_no_entities_means_no_aggregates_and_no_feast(tmp_path, shop_csv):
    config = DatasetConfig.from_dict(shop_config(shop_csv, entities={}, pii=["email"]))
    assert aggregate_feature_names(config) == []
    df = load_canonical(config)
    repo = tmp_path / "feature_repo"
    out, info = build_dataset_features(df, config, repo)
    assert info["aggregates"] == [] and info["feast"] is False
    assert list(out.columns) == list(df.columns) and not repo.exists()
    numeric, categorical, text = model_columns(config, out)
    assert numeric == ["order_total", "items"] and categorical == ["pay_method", "country"]


# ------------------------------------------------------------------------------------- model


def test_without_text_the_ft_transformer_is_trained_calibrated_and_scored(tmp_path, shop_csv):
    config = DatasetConfig.from_dict(shop_config(shop_csv, entities={}, text=[], pii=[]))
    df = load_canonical(config)
    info = train_dataset_model(df, config, tmp_path / "model", ft_max_epochs=3, max_train_rows=1500)
    assert info["kind"] == "ft_transformer" and info["calibration"] in ("temperature", "platt")
    meta = json.loads((tmp_path / "model" / MODEL_META).read_text())
    assert meta["text"] == [] and meta["numeric"] == ["order_total", "items"]
    assert (tmp_path / "model" / "tabular_model.json").exists()
    scorer = DatasetScorer(tmp_path / "model")
    p = scorer.predict_proba(df.tail(300))
    assert p.shape == (300,) and np.all((p >= 0) & (p <= 1))
    # the raw ranking is kept: calibration is monotone
    z = scorer.model.predict_logits(df.tail(300)[meta["numeric"] + meta["categorical"]])
    assert np.array_equal(np.argsort(z, kind="stable"), np.argsort(p, kind="stable"))


def test_a_mapped_user_gives_the_fused_model_its_histories_even_without_text(tmp_path, shop_csv):
    config = DatasetConfig.from_dict(shop_config(shop_csv, text=[], pii=[]))
    df, info = build_dataset_features(load_canonical(config), config, tmp_path / "repo")
    assert info["sequences"] and has_sequence_columns(df.columns)
    # the shop's customers come back: most rows have at least one earlier event of their user
    assert (df[column_name(0, "relation")] > 0).mean() > 0.5
    trained = train_dataset_model(df, config, tmp_path / "model", encoder="tiny", epochs=1, max_steps=10,
                                  max_train_rows=800)  # fmt: skip
    assert trained["kind"] == "fused"
    scorer = DatasetScorer(tmp_path / "model")
    assert scorer.model.config.sequence
    p = scorer.predict_proba(df.tail(200))
    assert p.shape == (200,) and np.all((p >= 0) & (p <= 1))


def test_with_text_the_text_tabular_transformer_uses_the_dataset_columns(tmp_path, shop_csv):
    config = DatasetConfig.from_dict(shop_config(shop_csv, entities={}, pii=[]))
    df = load_canonical(config)
    info = train_dataset_model(df, config, tmp_path / "model", encoder="tiny", epochs=1, max_steps=10,
                                    max_train_rows=800)  # fmt: skip
    assert info["kind"] == "text_tabular"
    model_config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert model_config["numeric_features"] == ["order_total", "items"]
    assert set(model_config["categorical_vocabs"]) == {"pay_method", "country"}
    assert "crypto" in model_config["categorical_vocabs"]["pay_method"]
    p = DatasetScorer(tmp_path / "model").predict_proba(df.tail(200))
    assert p.shape == (200,) and np.all((p >= 0) & (p <= 1))
    assert joined_text(df.head(1), ["item_title"])[0].startswith("item_title: ")


def test_dataset_pipeline_yaml_is_checked_in_and_strict(tmp_path):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    from pipelines.training_pipeline import PROFILES, compile_dataset_pipeline, dataset_compiled_path

    for profile in PROFILES:
        fresh = list(
            yaml.safe_load_all(compile_dataset_pipeline(profile, tmp_path / f"{profile}.yaml").read_text())
        )
        checked_in = list(yaml.safe_load_all(dataset_compiled_path(profile).read_text()))
        assert fresh == checked_in, (
            f"{dataset_compiled_path(profile).name} is stale: run `riskops pipeline compile`"
        )
        spec = pipeline_spec_pb2.PipelineSpec()
        json_format.ParseDict(checked_in[0], spec)
        tasks = spec.root.dag.tasks
        assert "validate-dataset-op" in tasks["dataset-features-op"].dependent_tasks
        assert "dataset_config" in spec.root.input_definitions.parameters


def test_generated_gx_suite_names_bad_columns_and_rows(tmp_path, shop_csv):
    from riskops.data.validation import ValidationConfig

    config = DatasetConfig.from_dict(shop_config(shop_csv))
    df = load_canonical(config)
    ok = validate_dataset(df, config, ValidationConfig(fraud_rate_min=0.0001, fraud_rate_max=0.5), tmp_path)
    assert ok.success, ok.summary()
    bad = df.copy()
    bad.loc[3, "order_total"] = np.inf
    bad.loc[[5, 8], "chargeback"] = 2
    bad = bad.drop(columns=["country"])
    result = validate_dataset(bad, config, ValidationConfig(fraud_rate_min=0.0001, fraud_rate_max=0.5),
                                   tmp_path)  # fmt: skip
    assert not result.success
    failed = {(f["expectation"], f["column"]): f for f in result.failures}
    assert failed[("expect_column_values_to_be_between", "order_total")]["unexpected_count"] == 1
    assert failed[("expect_column_values_to_be_in_set", "chargeback")]["examples"] == [2]
    assert ("expect_table_columns_to_match_set", "country") in failed
    assert "chargeback" in result.summary() and (tmp_path / "validation_report.html").exists()


# ------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_own_csv_through_the_real_pipeline_registers_an_evaluated_version(riskops_home, tmp_path, shop_csv):
    from pipelines.dataset_runner import run_dataset_local
    from riskops.registry.store import ModelRegistry
    from riskops.settings import paths

    path = write_config(tmp_path, shop_config("orders.csv"))  # relative to the config file
    home = paths()
    run = run_dataset_local(home, path, encoder="tiny", epochs=1, max_steps=40, max_train_rows=1500)

    reg = run.registration
    assert reg["model_name"] == "risk-model-my-shop" and reg["version"] == "v0001"
    assert reg["alias"] == "champion"
    registry = ModelRegistry(home.registry, name="risk-model-my-shop")
    mv = registry.champion()
    for name in ("model.safetensors", "config.json", "byod_model.json", "policy.json", "evaluation.json",
                 "MODEL_CARD.md"):  # fmt: skip
        assert (mv.path / name).exists(), name
    evaluation = json.loads((mv.path / "evaluation.json").read_text())
    assert evaluation["model_kind"] == "fused"  # the config maps a user: each row's recent events are read
    assert {"transformer", "lightgbm", "logistic_regression"} == set(evaluation["models"])
    for m in evaluation["models"].values():
        assert 0.0 <= m["roc_auc"] <= 1.0
    assert evaluation["models"]["lightgbm"]["roc_auc"] > 0.8  # the planted signal is learnable
    aggregates = evaluation["features"]["aggregates"]
    assert "user_txn_count_1h" in aggregates and "device_distinct_users_24h" in aggregates
    assert not [a for a in aggregates if a.startswith("merchant_")]  # no merchant mapped
    assert evaluation["data"]["test_rows"] == 750 and evaluation["data"]["train_rows"] == 1688
    # the serving champion of the built-in schema is untouched, the dataset has its own Feast repo
    assert ModelRegistry(home.registry).champion() is None
    assert (home.root / "datasets" / "my-shop" / "feature_repo" / "data" / "online_store.db").exists()
    assert (run.reports_dir / "validation_report.html").exists()
