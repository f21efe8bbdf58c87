"""The quality benchmark's small version: every model, blend and stack on a tiny tabular dataset."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from support.data import shop_config, shop_orders

from riskops.data.datasets import DatasetConfig


def test_quick_tabular_run_scores_every_model_and_checks_the_goal(bench_quality, tmp_path):
    csv = tmp_path / "orders.csv"
    shop_orders(n=4000, seed=3).to_csv(csv, index=False)
    config = DatasetConfig.from_dict(shop_config(csv, entities={}, text=[], pii=[]))
    args = argparse.Namespace(quick=True, no_progress=True, save_models=False)
    result = bench_quality.run_tabular(config, args, tmp_path / "out")

    models = result["models"]
    stacks = [n for n in models if n.startswith("stack")]
    assert stacks == [
        "stack (equal ranks): ft_transformer + lightgbm + logistic_regression",
        "stack (weights on validation): ft_transformer + lightgbm + logistic_regression",
    ]
    assert models[stacks[0]]["ensemble_weights"] == pytest.approx(
        {"ft_transformer": 1 / 3, "lightgbm": 1 / 3, "logistic_regression": 1 / 3}
    )
    assert sum(models[stacks[1]]["ensemble_weights"].values()) == pytest.approx(1.0)
    for name, m in models.items():
        assert 0.0 <= m["roc_auc"] <= 1.0 and 0.0 <= m["pr_auc"] <= 1.0, name
        assert np.isfinite(m["ece"]), name
    # the planted signal (amount, crypto payments) is learnable: the supervised models find it
    assert models["lightgbm"]["roc_auc"] > 0.75
    assert models[stacks[0]]["roc_auc"] > 0.75
    goal = result["goal"]
    assert set(goal["met_by"]) == {"ft_transformer", *stacks, "ensemble: ft_transformer + lightgbm"}
    assert goal["met"] == goal["met_by"]["ft_transformer"]
    assert (tmp_path / "out" / "pr_curves_my-shop.png").stat().st_size > 0
    assert (tmp_path / "out" / "reliability_my-shop.png").stat().st_size > 0
    json.dumps(bench_quality._jsonable(result))  # the report is serialisable


def test_alert_threshold_flags_the_share_of_legitimate_validation_rows(bench_quality):
    legit = np.arange(1000, dtype=float)
    t = bench_quality.alert_threshold(legit, 0.01)
    assert (legit >= t).mean() == pytest.approx(0.01, abs=0.001)


@pytest.mark.slow  # 10-15 s: keeps `make test-fast` under 3 minutes
def test_quick_synthetic_run_holds_out_each_fraud_type_in_turn(bench_quality, tmp_path):
    from riskops.data.datasets import builtin_config

    args = argparse.Namespace(quick=True, no_progress=True, save_models=False, synthetic_rows=6000,
                              skip_synthetic_transformer=True)  # fmt: skip
    result = bench_quality.run_synthetic(
        builtin_config("synthetic"), args, tmp_path / "out", tmp_path / "work"
    )

    # the transformer was skipped: LightGBM stands in for it, and is never blended or stacked with itself
    assert not any("lightgbm + lightgbm" in name for name in result["models"]), list(result["models"])
    lo = result["leave_one_type_out"]
    scored = {t: r for t, r in lo["types"].items() if "skipped" not in r}
    assert len(scored) >= 2, lo["types"]
    for t, r in scored.items():
        assert t != "none"
        assert r["train_frauds_removed"] > 0, t  # the type really was held out of training
        for key in ("supervised_recall_at_budget", "two_channel_recall_at_budget", "supervised_pr_auc",
                    "autoencoder_pr_auc", "blend_0.5_pr_auc"):  # fmt: skip
            assert 0.0 <= r[key] <= 1.0, (t, key)
        # thresholds come from validation, so the test FPR is near (not exactly) the budget
        assert r["supervised_test_fpr"] < 4 * lo["budget"] and r["two_channel_test_fpr"] < 4 * lo["budget"]
    assert lo["pooled"]["test_frauds"] == sum(r["test_frauds"] for r in scored.values())
    assert 0 <= lo["pooled"]["two_channel_caught"] <= lo["pooled"]["test_frauds"]
    md = bench_quality.markdown({"command": "x", "host": "h", "datasets": {"synthetic": result}})
    assert "never labelled in training, in turn" in md
