"""FT-Transformer (riskops.training.tabular): learns a planted signal, round-trips through save/load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from riskops.training.budget import EpochSample, epoch_sample
from riskops.training.tabular import (
    FittedTabularModel,
    FTTransformerConfig,
    TabularPreprocessor,
    fit_ft_transformer,
)


def _planted(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "signal": rng.normal(size=n),
            "heavy": rng.lognormal(2.0, 1.5, n),  # money-like, heavy-tailed: noise
            "noise": rng.normal(size=n),
            "kind": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2]),
        }
    )
    logit = 2.5 * X["signal"].to_numpy() + 2.0 * (X["kind"] == "c").to_numpy() - 4.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    return X, y


CFG = FTTransformerConfig(
    d_token=16, n_layers=1, n_heads=2, batch_size=128, max_epochs=12, patience=4, lr=3e-3, progress=False,
    min_category_count=1,
)  # fmt: skip


@pytest.fixture(scope="module")
def fitted():
    X, y = _planted(3000, 0)
    Xv, yv = _planted(800, 1)
    model = fit_ft_transformer(X, y, Xv, yv, CFG, numeric=["signal", "heavy", "noise"], categorical=["kind"])
    return model


def test_learns_planted_signal(fitted):
    Xt, yt = _planted(1500, 2)
    p = fitted.predict_proba(Xt)
    assert p.shape == (1500,) and np.all((p >= 0) & (p <= 1))
    assert roc_auc_score(yt, p) > 0.9
    assert 1 <= fitted.info["best_epoch"] <= fitted.info["epochs_run"] == len(fitted.history)
    assert fitted.info["best_val_pr_auc"] == max(h["val_pr_auc"] for h in fitted.history)


def test_save_load_round_trip(fitted, tmp_path):
    Xt, _ = _planted(300, 3)
    before = fitted.predict_proba(Xt)
    folder = fitted.save(tmp_path / "ft")
    assert (folder / "model.safetensors").exists() and (folder / "tabular_model.json").exists()
    loaded = FittedTabularModel.load(folder)
    np.testing.assert_allclose(loaded.predict_proba(Xt), before, rtol=0, atol=1e-6)
    assert loaded.features == ["signal", "heavy", "noise", "kind"]


def test_preprocessing_fitted_on_train_only():
    X = pd.DataFrame({"x": np.arange(100.0), "c": ["a"] * 60 + ["b"] * 40})
    pre = TabularPreprocessor.fit(X, ["x"], ["c"], n_quantiles=50, min_category_count=1)
    num, cat = pre.transform(pd.DataFrame({"x": [-1e9, 49.5, 1e9, np.nan], "c": ["a", "b", "zzz", "a"]}))
    assert num[0, 0] < -3.5 and abs(num[1, 0]) < 0.05 and num[2, 0] > 3.5 and num[3, 0] == 0.0
    assert cat[:, 0].tolist() == [1, 2, 0, 1]  # unseen category -> 0


def test_missing_column_and_bad_config():
    with pytest.raises(ValueError, match="multiple of n_heads"):
        FTTransformerConfig(d_token=10, n_heads=4)
    pre = TabularPreprocessor.fit(pd.DataFrame({"x": [1.0, 2.0]}), ["x"], [])
    with pytest.raises(ValueError, match="missing column"):
        pre.transform(pd.DataFrame({"y": [1.0]}))


def test_robust_log_keeps_the_tails_a_quantile_map_squeezes():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=20_000)})
    tail = pd.DataFrame({"x": [5.0, 10.0, 50.0, -8.0, 0.0, np.nan]})  # far beyond the training rows
    quantile = TabularPreprocessor.fit(X, ["x"], [], n_quantiles=1000).transform_numeric(tail)[:, 0]
    robust = TabularPreprocessor.fit(X, ["x"], [], numeric_transform="robust_log").transform_numeric(tail)[
        :, 0
    ]
    # quantile: everything past the training extremes lands on the same clipped value
    assert quantile[0] == quantile[1] == quantile[2]
    # robust_log: order and (compressed) size survive, the body stays near 0, NaN -> 0
    assert robust[3] < robust[4] < robust[0] < robust[1] < robust[2]
    assert abs(robust[4]) < 0.05 and robust[5] == 0.0
    assert robust[2] == pytest.approx(np.log1p(50 / 1.349), abs=0.05)  # IQR of N(0, 1) = 1.349
    with pytest.raises(ValueError, match="numeric_transform"):
        FTTransformerConfig(numeric_transform="minmax")


def test_robust_log_model_learns_and_round_trips(tmp_path):
    X, y = _planted(3000, 0)
    Xv, yv = _planted(800, 1)
    cfg = FTTransformerConfig(**{**CFG.__dict__, "numeric_transform": "robust_log"})
    model = fit_ft_transformer(X, y, Xv, yv, cfg, numeric=["signal", "heavy", "noise"], categorical=["kind"])
    Xt, yt = _planted(1500, 2)
    p = model.predict_proba(Xt)
    assert roc_auc_score(yt, p) > 0.9
    loaded = FittedTabularModel.load(model.save(tmp_path / "ft"))
    assert loaded.pre.numeric_transform == "robust_log" and loaded.pre.quantiles == []
    np.testing.assert_allclose(loaded.predict_proba(Xt), p, rtol=0, atol=1e-6)


@pytest.mark.parametrize("embedding", ["periodic", "ple"])
def test_numeric_embeddings_learn_and_round_trip(embedding, tmp_path):
    X, y = _planted(3000, 0)
    Xv, yv = _planted(800, 1)
    cfg = FTTransformerConfig(**{**CFG.__dict__, "numeric_embedding": embedding, "n_bins": 8})
    model = fit_ft_transformer(X, y, Xv, yv, cfg, numeric=["signal", "heavy", "noise"], categorical=["kind"])
    assert model.model.num_embedding is not None and not hasattr(model.model, "num_weight")
    Xt, yt = _planted(1500, 2)
    p = model.predict_proba(Xt)
    assert roc_auc_score(yt, p) > 0.9
    loaded = FittedTabularModel.load(model.save(tmp_path / "ft"))
    assert loaded.config.numeric_embedding == embedding
    np.testing.assert_array_equal(loaded.predict_proba(Xt), p)
    if embedding == "ple":  # the bins are fitted on the transformed training numerics and saved
        assert len(loaded.pre.bins) == 3 and loaded.pre.bins == model.pre.bins
        assert all(2 <= len(b) <= 9 and b == sorted(set(b)) for b in loaded.pre.bins)
    else:
        assert loaded.pre.bins == []


def test_ple_bins_of_a_constant_column_are_one_bin():
    pre = TabularPreprocessor(["const", "x"], [])
    pre.fit_bins(np.column_stack([np.zeros(50), np.arange(50.0)]).astype("float32"), n_bins=4)
    assert pre.bins[0] == [-1.0, 1.0] and pre.bins[1] == [0.0, 12.25, 24.5, 36.75, 49.0]
    with pytest.raises(ValueError, match="numeric_embedding"):
        FTTransformerConfig(numeric_embedding="fourier")


def test_epoch_sample_counts_frauds_and_legitimate_rows_separately():
    # fraud-heavy: 20 legit rows per fraud, never the 1,000 left over from a shared row budget
    s = epoch_sample(5_000, 300_000, min_legit=6_000)
    assert (s.frauds, s.legit) == (5_000, 100_000)
    assert s.describe() == "trained on 5,000 frauds + 100,000 of 300,000 legitimate rows per epoch"
    assert epoch_sample(381, 193_287, 6_000).legit == 20_000  # few frauds: the floor
    assert epoch_sample(381, 193_287, 60_000).legit == 60_000  # the caller may ask for more
    assert epoch_sample(1_112, 15_000, 6_000).legit == 15_000  # capped by the data
    capped = epoch_sample(50_000, 2_000_000, 6_000)  # frauds capped, the ratio kept
    assert (capped.frauds, capped.legit) == (20_000, 400_000)
    assert capped.describe().startswith("trained on 20,000 of 50,000 frauds + 400,000 of 2,000,000")
    assert epoch_sample(10, 500, 0) == EpochSample(10, 10, 500, 500)  # 0: every row


def test_fraud_per_epoch_samples_frauds_each_epoch():
    X, y = _planted(3000, 0)
    Xv, yv = _planted(800, 1)
    cfg = FTTransformerConfig(
        **{**CFG.__dict__, "fraud_per_epoch": 50, "legit_per_epoch": 500, "max_epochs": 2}
    )
    model = fit_ft_transformer(X, y, Xv, yv, cfg, numeric=["signal", "heavy", "noise"], categorical=["kind"])
    assert model.info["frauds_per_epoch"] == 50 < model.info["train_frauds"]
    assert model.info["legit_rows_per_epoch"] == 500
