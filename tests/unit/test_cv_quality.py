"""The training-period CV script: per-fraud AUC losses and a small end-to-end run with every family."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score
from support.data import shop_config, shop_orders


def test_fraud_losses_average_to_one_minus_auc_with_ties(cv_quality):
    rng = np.random.default_rng(3)
    y = (rng.random(2000) < 0.05).astype(int)
    scores = np.round(rng.random(2000) + y * 0.6, 1)  # coarse: many ties between frauds and legit rows
    losses = cv_quality.fraud_losses(y, scores)
    assert len(losses) == y.sum()
    assert losses.mean() == pytest.approx(1 - roc_auc_score(y, scores), abs=1e-12)


def test_loss_concentration_names_the_frauds_that_look_legitimate(cv_quality):
    y = np.array([0] * 100 + [1] * 10)
    scores = np.concatenate([np.arange(100) / 100, np.full(10, 2.0)])
    scores[100] = -1.0  # one fraud below every legitimate row, nine above all of them
    c = cv_quality.loss_concentration([y], [scores], ks=(1, 3))
    assert c["frauds"] == 10
    assert c["worst_losses"][:2] == [1.0, 0.0]
    assert c["pooled_roc_auc"] == pytest.approx(0.9)
    assert c["roc_auc_without_worst"]["1"] == 1.0
    assert c["loss_share_of_worst"]["1"] == 1.0


@pytest.mark.slow  # 10-15 s: keeps `make test-fast` under 3 minutes
def test_cv_run_with_trees_scores_every_family_and_reports_the_loss_tail(cv_quality, tmp_path):
    csv = tmp_path / "orders.csv"
    shop_orders(n=2400).to_csv(csv, index=False)
    cfg = shop_config(csv, entities={}, text=[], pii=[], amount=None)
    cfg_path = tmp_path / "tabular-shop.yaml"
    cfg_path.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if v not in (None, {}, [])}))

    assert cv_quality.main(["--dataset", str(cfg_path), "--trees", "--out", str(tmp_path / "out")]) == 0

    doc = json.loads((tmp_path / "out" / "cv_my-shop.json").read_text())
    models = doc["models"]
    for family in ("lgb ", "logistic ", "extra_trees ", "random_forest ", "knn "):
        assert any(n.startswith(family) for n in models), family
    assert any(n.startswith("rank average: ") and "extra_trees" in n for n in models)
    frauds = sum(w["frauds"] for w in doc["windows"])
    for name, m in models.items():
        assert len(m["roc_auc_folds"]) == 3 and 0.5 < m["roc_auc"] <= 1, name
        assert m["auc_loss"]["frauds"] == frauds
        # the pooled per-fraud view and the window mean are the same metric up to window weights
        assert m["auc_loss"]["pooled_roc_auc"] == pytest.approx(m["roc_auc"], abs=0.05), name
        assert m["auc_loss"]["roc_auc_without_worst"]["10"] >= m["auc_loss"]["pooled_roc_auc"]
    md = (tmp_path / "out" / "cv_my-shop.md").read_text()
    assert "Where the AUC-ROC loss sits" in md and "extra_trees leaf5" in md
