"""riskops.training.model and riskops.training.scorer: the encoder split, scoring bundle, normaliser, calibration and explanations.

All tests use the tiny random encoder (fast); the real MiniLM is exercised in test_train.py (slow).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from support.data import planted_signal_transactions

from riskops.features.contract import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    TEXT_COLUMN,
    ColumnFrame,
    build_model_frame,
)
from riskops.schema import CHANNELS, PAYMENT_METHODS
from riskops.training.model import (
    SMALL_FRAME_ROWS,
    ModelConfig,
    ModelFormatError,
    RiskModel,
    base_tokenizer,
    categorical_indices,
)
from riskops.training.scaling import Normalizer, fit_temperature
from riskops.training.scorer import TEXT_ATTRIBUTION, RiskScorer


def make_transactions(n: int, seed: int, fraud_rate: float = 0.1) -> pd.DataFrame:
    return planted_signal_transactions(n, seed, fraud_rate, varied=True)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; on a busy 2-core machine OpenMP contention costs a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer():
    return base_tokenizer()


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return build_model_frame(make_transactions(120, seed=3))


def _tiny_model(finetune_layers: int = 2, seed: int = 0) -> RiskModel:
    torch.manual_seed(seed)
    return RiskModel.build(ModelConfig(encoder="tiny", finetune_layers=finetune_layers))


@pytest.fixture(scope="module")
def scorer(tokenizer, frame) -> RiskScorer:
    return RiskScorer(_tiny_model(), tokenizer, Normalizer.fit(frame))


# --------------------------------------------------------------------------- architecture
@pytest.mark.parametrize("finetune_layers", [0, 1, 2, 3])
def test_lower_plus_upper_equals_the_full_encoder(tokenizer, frame, finetune_layers):
    model = _tiny_model(finetune_layers).eval()
    texts = list(frame[TEXT_COLUMN].iloc[:6]) + ["gift card"]  # different lengths: padding is exercised
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        full = model.encoder(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
        ).last_hidden_state
        lower = model.lower_states(enc["input_ids"], enc["attention_mask"])
        split = model.upper_states(lower, enc["attention_mask"])
    real = enc["attention_mask"].bool()
    assert torch.allclose(full[real], split[real], atol=1e-5)
    assert model.n_frozen == 3 - finetune_layers


def test_frozen_parts_have_no_gradients_and_no_dropout():
    model = _tiny_model(finetune_layers=1).train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("encoder.embeddings.", "encoder.encoder.layer.0.", "encoder.encoder.layer.1."))
                          for n in frozen)  # fmt: skip
    assert all(
        p.requires_grad for n, p in model.named_parameters() if n.startswith("encoder.encoder.layer.2.")
    )
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("encoder."))
    assert not model.encoder.embeddings.training
    assert not model.encoder_layers[1].training and model.encoder_layers[2].training


def test_config_is_json_serialisable():
    model = _tiny_model()
    d = json.loads(json.dumps(model.config.to_dict()))
    back = ModelConfig.from_dict(d)
    assert back == model.config
    assert back.numeric_features == NUMERIC_FEATURES
    assert tuple(back.categorical_vocabs) == CATEGORICAL_FEATURES
    assert back.encoder_config["hidden_size"] == 32
    with pytest.raises(ValueError, match="unknown encoder"):
        ModelConfig(encoder="bert-large")


def test_unknown_categories_map_to_index_zero():
    df = pd.DataFrame({"payment_method": ["paypal", "martian_money", None], "channel": ["web", "web", "ios"]})
    idx = categorical_indices(df, {"payment_method": PAYMENT_METHODS, "channel": CHANNELS})
    assert idx[:, 0].tolist() == [PAYMENT_METHODS.index("paypal") + 1, 0, 0]
    assert idx[:, 1].tolist() == [1, 1, 2]
    # serving's small frames take a dictionary path, larger ones pandas' indexer: the same indices
    rng = np.random.default_rng(0)
    values = np.array([*PAYMENT_METHODS, "martian_money", None, float("nan"), 3, "PAYPAL"], dtype=object)
    big = pd.DataFrame(
        {"payment_method": rng.choice(values, 500), "channel": rng.choice([*CHANNELS, None], 500)}
    )
    vocabs = {"payment_method": PAYMENT_METHODS, "channel": CHANNELS}
    whole = categorical_indices(big, vocabs)
    rows = np.vstack([categorical_indices(big.iloc[[i]], vocabs) for i in range(len(big))])
    assert (
        len(big) > SMALL_FRAME_ROWS
        and np.array_equal(whole, rows)
        and (whole == 0).any()
        and (whole > 0).any()
    )


# --------------------------------------------------------------------------- normaliser
def test_normalizer_is_robust_and_round_trips(tmp_path):
    df = pd.DataFrame(
        {"a": np.r_[np.arange(100.0), 1e9], "b": np.zeros(101), "c": np.r_[np.zeros(99), 1.0, 1.0]}
    )
    norm = Normalizer.fit(df, ["a", "b", "c"])
    z = norm.transform(df)
    assert z.dtype == np.float32 and np.isfinite(z).all()
    assert abs(np.median(z[:, 0])) < 1e-6  # centred on the median
    assert z[:, 0].max() < 50 and z[-1, 0] > z[-2, 0]  # the outlier is squashed, order kept
    assert (z[:, 1] == 0).all()  # constant column: scale falls back to 1
    odd = pd.DataFrame({"a": [np.inf, np.nan], "b": [1.0, 2.0], "c": [0.0, 1.0]})
    assert np.isfinite(norm.transform(odd)).all()
    norm.save(tmp_path / "n.json")
    assert np.array_equal(Normalizer.load(tmp_path / "n.json").transform(df), z)
    with pytest.raises(KeyError, match="lacks numeric"):
        norm.transform(df[["a"]])


# --------------------------------------------------------------------------- scoring
def test_predictions_are_probabilities_and_deterministic(scorer, frame):
    p1 = scorer.predict_proba(frame)
    assert p1.shape == (len(frame),) and np.isfinite(p1).all()
    assert ((p1 >= 0) & (p1 <= 1)).all()
    p2 = scorer.predict_proba(frame)
    assert np.array_equal(p1, p2)
    scorer.clear_cache()
    p3 = scorer.predict_proba(frame, batch_size=7)  # fresh cache, other batching
    assert np.allclose(p1, p3, atol=1e-6)
    assert scorer.predict_proba(frame.iloc[:0]).shape == (0,)


def test_text_embeddings_are_cached_lru(tokenizer, frame):
    s = RiskScorer(_tiny_model(), tokenizer, Normalizer.fit(frame), cache_size=5)
    texts = frame[TEXT_COLUMN].unique().tolist()
    s.predict_proba(frame.iloc[:1])
    assert (s.cache_hits, s.cache_misses) == (0, 1)
    s.predict_proba(pd.concat([frame.iloc[:1]] * 10))  # the same text 10 times: one lookup, a hit
    assert (s.cache_hits, s.cache_misses) == (1, 1)
    s.text_embeddings(texts[:20])
    assert s.cached_texts == 5  # bounded
    cached = s.text_embeddings(texts[15:20])
    assert torch.allclose(cached, torch.stack(s._encode(texts[15:20])), atol=1e-6)


def test_small_and_large_batches_look_texts_up_alike(scorer, frame):
    """Few-row batches (serving) find distinct texts with a dict, larger ones with pandas: the same
    embeddings row for row, repeated and missing texts included."""
    from riskops.training.model import SMALL_FRAME_ROWS

    texts = frame[TEXT_COLUMN].to_numpy(dtype=object)
    small = np.array([texts[0], None, texts[1], texts[0], float("nan"), "None"], dtype=object)
    large = np.concatenate([small, texts[: SMALL_FRAME_ROWS + 1]])
    assert len(small) <= SMALL_FRAME_ROWS < len(large)
    hits = scorer.cache_hits
    got_small, got_large = scorer._text_batch(small), scorer._text_batch(large)
    assert torch.equal(got_small, got_large[: len(small)])
    assert torch.equal(got_small[0], got_small[3])
    assert torch.equal(got_small[1], got_small[4])  # None and NaN are both the text "nan"
    assert scorer.cache_hits - hits >= 2  # the small batch looked texts[0] up once, then the large batch hit
    for i, t in enumerate(large):
        text = "nan" if t is None else str(t)
        assert torch.allclose(got_large[i], scorer.text_embeddings([text])[0], atol=1e-6)


def test_save_load_round_trip(scorer, frame, tmp_path):
    scorer.calibration.temperature, scorer.calibration.bias = 1.7, -0.3
    try:
        scorer.save(tmp_path / "m")
        names = sorted(p.name for p in (tmp_path / "m").iterdir())
        assert names == [
            "calibration.json",
            "config.json",
            "model.safetensors",
            "normalizer.json",
            "tokenizer",
        ]
        assert not list((tmp_path / "m").rglob("*.bin")) and not list((tmp_path / "m").rglob("*.pt"))
        loaded = RiskScorer.load(tmp_path / "m", device="cpu")
        assert loaded.temperature == pytest.approx(1.7) and loaded.calibration.bias == pytest.approx(-0.3)
        scorer.clear_cache()  # both encode the same texts in the same batches: bit-identical
        assert np.array_equal(loaded.predict_proba(frame), scorer.predict_proba(frame))
        for (n1, t1), (n2, t2) in zip(
            scorer.model.state_dict().items(), loaded.model.state_dict().items(), strict=True
        ):
            assert n1 == n2 and torch.equal(t1, t2)
    finally:
        scorer.calibration.temperature, scorer.calibration.bias = 1.0, 0.0


def test_load_names_what_is_missing(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        RiskScorer.load(tmp_path)


# --------------------------------------------------------------------------- calibration
def test_temperature_lowers_nll_on_a_miscalibrated_toy():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(-1.0, 1.5, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-true_logit))).astype(float)
    overconfident = 4.0 * true_logit  # a model 4x too sure of itself
    cal = fit_temperature(overconfident, y, fit_bias=False)
    assert cal.temperature == pytest.approx(4.0, rel=0.15)
    assert cal.nll_after < cal.nll_before
    shifted = fit_temperature(overconfident + 2.0, y)  # also shifted, as class weighting does
    assert shifted.nll_after < fit_temperature(overconfident + 2.0, y, fit_bias=False).nll_after
    assert shifted.bias == pytest.approx(-2.0 / shifted.temperature, abs=0.15)
    assert fit_temperature([0.1, 0.2], [1, 1]).method == "none"  # one class: identity
    # a perfectly separated, tiny validation set must not produce a degenerate (T -> 0) fit
    separated = fit_temperature(np.r_[np.full(50, -2.0), np.full(3, 2.0)], np.r_[np.zeros(50), np.ones(3)])
    assert separated.temperature > 0.2 and np.isfinite(separated.bias)


def test_scorer_fit_temperature_changes_scores_not_ranking(scorer, frame):
    z = scorer.logits(frame)
    y = (np.random.default_rng(1).random(len(z)) < 0.3).astype(float)
    before = scorer.calibration
    try:
        cal = scorer.fit_temperature(z * 10, y)
        assert scorer.temperature == cal.temperature
        p = scorer.predict_proba(frame)
        assert ((p >= 0) & (p <= 1)).all()
        assert np.array_equal(
            np.argsort(p, kind="stable"), np.argsort(scorer.calibration.apply(z), kind="stable")
        )
    finally:
        scorer.calibration = before


# --------------------------------------------------------------------------- explanations
def test_explain_gives_one_attribution_per_feature_and_completeness(scorer, frame):
    rows = frame.iloc[:4]
    attributions = scorer.explain(rows, steps=64)
    assert len(attributions) == 4
    expected = [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES, TEXT_ATTRIBUTION]
    assert all(list(a) == expected for a in attributions)
    assert all(np.isfinite(list(a.values())).all() for a in attributions)
    # integrated gradients: attributions sum to logit(x) - logit(baseline)
    (m,) = scorer.model.members
    with torch.no_grad():
        base = m.head_from_vectors(
            scorer.model.text_baseline.unsqueeze(0),
            torch.zeros(1, len(NUMERIC_FEATURES)),
            [e.weight[1:].mean(0, keepdim=True) for e in m.cat_embeddings.values()],
        )
    z = scorer.logits(rows)
    for a, zi in zip(attributions, z, strict=True):
        assert sum(a.values()) == pytest.approx(float(zi - base), abs=1e-3)
    assert scorer.explain(rows.iloc[:0]) == []


def test_model_inputs_are_read_once_and_taken_by_row(scorer, frame):
    """Serving reads a batch's frame once (`inputs`) and explains a subset of its rows (`take`)."""
    x = scorer.inputs(frame)
    assert len(x) == len(frame) and scorer.inputs(x) is x
    assert np.array_equal(scorer.predict_proba(x), scorer.predict_proba(frame))
    # serving passes the numeric matrix it built with the frame: the same normalised inputs
    matrix = frame[list(NUMERIC_FEATURES)].to_numpy(dtype=np.float64)
    assert torch.equal(scorer.inputs(frame, matrix).numeric, x.numeric)
    with pytest.raises(ValueError, match="matrix"):
        scorer.normalizer.transform_matrix(matrix[:, :3])
    rows = [5, 0, 3]
    sub = x.take(rows)
    assert list(sub.texts) == list(frame.iloc[rows][TEXT_COLUMN])
    assert np.allclose(scorer.predict_proba(sub), scorer.predict_proba(frame.iloc[rows]), atol=1e-7)
    by_take = scorer.explain(sub, steps=8)
    by_frame = scorer.explain(frame.iloc[rows], steps=8)
    for a, b in zip(by_take, by_frame, strict=True):
        assert a.keys() == b.keys()
        assert np.allclose(list(a.values()), list(b.values()), atol=1e-6)


def test_a_column_frame_scores_and_explains_like_the_dataframe(scorer, frame):
    """Serving's scoring batches are ColumnFrames (no pandas); the model must read them as it reads
    the DataFrame: same normalised numerics, category indices, texts, scores and attributions."""
    columns = ColumnFrame({c: frame[c].to_numpy() for c in frame.columns})
    a, b = scorer.inputs(columns), scorer.inputs(frame)
    assert torch.equal(a.numeric, b.numeric) and torch.equal(a.categorical, b.categorical)
    assert list(a.texts) == list(b.texts)
    assert np.array_equal(scorer.predict_proba(columns), scorer.predict_proba(frame))
    rows = [4, 1]
    for x, y in zip(
        scorer.explain(columns.take(rows), steps=8), scorer.explain(frame.iloc[rows], steps=8), strict=True
    ):
        assert x.keys() == y.keys() and np.allclose(list(x.values()), list(y.values()), atol=1e-6)
    with pytest.raises(KeyError, match=TEXT_COLUMN):
        scorer.inputs(ColumnFrame({c: frame[c].to_numpy() for c in frame.columns if c != TEXT_COLUMN}))


def test_frequent_texts_are_saved_and_pre_encoded(scorer, frame, tmp_path):
    texts = frame[TEXT_COLUMN].tolist()
    common = pd.Series(texts).value_counts().index[0]
    scorer.remember_frequent_texts(texts, limit=3)
    try:
        assert len(scorer.warm_texts) == 3 and scorer.warm_texts[0] == common
        scorer.save(tmp_path / "m")
        loaded = RiskScorer.load(tmp_path / "m", device="cpu")
        assert loaded.warm_texts == scorer.warm_texts and loaded.cached_texts == 0
        assert loaded.warm_cache() == 3 and loaded.warm_cache() == 0  # idempotent
        loaded.predict_proba(frame[frame[TEXT_COLUMN] == common])
        assert (loaded.cache_hits, loaded.cache_misses) == (1, 0)  # served from the warmed cache
    finally:
        scorer.warm_texts = []


def test_a_model_of_another_format_is_refused_with_what_to_do(scorer, tmp_path):
    scorer.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["format_version"] = 1
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="retrain"):
        RiskScorer.load(tmp_path / "m", device="cpu")


# --------------------------------------------------------------------------- the fused model (histories)
@pytest.fixture(scope="module")
def history_frame() -> pd.DataFrame:
    from riskops.data.generator import GeneratorConfig, generate
    from riskops.features.sequences import add_sequence_columns
    from riskops.pii import hash_pii
    from riskops.schema import coerce

    return build_model_frame(add_sequence_columns(hash_pii(coerce(generate(GeneratorConfig(rows=400, seed=2))))))


@pytest.fixture(scope="module")
def fused(tokenizer, history_frame) -> RiskScorer:
    torch.manual_seed(1)
    model = RiskModel.build(ModelConfig(encoder="tiny", finetune_layers=0, sequence=True, members=2))
    return RiskScorer(model, tokenizer, Normalizer.fit(history_frame))


def test_a_model_scores_with_the_mean_of_its_members_logits(fused, history_frame):
    from riskops.training.scorer import ModelInputs

    x: ModelInputs = fused.inputs(history_frame.iloc[-8:])
    text = fused.text_embeddings(list(x.texts))
    with torch.no_grad():
        per_member = fused.model.member_logits(text, x.numeric, x.categorical, x.sequence)
        alone = [m(text, x.numeric, x.categorical, x.sequence) for m in fused.model.members]
    assert per_member.shape == (8, 2)
    assert not torch.allclose(alone[0], alone[1])  # members start from different weights
    assert np.allclose(fused.logits(x), per_member.mean(-1).numpy(), atol=1e-6)
    assert fused.embeddings(x).shape == (8, 2 * fused.config.hidden[-1])
    with pytest.raises(ValueError, match="members"):
        RiskModel.build(ModelConfig(encoder="tiny", members=0))


def test_scoring_packs_the_members_and_repacks_when_their_weights_change(fused, history_frame):
    """Scoring runs the members stacked (riskops.training.packed_heads); new weights are never scored stale."""
    x = fused.inputs(history_frame.iloc[-8:])
    text = fused.text_embeddings(list(x.texts))

    def looped() -> np.ndarray:
        with torch.no_grad():  # member by member, as training computes them
            return fused.model.member_logits(text, x.numeric, x.categorical, x.sequence).mean(-1).numpy()

    before = fused.logits(x)
    assert fused.model._packed is not None  # the scoring call packed the members
    assert np.allclose(before, looped(), atol=1e-5)
    state = {k: v.clone() for k, v in fused.model.state_dict().items()}
    swapped = {k.replace("members.0.", "members.#.").replace("members.1.", "members.0.").replace("members.#.",
                                                                                              "members.1."): v
               for k, v in state.items()}  # fmt: skip
    noisy = {k: v + 0.05 * torch.randn_like(v) if k.startswith("members.0.mlp") else v for k, v in swapped.items()}
    try:
        fused.model.load_state_dict(noisy)
        after = fused.logits(x)
        assert not np.allclose(after, before, atol=1e-4)
        assert np.allclose(after, looped(), atol=1e-5)
    finally:
        fused.model.load_state_dict(state)
    assert np.allclose(fused.logits(x), before, atol=1e-6)


def test_the_history_changes_the_score_and_is_explained_as_one_input(fused, history_frame):
    from riskops.features.sequences import SEQUENCE_COLUMNS
    from riskops.training.scorer import HISTORY_ATTRIBUTION

    rows = history_frame.iloc[-6:]
    assert (rows[SEQUENCE_COLUMNS[0]] > 0).any()  # some rows have an earlier event
    forgotten = rows.assign(**{c: 0.0 for c in SEQUENCE_COLUMNS})  # every history emptied
    assert not np.allclose(fused.logits(rows), fused.logits(forgotten))
    attributions = fused.explain(rows, steps=64)
    assert list(attributions[0])[-1] == HISTORY_ATTRIBUTION
    # completeness: attributions sum to (logit(x) - logit(baseline)) / T; the baseline's history is
    # the empty one, so a row with no history gets no history attribution
    # the model is the mean of its members, so the baseline logit is the mean of theirs
    assert len(fused.model.members) == 2
    with torch.no_grad():
        base = np.mean([
            float(m.head_from_vectors(
                fused.model.text_baseline.unsqueeze(0),
                torch.zeros(1, len(NUMERIC_FEATURES)),
                [e.weight[1:].mean(0, keepdim=True) for e in m.cat_embeddings.values()],
                m.history_vector(torch.zeros(1, len(SEQUENCE_COLUMNS))),
            ))
            for m in fused.model.members
        ])
    for a, zi in zip(attributions, fused.logits(rows), strict=True):
        assert sum(a.values()) == pytest.approx(float(zi - base), abs=1e-3)
    no_history = fused.explain(forgotten.iloc[:1], steps=16)[0]
    assert no_history[HISTORY_ATTRIBUTION] == pytest.approx(0.0, abs=1e-6)


def test_a_fused_model_refuses_a_frame_without_histories(fused, frame):
    with pytest.raises(KeyError, match="behaviour-sequence"):
        fused.predict_proba(frame)  # planted data: no users, so no sequence columns


def test_a_fused_model_saves_loads_and_embeds(fused, history_frame, tmp_path):
    fused.save(tmp_path / "m")
    loaded = RiskScorer.load(tmp_path / "m", device="cpu")
    assert loaded.config.sequence and loaded.config.numeric_embedding == "periodic"
    np.testing.assert_allclose(loaded.predict_proba(history_frame), fused.predict_proba(history_frame), atol=1e-6)
    emb = loaded.embeddings(history_frame.iloc[:5])
    assert emb.shape == (5, 2 * loaded.config.hidden[-1]) and np.isfinite(emb).all()
    assert loaded.config.members == 2


def test_a_model_without_text_builds_without_warnings(tokenizer, history_frame):
    """text_dim 0 (the benchmark's no-text ablation) is an empty projection on purpose: no torch warning."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = RiskModel.build(ModelConfig(encoder="tiny", finetune_layers=0, sequence=True, text_dim=0))
    scorer = RiskScorer(model, tokenizer, Normalizer.fit(history_frame))
    assert model.members[0].text_proj.weight.numel() == 0
    assert np.isfinite(scorer.logits(history_frame.iloc[:4])).all()


def test_a_history_only_model_reads_nothing_else(tokenizer, history_frame):
    torch.manual_seed(0)
    model = RiskModel.build(ModelConfig(encoder="tiny", finetune_layers=0, sequence=True, tabular=False))
    s = RiskScorer(model, tokenizer, Normalizer.fit(history_frame))
    rows = history_frame.iloc[-4:]
    shifted = rows.assign(amount_log=rows["amount_log"] + 5.0)  # a tabular input changed
    np.testing.assert_allclose(s.logits(rows), s.logits(shifted))
    with pytest.raises(ValueError, match="sequence branch"):
        RiskModel.build(ModelConfig(encoder="tiny", sequence=False, tabular=False))


def test_the_history_summary_counts_and_finds_extremes_per_group():
    from riskops.features.sequences import SEQUENCE_LENGTH, TOKEN_FIELDS, TOKEN_NUMERIC
    from riskops.training.sequence_encoder import (
        N_SUMMARY,
        N_TOKEN_CATEGORICAL,
        history_summary,
        token_numeric_scale,
    )

    tokens = torch.zeros(2, SEQUENCE_LENGTH, len(TOKEN_FIELDS))  # row 1: no history at all
    rel, ratio = TOKEN_FIELDS.index("relation"), TOKEN_FIELDS.index("amount_ratio_log")
    flag = TOKEN_FIELDS.index("same_card")  # any flag field: checks that the per-field columns line up
    # row 0: two of the user's events (one on the same device) and one of another user on this device
    tokens[0, 0, rel], tokens[0, 0, ratio] = 1 + 1 + 2, -3.0  # same user and device; this order is far larger
    tokens[0, 1, rel], tokens[0, 1, ratio], tokens[0, 1, flag] = 1 + 1, -1.5, 1.0  # same user, other device
    tokens[0, 2, rel], tokens[0, 2, ratio] = 1 + 2, 0.6  # another user on this device, a larger order
    out = history_summary(tokens, token_numeric_scale())
    assert out.shape == (2, N_SUMMARY)
    assert torch.equal(out[1], torch.zeros(N_SUMMARY))  # no history: every statistic 0, nothing infinite

    n_num, length = len(TOKEN_NUMERIC), SEQUENCE_LENGTH
    k = TOKEN_FIELDS.index("amount_ratio_log") - N_TOKEN_CATEGORICAL
    scale = float(token_numeric_scale()[k])
    group = 1 + 3 * n_num
    every, user = out[0, :group], out[0, group : 2 * group]
    for stats, n, mean, high, low in ((every, 3, (-3.0 - 1.5 + 0.6) / 3, 0.6, -3.0), (user, 2, -2.25, -1.5, -3.0)):
        assert float(stats[0]) == pytest.approx(n / length)
        assert float(stats[1 + k]) == pytest.approx(mean / scale)
        assert float(stats[1 + n_num + k]) == pytest.approx(high / scale)
        assert float(stats[1 + 2 * n_num + k]) == pytest.approx(low / scale)
    f = TOKEN_FIELDS.index("same_card") - N_TOKEN_CATEGORICAL
    assert float(user[1 + n_num + f]) == 1.0 and float(every[1 + f]) == pytest.approx(1 / 3)
    device_not_user, ip_not_user, user_not_device, user_not_ip = out[0, 2 * group :].tolist()
    assert (device_not_user, ip_not_user) == (pytest.approx(1 / length), 0.0)
    assert (user_not_device, user_not_ip) == (pytest.approx(1 / length), pytest.approx(2 / length))


def test_the_history_summary_reaches_the_score(tokenizer, history_frame):
    """The summary is an input of the history vector: with its weights zeroed the score changes."""
    from riskops.features.sequences import SEQUENCE_COLUMNS

    config = ModelConfig(encoder="tiny", finetune_layers=0, sequence=True)
    model = RiskModel.build(config).eval()
    encoder = model.members[0].sequence_encoder
    seq = torch.tensor(history_frame[list(SEQUENCE_COLUMNS)].to_numpy(np.float32)[-8:])
    with torch.no_grad():
        before = encoder(seq)
        encoder.summary.weight.zero_()
        encoder.summary.bias.zero_()
        after = encoder(seq)
    has_history = torch.tensor(history_frame["seq_00_relation"].to_numpy()[-8:] > 0)  # the newest token is real
    assert has_history.any()
    assert not torch.allclose(before[has_history], after[has_history])
