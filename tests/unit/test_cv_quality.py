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


@pytest.mark.parametrize(("n", "windows", "initial"), [(1000, 4, 0.4), (284_807, 4, 0.4), (17, 3, 0.5)])
def test_whole_range_windows_cover_every_row_after_the_initial_block_once_in_order(
    cv_quality, n, windows, initial
):
    parts = cv_quality.whole_range_windows(n, windows, initial)
    assert len(parts) == windows and parts[0][0] == int(n * initial) and parts[-1][1] == n
    covered = np.concatenate([np.arange(a, b) for a, b in parts])
    np.testing.assert_array_equal(covered, np.arange(int(n * initial), n))  # once each, in time order
    sizes = [b - a for a, b in parts]
    assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="too few"):
        cv_quality.whole_range_windows(5, 4, 0.5)


def test_whole_range_run_scores_each_window_with_models_fitted_before_it(cv_quality, tmp_path):
    csv = tmp_path / "orders.csv"
    orders = shop_orders(n=2400)
    orders.sample(frac=1.0, random_state=0).to_csv(csv, index=False)  # shuffled: the run sorts by time
    cfg = shop_config(csv, entities={}, text=[], pii=[], amount=None)
    cfg_path = tmp_path / "tabular-shop.yaml"
    cfg_path.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if v not in (None, {}, [])}))
    argv = ["--dataset", str(cfg_path), "--whole-range", "--windows", "2", "--initial", "0.5", "--trials", "2",
            "--ft-max-epochs", "2", "--ft-legit-per-epoch", "500", "--out", str(tmp_path / "out")]  # fmt: skip

    assert cv_quality.main(argv) == 0

    doc = json.loads((tmp_path / "out" / "cv_whole_my-shop.json").read_text())
    rows = doc["windows"]
    assert [(r["start_row"], r["end_row"]) for r in rows] == [(1200, 1800), (1800, 2400)]
    assert [r["train_rows"] for r in rows] == [1200, 1800]  # every row before the window, never the window
    time_order = orders.sort_values(cfg["event_time"], kind="stable")[cfg["label"]].to_numpy()
    assert [r["frauds"] for r in rows] == [
        int(time_order[a:b].sum()) for a, b in [(1200, 1800), (1800, 2400)]
    ]
    assert doc["frauds_scored"] == sum(r["frauds"] for r in rows)
    for r in rows:
        assert r["ratio_pr_auc"] == pytest.approx(r["ft_transformer_pr_auc"] / r["lightgbm_pr_auc"])
        assert 0.5 < r["lightgbm_roc_auc"] <= 1
    ratio = doc["summary"]["ratio_pr_auc"]
    assert ratio["n"] == 2 and ratio["lo"] <= ratio["mean"] <= ratio["hi"]
    md = (tmp_path / "out" / "cv_whole_my-shop.md").read_text()
    assert "FT / LightGBM" in md and "mean [95% t-interval]" in md
