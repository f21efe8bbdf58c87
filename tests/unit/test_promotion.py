"""Champion/challenger gate and canary: promote a better model, reject a worse one, route and roll back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from riskops.lifecycle.canary import CanaryRouter, CanarySettings, CanaryState
from riskops.lifecycle.promotion import (
    PREVIOUS_CHAMPION,
    PromotionSettings,
    apply_canary_decision,
    compare_models,
    run_promotion_gate,
)
from riskops.registry.store import ModelRegistry
from riskops.settings import paths as home_paths


@pytest.fixture
def paths(riskops_home):
    return home_paths(riskops_home)


def _window(n: int = 4000, fraud_rate: float = 0.03, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < fraud_rate).astype(int)
    signal = rng.normal(size=n) + 2.2 * y  # what a good model sees
    return pd.DataFrame({"transaction_id": [f"t{i}" for i in range(n)], "is_fraud": y, "signal": signal,
                         "noise": rng.normal(size=n)})


class Model:
    """A tiny deterministic stand-in for RiskScorer: a logistic function of the window's columns."""

    def __init__(self, w_signal: float, w_noise: float) -> None:
        self.w_signal, self.w_noise = w_signal, w_noise

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        z = self.w_signal * frame["signal"].to_numpy() + self.w_noise * frame["noise"].to_numpy() - 4.0
        return 1.0 / (1.0 + np.exp(-z))


def _as_is(window: pd.DataFrame) -> pd.DataFrame:  # the window already carries the toy models' inputs
    return window


def _scores(model: Model, w: pd.DataFrame) -> np.ndarray:
    return model.predict_proba(w)


GOOD, MEDIUM, BAD = Model(1.5, 0.0), Model(1.5, 1.2), Model(0.4, 1.5)


def test_gate_promotes_better_and_rejects_worse():
    w = _window()
    champion_scores = _scores(MEDIUM, w)
    better = compare_models(champion_scores, _scores(GOOD, w), w, {"bootstrap": 50})
    assert better.promote, better.reasons
    assert better.delta["pr_auc"] > 0.01 and better.alert is None
    worse = compare_models(champion_scores, _scores(BAD, w), w, {"bootstrap": 50})
    assert not worse.promote
    assert any("pr_auc" in r for r in worse.reasons)
    assert worse.alert["type"] == "promotion_rejected" and worse.alert["challenger"]["pr_auc"] < worse.alert[
        "champion"]["pr_auc"]


def test_gate_needs_enough_data_and_respects_guards():
    small = _window(300, seed=1)
    d = compare_models(_scores(MEDIUM, small), _scores(GOOD, small), small, {"bootstrap": 0})
    assert not d.promote and "too small" in d.reasons[0]
    w = _window(seed=2)
    cfg = PromotionSettings.from_dict({"min_improvement": -1.0, "guard_tolerance": 0.0, "bootstrap": 0})
    # a challenger equal on PR-AUC by fiat (margin -1) but worse on ROC-AUC is stopped by the guard
    d = compare_models(_scores(GOOD, w), _scores(BAD, w), w, cfg)
    assert not d.promote and any(r.startswith("guard roc_auc") for r in d.reasons)


def _register(reg: ModelRegistry, tmp_path, name: str) -> str:
    d = tmp_path / name
    d.mkdir()
    (d / "weights.bin").write_text(name)
    return reg.register(d).version


def test_run_promotion_gate_moves_aliases(paths, tmp_path):
    reg = ModelRegistry(paths.registry)
    v1 = _register(reg, tmp_path, "champ")
    v2 = _register(reg, tmp_path, "chall")
    reg.set_alias("champion", v1)
    reg.set_alias("challenger", v2)
    models = {v1: MEDIUM, v2: GOOD}
    loader = lambda path: models[path.name]  # noqa: E731 - registry folder name is the version
    w = _window(seed=3)
    w["risk_score"] = _scores(MEDIUM, w)  # the champion's scores as logged
    d = run_promotion_gate(paths, {"bootstrap": 0}, labelled=w, loader=loader, frame_fn=_as_is)
    assert d.promote and d.applied
    assert reg.aliases()["champion"] == v2 and reg.aliases()[PREVIOUS_CHAMPION] == v1
    assert "challenger" not in reg.aliases()
    rec = [json.loads(line) for line in (paths.root / "promotion" / "decisions.jsonl").read_text().splitlines()]
    assert rec[-1]["promote"] and rec[-1]["challenger_version"] == v2


def test_run_promotion_gate_rejects_and_alerts(paths, tmp_path):
    reg = ModelRegistry(paths.registry)
    v1 = _register(reg, tmp_path, "champ")
    v2 = _register(reg, tmp_path, "chall")
    reg.set_alias("champion", v1)
    reg.set_alias("challenger", v2)
    models = {v1: MEDIUM, v2: BAD}
    w = _window(seed=4)
    d = run_promotion_gate(paths, {"bootstrap": 0}, labelled=w, loader=lambda p: models[p.name], frame_fn=_as_is)
    assert not d.promote and not d.applied
    assert reg.aliases() == {"champion": v1, "challenger": v2}  # champion kept
    alerts = [json.loads(line) for line in (paths.root / "alerts.jsonl").read_text().splitlines()]
    assert alerts[-1]["type"] == "promotion_rejected" and alerts[-1]["challenger_version"] == v2
    assert "champion" in alerts[-1] and "delta" in alerts[-1]


def test_canary_router_share_and_determinism():
    ids = [f"txn-{i:06d}" for i in range(5000)]
    router = CanaryRouter(0.10, seed=7)
    picks = [router.use_challenger(t) for t in ids]
    share = sum(picks) / len(ids)
    assert 0.08 <= share <= 0.12
    assert picks == [CanaryRouter(0.10, seed=7).use_challenger(t) for t in ids]  # deterministic
    other = [CanaryRouter(0.10, seed=8).use_challenger(t) for t in ids]
    assert other != picks  # the seed re-draws the split
    assert {router.arm(t) for t in ids} == {"champion", "challenger"}
    assert not any(CanaryRouter(0.0).use_challenger(t) for t in ids[:200])
    assert all(CanaryRouter(1.0).use_challenger(t) for t in ids[:200])
    with pytest.raises(ValueError):
        CanaryRouter(1.5)


def _drive(state: CanaryState, n: int, challenger_score, champion_score, seed: int = 0, errors: float = 0.0):
    rng = np.random.default_rng(seed)
    router = CanaryRouter(0.2, seed=1)
    for i in range(n):
        arm = router.arm(f"t{i}")
        if arm == "challenger":
            if rng.random() < errors:
                state.record_request(arm, error=True)
            else:
                state.record_request(arm, challenger_score(rng))
        else:
            state.record_request(arm, champion_score(rng))


def test_canary_rolls_back_a_failing_challenger_early():
    st = CanaryState(CanarySettings(min_requests=500), "v1", "v2")
    sane = lambda r: float(r.beta(1, 30))  # noqa: E731
    _drive(st, 800, sane, sane, errors=0.2)
    d = st.decide()
    assert d.action == "rollback" and "error rate" in d.reasons[0]
    assert st.snapshot()["challenger"]["requests"] < 500  # decided before min_requests


def test_canary_rolls_back_insane_scores_and_promotes_a_sane_one(paths, tmp_path):
    sane = lambda r: float(r.beta(1, 30))  # noqa: E731
    cfg = CanarySettings(min_requests=300, review_threshold=0.2)
    st = CanaryState(cfg, "v1", "v2")
    _drive(st, 600, sane, sane)
    assert st.decide().action == "continue"
    _drive(st, 1500, sane, sane, seed=1)
    assert st.decide().action == "promote"

    bad = CanaryState(cfg, "v1", "v2")
    _drive(bad, 2000, lambda r: float(r.uniform(0.3, 1.0)), sane)  # flags everything
    d = bad.decide()
    assert d.action == "rollback" and any("score shift" in r or "flag rate" in r for r in d.reasons)
    nan = CanaryState(cfg, "v1", "v2")
    _drive(nan, 2000, lambda r: float("nan"), sane)  # NaN scores are errors
    assert nan.decide().action == "rollback"

    reg = ModelRegistry(paths.registry)
    v1, v2 = _register(reg, tmp_path, "a"), _register(reg, tmp_path, "b")
    reg.set_alias("champion", v1)
    reg.set_alias("challenger", v2)
    assert apply_canary_decision(reg, CanaryState(cfg, v1, v2), d, paths)
    assert reg.aliases() == {"champion": v1}  # rolled back: the champion never moved
    reg.set_alias("challenger", v2)
    good = st.decide()
    assert apply_canary_decision(reg, CanaryState(cfg, v1, v2), good, paths)
    assert reg.aliases()["champion"] == v2 and reg.aliases()[PREVIOUS_CHAMPION] == v1


def test_canary_promotes_a_retrained_model_whose_near_zero_scores_moved():
    # what a model retrained on a shift looks like (measured in drift-demo --canary): legit scores 5x
    # lower, the same share above the review threshold; KS calls that a big difference, it is not one
    legit_cp = lambda r: float(r.beta(0.6, 250)) if r.random() > 0.03 else float(r.uniform(0.5, 1))  # noqa: E731
    legit_ch = lambda r: float(r.beta(0.6, 1250)) if r.random() > 0.03 else float(r.uniform(0.5, 1))  # noqa: E731
    st = CanaryState(CanarySettings(min_requests=300, review_threshold=0.5), "v1", "v2")
    _drive(st, 2000, legit_ch, legit_cp)
    d = st.decide()
    assert d.metrics["ks"] > 0.3 and d.metrics["score_shift"] < 0.05, d.metrics
    assert d.action == "promote", d.reasons
    strict = CanaryState(CanarySettings(min_requests=300, review_threshold=0.5, max_ks=0.3), "v1", "v2")
    _drive(strict, 2000, legit_ch, legit_cp)
    assert strict.decide().action == "rollback"  # the optional KS veto still works


def test_canary_labels_and_persistence():
    cfg = CanarySettings(min_requests=100, min_labelled_frauds=10, review_threshold=0.9, max_ks=1.0)
    st = CanaryState(cfg, "v1", "v2")
    rng = np.random.default_rng(0)
    for _i in range(400):
        y = int(rng.random() < 0.1)
        s_good = float(np.clip(0.05 + 0.8 * y + rng.normal(0, 0.05), 0, 1))
        s_bad = float(rng.uniform(0, 1))
        st.record_request("champion", s_good)
        st.record_request("challenger", s_bad)
        st.record_outcome("champion", y, s_good)
        st.record_outcome("challenger", y, s_bad)
    d = st.decide()
    assert d.action == "rollback" and any("PR-AUC" in r for r in d.reasons)
    again = CanaryState.from_dict(json.loads(json.dumps(st.to_dict())))
    assert again.snapshot() == st.snapshot() and again.decide().action == "rollback"
