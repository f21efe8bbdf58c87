"""Baselines (riskops.training.baselines) and the evaluation step (riskops.training.evaluate)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score
from support.data import FakeScorer, synthetic_transactions

from components.evaluate import evaluate_model_op
from riskops.data.splits import time_split
from riskops.features.contract import build_model_frame
from riskops.training import baselines as B
from riskops.training.evaluate import (
    RATIO_KEY,
    evaluate_models,
    run_evaluation,
)
from riskops.training.evaluation_report import render_html
from riskops.training.metrics import policy_report
from riskops.training.params import TRAINING

METRIC_KEYS = (
    "roc_auc",
    "pr_auc",
    "recall_at_1pct_fpr",
    "precision_at_review_budget",
    "ece",
    "n",
    "positives",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def with_prior_entity_state(transactions: pd.DataFrame) -> pd.DataFrame:
    """Transactions + entity features as training sees them: each entity's state after its
    PREVIOUS event (own event excluded), the point-in-time semantics of the Feast join, computed
    here with riskops.features.aggregates directly so these tests need no feature store."""
    from riskops.features.aggregates import compute_entity_features
    from riskops.features.contract import ENTITY_FEATURES, ENTITY_KEYS

    out = transactions.copy()
    for entity, states in compute_entity_features(transactions).items():
        names = list(ENTITY_FEATURES[entity])
        previous = states.groupby(ENTITY_KEYS[entity], sort=False)[names].shift(1)  # time order
        for f in names:
            out[f] = previous[f].reindex(out.index)
    return out


@pytest.fixture(scope="module")
def split_frames():
    """Generated traffic (riskops.data.generator: fraud typologies planted among legit look-alikes)."""
    from riskops.data.generator import GeneratorConfig, generate
    from riskops.pii import hash_pii

    raw = generate(GeneratorConfig(rows=8000, seed=1, fraud_rate=0.03))
    parts = time_split(with_prior_entity_state(hash_pii(raw)), 0.25, 0.15)
    frames = [build_model_frame(p) for p in parts]
    labels = [p["is_fraud"].astype(int).to_numpy() for p in parts]
    assert labels[2].sum() >= 20, "too few test frauds for a stable AUC"
    return frames, labels


@pytest.fixture(scope="module")
def fitted(split_frames):
    """Each baseline fitted once on the generated training period."""
    (tr, va, _), (ytr, yva, _) = split_frames
    return {
        "rules": B.RulesEngine().fit(tr, ytr),
        "logistic_regression": B.fit_logistic_regression(tr, ytr),
        "lightgbm": B.fit_lightgbm(tr, ytr, va, yva),
        "isolation_forest": B.fit_isolation_forest(tr, ytr),
    }


# ------------------------------------------------------------------------------------ baselines


def test_every_baseline_learns_the_planted_signal(split_frames, fitted):
    (_, _, te), (_, _, yte) = split_frames
    assert set(fitted) == set(B.BASELINE_NAMES)
    for name, model in fitted.items():
        s = model.predict_scores(te)
        assert s.shape == (len(te),) and np.isfinite(s).all(), name
        assert roc_auc_score(yte, s) > 0.8, name


def test_baselines_do_not_read_the_text(split_frames, fitted):
    (_, _, te), _ = split_frames
    other_text = te.assign(text="gift card bundle x50 | crypto | shipping NG")
    for name, model in fitted.items():
        np.testing.assert_array_equal(
            model.predict_scores(te), model.predict_scores(other_text), err_msg=name
        )


def test_lightgbm_is_deterministic_and_stops_early(split_frames, fitted):
    (tr, va, te), (ytr, yva, _) = split_frames
    assert B.LIGHTGBM_PARAMS["num_threads"] == B.NUM_THREADS <= 2
    first = fitted["lightgbm"]
    assert 0 < first.best_iteration < 1000
    again = B.fit_lightgbm(tr, ytr, va, yva)
    np.testing.assert_array_equal(first.predict_scores(te), again.predict_scores(te))
    # without a validation set, the last 15% of the training period is carved out for early stopping
    carved = B.fit_lightgbm(tr, ytr, num_boost_round=30)
    assert carved.predict_scores(te).shape == (len(te),)


def test_unknown_categories_do_not_break_scoring(split_frames, fitted):
    (_, _, te), _ = split_frames
    odd = te.head(20).assign(payment_method="carrier_billing", billing_country="ZZ")
    for name, model in fitted.items():
        assert np.isfinite(model.predict_scores(odd)).all(), name


def test_isolation_forest_scores_fraud_as_more_anomalous(split_frames, fitted):
    (_, _, te), (_, _, yte) = split_frames
    s = fitted["isolation_forest"].predict_scores(te)
    assert s[yte == 1].mean() > s[yte == 0].mean()
    assert ((s > 0) & (s <= 1)).all()


def test_missing_model_columns_are_reported():
    with pytest.raises(ValueError, match="missing columns"):
        B.RulesEngine().predict_scores(pd.DataFrame({"amount_log": [1.0]}))


# ------------------------------------------------------------------------------- rules engine


def _txn(**overrides) -> dict:
    """One clean transaction of a returning customer on a known device (fires no rule)."""
    ts = pd.Timestamp("2024-03-05 14:00", tz="UTC")
    row = {
        "transaction_id": "t1",
        "event_timestamp": ts,
        "amount": 50.0,
        "quantity": 1,
        "account_age_days": 400,
        "is_refund": False,
        "billing_country": "US",
        "shipping_country": "US",
        "currency": "USD",
        "payment_method": "credit_card",
        "channel": "web",
        "product_category": "books",
        "product_title": "A novel",
        "merchant_category": "books",
        "user_amount_mean_30d": 50.0,
        "user_amount_std_30d": 10.0,
        "user_last_event_epoch": ts.timestamp() - 86400,
        "user_txn_count_1h": 0,
        "user_txn_count_24h": 1,
        "user_refund_rate_30d": 0.0,
        "device_txn_count_1h": 0,
        "device_txn_count_24h": 2,
        "device_distinct_users_7d": 1,
        "device_distinct_users_24h": 1,
        "ip_txn_count_1h": 0,
        "ip_txn_count_24h": 2,
        "ip_distinct_users_24h": 1,
        "merchant_amount_mean_30d": 60.0,
        "merchant_amount_std_30d": 40.0,
    }
    row.update(overrides)
    return row


RULE_CASES = {
    "amount_far_above_user_norm": {"amount": 500.0, "merchant_amount_mean_30d": 400.0, "merchant_amount_std_30d": 200.0},
    "returning_user_new_device_and_ip": {"device_txn_count_24h": 0, "device_distinct_users_7d": 0, "ip_txn_count_24h": 0},
    "country_mismatch": {"shipping_country": "NG"},
    "user_velocity": {"user_txn_count_1h": 4},
    "device_or_ip_velocity": {"device_txn_count_1h": 3},
    "new_account_high_amount": {
        "account_age_days": 2, "amount": 800.0, "user_last_event_epoch": float("nan"),
        "user_amount_mean_30d": float("nan"), "user_amount_std_30d": float("nan"),
        "merchant_amount_mean_30d": 1000.0, "merchant_amount_std_30d": 500.0,
    },
    "tiny_amount": {"amount": 3.0},
    "many_users_per_device_or_ip": {"device_distinct_users_24h": 4},
    "refund_abuse": {"is_refund": True, "user_refund_rate_30d": 0.5},
    "price_far_above_merchant_norm": {"amount": 300.0, "user_amount_mean_30d": 300.0, "merchant_amount_std_30d": 10.0},
    "high_risk_payment_method": {"payment_method": "gift_card"},
    "high_risk_category": {"product_category": "jewelry"},
}  # fmt: skip


def test_every_documented_rule_has_a_case():
    assert set(RULE_CASES) == {r.name for r in B.DEFAULT_RULES}
    assert all(r.weight > 0 and r.description for r in B.DEFAULT_RULES)
    table = B.RulesEngine().describe()
    assert all(r.name in table for r in B.DEFAULT_RULES)


def test_rules_fire_exactly_when_documented():
    engine = B.RulesEngine()
    rows = [_txn()] + [_txn(transaction_id=name, **over) for name, over in RULE_CASES.items()]
    frame = build_model_frame(pd.DataFrame(rows))
    fired = engine.fired(frame)
    scores = engine.predict_scores(frame)
    total = sum(r.weight for r in engine.rules)
    weights = {r.name: r.weight for r in engine.rules}

    assert not fired.iloc[0].any(), f"clean row fired {list(fired.columns[fired.iloc[0]])}"
    assert scores[0] == 0.0
    for i, name in enumerate(RULE_CASES, start=1):
        assert list(fired.columns[fired.iloc[i]]) == [name], name
        assert scores[i] == pytest.approx(weights[name] / total), name


def test_rules_score_adds_up_the_fired_points():
    # everything at once except tiny_amount (it excludes new_account_high_amount: amount >= 500 USD)
    many = {}
    for name, over in RULE_CASES.items():
        if name not in ("new_account_high_amount", "price_far_above_merchant_norm", "tiny_amount"):
            many.update(over)
    many.update(account_age_days=2, amount=900.0, merchant_amount_mean_30d=60.0, merchant_amount_std_30d=10.0)
    engine = B.RulesEngine()
    frame = build_model_frame(
        pd.DataFrame(
            [
                _txn(**many),
                _txn(
                    amount=450.0, currency="JPY", user_amount_mean_30d=450.0, merchant_amount_mean_30d=450.0
                ),
            ]
        )
    )
    fired = engine.fired(frame)
    assert list(fired.columns[~fired.iloc[0]]) == ["tiny_amount"]
    total = sum(r.weight for r in engine.rules)
    assert engine.predict_scores(frame)[0] == pytest.approx((total - 2.0) / total)
    # amounts are compared in USD: 450 JPY is about 3 USD
    assert list(fired.columns[fired.iloc[1]]) == ["tiny_amount"]


# ---------------------------------------------------------------------------- evaluate_models


def _scores_for(y: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "transformer": np.clip(rng.normal(0.2 + 0.5 * y, 0.15), 0, 1),
        "lightgbm": np.clip(rng.normal(0.2 + 0.35 * y, 0.15), 0, 1),
        "logistic_regression": np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1),
        "rules": np.round(np.clip(rng.normal(0.1 + 0.2 * y, 0.1), 0, 1), 1),
        "isolation_forest": rng.normal(0.5 + 0.05 * y, 0.05),
    }


def test_evaluate_models_writes_every_artifact(tmp_path, split_frames, capsys):
    (_, _, te), (_, _, yte) = split_frames
    scores = _scores_for(yte)
    result = evaluate_models(te, yte, scores, tmp_path / "out", review_budget=0.01)

    for key, name in (("json", "evaluation.json"), ("table", "metrics_table.md"),
                      ("pr_curve", "pr_curve.png"), ("histogram", "score_histogram.png")):  # fmt: skip
        assert result.files[key] == tmp_path / "out" / name and result.files[key].exists()
    for png in ("pr_curve.png", "score_histogram.png"):
        data = (tmp_path / "out" / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000

    doc = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert set(doc["models"]) == set(scores)
    for name, m in doc["models"].items():
        assert all(k in m for k in METRIC_KEYS), name
        assert m["n"] == len(yte)
    expected_ratio = average_precision_score(yte, scores["transformer"]) / average_precision_score(
        yte, scores["lightgbm"]
    )
    assert doc[RATIO_KEY] == pytest.approx(expected_ratio)
    assert result.pr_auc_ratio == pytest.approx(expected_ratio)
    assert set(doc["segments"]) == {"new_user", "returning_user", "country_mismatch"}

    table = (tmp_path / "out" / "metrics_table.md").read_text()
    assert all(name in table for name in scores) and "PR-AUC" in table
    assert table.splitlines()[2].startswith("| transformer")  # best PR-AUC first
    assert "transformer" in capsys.readouterr().out


def test_ratio_is_none_without_lightgbm_and_histogram_falls_back(tmp_path):
    y = np.array([0] * 90 + [1] * 10)
    result = evaluate_models(None, y, {"rules": np.linspace(0, 1, 100)}, tmp_path)
    assert result.pr_auc_ratio is None and result.document["primary_model"] == "rules"
    assert (tmp_path / "score_histogram.png").stat().st_size > 0


def test_single_class_test_set_does_not_crash(tmp_path):
    y = np.zeros(200, dtype=int)
    result = evaluate_models(None, y, _scores_for(y), tmp_path)
    assert math.isnan(result.metrics["transformer"]["pr_auc"])
    assert result.pr_auc_ratio is None
    assert "single class" in result.table
    assert (tmp_path / "pr_curve.png").read_bytes().startswith(PNG_MAGIC)


def test_evaluate_models_rejects_misaligned_scores(tmp_path):
    with pytest.raises(ValueError, match="3 scores for 2 labels"):
        evaluate_models(None, [0, 1], {"transformer": [0.1, 0.2, 0.3]}, tmp_path)
    with pytest.raises(ValueError, match="empty"):
        evaluate_models(None, [0, 1], {}, tmp_path)


# ------------------------------------------------------------------------- the whole step


@pytest.mark.slow  # 10-15 s: keeps `make test-fast` under 3 minutes
def test_run_evaluation_end_to_end_with_a_fake_scorer(tmp_path):
    df = synthetic_transactions(4000, seed=5)
    result = run_evaluation(df, FakeScorer(), tmp_path, test_fraction=0.2, val_fraction=0.15)
    doc = json.loads(result.files["json"].read_text())

    assert set(doc["models"]) == {"transformer", *B.BASELINE_NAMES}
    assert doc[RATIO_KEY] == pytest.approx(
        doc["models"]["transformer"]["pr_auc"] / doc["models"]["lightgbm"]["pr_auc"]
    )
    th = doc["policy_thresholds"]
    assert set(th) == {"review", "block"} and th["block"] >= th["review"]
    assert doc["policy_targets"]["set_on"] == "validation"
    # the policy was set on validation: the block-precision target holds there
    _, val, _ = time_split(df, 0.2, 0.15)
    val_scores = FakeScorer().predict_proba(build_model_frame(val))[:, 1]
    rep = policy_report(val["is_fraud"].to_numpy(), val_scores, th)
    assert json.dumps(rep, sort_keys=True) == json.dumps(doc["policy_validation"], sort_keys=True)  # NaN-safe
    assert rep["block_rate"] == 0 or rep["block_precision"] >= 0.9
    data = doc["data"]
    assert data["rows"] == 4000 and data["train_rows"] + data["val_rows"] + data["test_rows"] == 4000
    assert data["test_rows"] == doc["n"] == 800
    assert set(doc["timings_seconds"]) >= set(B.BASELINE_NAMES)

    page = render_html(result)
    assert page.count("data:image/png;base64,") == 2
    assert all(name in page for name in doc["models"]) and "block at score" in page

    # the register step's model card reads this document
    from riskops.registry.register import model_card

    card = model_card(doc, doc["data"], "abc123", "v0001")
    assert "| transformer |" in card and f"{th['review']}" in card


def test_evaluate_op_compiles_with_the_expected_interface(tmp_path):
    import yaml
    from kfp import compiler

    path = tmp_path / "evaluate.yaml"
    compiler.Compiler().compile(evaluate_model_op, str(path))
    spec = yaml.safe_load(path.read_text())
    comp = next(iter(spec["components"].values()))
    assert set(comp["inputDefinitions"]["artifacts"]) == {"training_set", "model"}
    assert {"test_fraction", "val_fraction", "review_budget"} <= set(comp["inputDefinitions"]["parameters"])
    outputs = comp["outputDefinitions"]["artifacts"]
    assert set(outputs) == {"metrics", "roc", "report", "evaluation", "reference"}
    assert outputs["reference"]["artifactType"]["schemaTitle"] == "system.Dataset"
    assert outputs["report"]["artifactType"]["schemaTitle"] == "system.HTML"
    assert outputs["evaluation"]["artifactType"]["schemaTitle"] == "system.Artifact"


def test_evaluate_op_body_in_process(tmp_path, monkeypatch):
    """The KFP adapter's own code, run in-process with a stand-in for riskops.training.scorer (no trained
    weights, no torch import). The real RiskScorer under kfp.local is the pipeline integration test's job."""
    import sys
    import types

    from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Metrics, Model

    fake_model_module = types.ModuleType("riskops.training.scorer")
    fake_model_module.RiskScorer = type(
        "RiskScorer", (), {"load": staticmethod(lambda path, **kw: FakeScorer())}
    )
    monkeypatch.setitem(sys.modules, "riskops.training.scorer", fake_model_module)
    synthetic_transactions(3000, seed=9).to_parquet(tmp_path / "training_set.parquet", index=False)
    (tmp_path / "model").mkdir()
    art = {
        "training_set": Dataset(uri=str(tmp_path / "training_set.parquet")),
        "model": Model(uri=str(tmp_path / "model")),
        "metrics": Metrics(uri=str(tmp_path / "metrics")),
        "roc": ClassificationMetrics(uri=str(tmp_path / "roc")),
        "report": HTML(uri=str(tmp_path / "report.html")),
        "evaluation": Artifact(uri=str(tmp_path / "evaluation.json")),
        "reference": Dataset(uri=str(tmp_path / "reference")),
    }
    evaluate_model_op.python_func(
        **art,
        test_fraction=TRAINING.test_fraction,
        val_fraction=TRAINING.val_fraction,
        reports_dir=str(tmp_path / "reports"),
    )

    doc = json.loads((tmp_path / "evaluation.json").read_text())
    assert set(doc["models"]) == {"transformer", *B.BASELINE_NAMES} and "policy_thresholds" in doc
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64,") == 2
    logged = art["metrics"].metadata
    assert {"transformer_pr_auc", "lightgbm_pr_auc", RATIO_KEY, "review_threshold", "block_threshold"} <= set(
        logged
    )
    assert all(math.isfinite(v) for v in logged.values())
    assert art["evaluation"].metadata["policy_thresholds"] == doc["policy_thresholds"]
    assert len(art["roc"].metadata["confidenceMetrics"]) > 2
    # the monitoring reference: validation + test rows (3000 * 0.35), loadable by the monitor
    ref = pd.read_parquet(tmp_path / "reference")
    assert len(ref) == 1050 and art["reference"].metadata["rows"] == 1050
    assert {"risk_score", "is_fraud", "event_timestamp"} <= set(ref.columns)
    assert ref["event_timestamp"].is_monotonic_increasing
    reports = {p.name for p in (tmp_path / "reports").iterdir()}
    assert reports == {
        "evaluation.json",
        "metrics_table.md",
        "pr_curve.png",
        "score_histogram.png",
        "report.html",
    }
