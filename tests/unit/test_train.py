"""riskops.training.finetune, riskops.training.text_cache and riskops.data.splits: fine-tuning, the frozen-layer cache, the time split.

Tiny random encoder everywhere except one slow test with the real all-MiniLM-L6-v2.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score
from support.data import SIGNAL, planted_signal_transactions

from components.train import train_model_op
from riskops.data.splits import time_split
from riskops.features.contract import TEXT_COLUMN, build_model_frame
from riskops.features.sequences import add_sequence_columns
from riskops.training.finetune import (
    TrainConfig,
    downsample_legit,
    set_seed,
    train_from_training_set,
    train_model,
)
from riskops.training.finetune_run import loss_function
from riskops.training.model import ModelConfig, RiskModel, base_tokenizer, resolve_device
from riskops.training.scorer import RiskScorer
from riskops.training.text_cache import LowerStateCache, length_bucketed_batches

SEED = 11
# One thread: these models are tiny, and on a busy 2-core machine two OpenMP threads can be 10x slower.


def make_transactions(n: int, seed: int, fraud_rate: float = 0.1) -> pd.DataFrame:
    return planted_signal_transactions(n, seed, fraud_rate)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> dict:
    df = make_transactions(2400, seed=SEED)
    train, val, test = time_split(df, test_fraction=0.25, val_fraction=0.15)
    return {"df": df, "train": train, "val": val, "test": test}


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    config = TrainConfig(  # small data: small batches (the defaults are sized for tens of thousands of rows)
        encoder="tiny", epochs=4, patience=2, finetune_layers=1, seed=SEED, progress=False, num_threads=1,
        batch_size=64, lr_head=1e-3,
    )
    result = train_model(
        build_model_frame(data["train"]),
        build_model_frame(data["val"]),
        data["train"]["is_fraud"],
        data["val"]["is_fraud"],
        config,
        out,
    )
    return result, config


# --------------------------------------------------------------------------- training
def test_learns_a_planted_signal(trained, data):
    result, _ = trained
    scorer = RiskScorer.load(result.model_dir, device="cpu")
    frame = build_model_frame(data["test"])
    p = scorer.predict_proba(frame)
    assert ((p >= 0) & (p <= 1)).all()
    assert roc_auc_score(data["test"]["is_fraud"], p) > 0.9
    # calibrated: the mean score is close to the fraud rate of the future period
    assert abs(p.mean() - data["test"]["is_fraud"].mean()) < 0.05
    assert result.val_pr_auc > 0.5 and 1 <= result.best_epoch <= len(result.history)


def test_result_history_and_training_json(trained):
    result, config = trained
    assert result.device == "cpu" and result.train_seconds > 0
    assert [h["epoch"] for h in result.history] == list(range(1, len(result.history) + 1))
    assert all({"train_loss", "val_loss", "val_pr_auc", "seconds"} <= set(h) for h in result.history)
    assert result.val_pr_auc == pytest.approx(max(h["val_pr_auc"] for h in result.history), abs=1e-9)
    assert (
        result.calibration["n"] == result.n_val
        and result.calibration["nll_after"] <= result.calibration["nll_before"]
    )
    saved = json.loads((result.model_dir / "training.json").read_text())
    assert saved["train_config"]["encoder"] == "tiny" and saved["result"]["best_epoch"] == result.best_epoch
    assert result.pos_weight == pytest.approx(min((1 - 0.1) / 0.1, config.pos_weight_cap), rel=0.3)


def test_explain_points_at_the_planted_feature(trained, data):
    result, _ = trained
    scorer = RiskScorer.load(result.model_dir, device="cpu")
    frauds = data["test"][(data["test"]["is_fraud"] == 1) & (data["test"][SIGNAL] >= 4)].iloc[:8]
    attributions = scorer.explain(build_model_frame(frauds))
    assert len(attributions) == len(frauds) > 0
    for a in attributions:
        assert max(a, key=lambda k: abs(a[k])) == SIGNAL
        assert a[SIGNAL] > 0  # pushes towards fraud


def test_top_layer_changes_frozen_layers_do_not(trained):
    result, config = trained
    set_seed(config.seed)  # train_model builds its model right after seeding: same initial weights
    initial = RiskModel.build(
        ModelConfig(encoder="tiny", finetune_layers=config.finetune_layers)
    ).state_dict()
    final = load_file(str(result.model_dir / "model.safetensors"))
    n_layers = 3
    top = f"encoder.encoder.layer.{n_layers - 1}."
    frozen = ("encoder.embeddings.", *(f"encoder.encoder.layer.{i}." for i in range(n_layers - 1)))
    assert any(k.startswith(frozen) for k in final)
    for k, v in final.items():
        if k.startswith(frozen):
            assert torch.equal(v, initial[k]), k
    changed = [
        k
        for k in final
        if k.startswith(top) and k.endswith("weight") and not torch.equal(final[k], initial[k])
    ]
    assert len(changed) >= 4  # attention q/k/v/output, FFN, LayerNorm


def test_cached_lower_states_equal_the_full_encoder():
    torch.manual_seed(0)
    model = RiskModel.build(ModelConfig(encoder="tiny", finetune_layers=1)).eval()
    tok = base_tokenizer()
    texts = [
        "gift card 100 | paypal",
        "wireless earbuds | category electronics | merchant shop | card via web",
        "x",
    ]
    cache = LowerStateCache.build(model, tok, texts, max_length=48, device=torch.device("cpu"), batch_size=2)
    assert len(cache) == 3 and cache.lengths.tolist() == [len(tok(t)["input_ids"]) for t in texts]
    ids = torch.tensor([2, 0, 1, 0])
    hidden, mask = cache.gather(ids, torch.device("cpu"))
    enc = tok([texts[i] for i in ids], padding=True, return_tensors="pt")
    with torch.no_grad():
        cached = model.pooled_from_lower(hidden, mask)
        full_bert = model.encoder(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        reference = (full_bert * m).sum(1) / m.sum(1)
    assert torch.allclose(cached, reference, atol=1e-5)
    assert mask.shape[1] == max(cache.lengths.tolist())  # trimmed to the batch's longest text


def test_max_steps_limits_training(data, tmp_path):
    config = TrainConfig(
        encoder="tiny", epochs=5, max_steps=3, progress=False, num_threads=1, seed=1, cpu_bf16=True, batch_size=64
    )
    result = train_model(
        build_model_frame(data["train"].iloc[:300]),
        build_model_frame(data["val"].iloc[:100]),
        data["train"]["is_fraud"].iloc[:300],
        data["val"]["is_fraud"].iloc[:100],
        config,
        tmp_path / "m",
    )
    assert len(result.history) == 1 and result.history[-1]["steps"] == 3
    assert RiskScorer.load(tmp_path / "m").predict_proba(build_model_frame(data["test"].iloc[:5])).shape == (
        5,
    )


def test_saved_model_pre_encodes_every_text_of_its_data(data, tmp_path):
    train, val = data["train"].iloc[:300].copy(), data["val"].iloc[:100].copy()
    legit = np.flatnonzero(train["is_fraud"].to_numpy() == 0)
    train.iloc[legit[0], train.columns.get_loc("product_title")] = "only in a legit row"
    val.iloc[0, val.columns.get_loc("product_title")] = "only in validation"
    config = TrainConfig(encoder="tiny", epochs=1, max_steps=1, progress=False, num_threads=1,
                         max_train_rows=int(train["is_fraud"].sum()) + 5)  # nearly every legit row sampled away
    train_model(build_model_frame(train), build_model_frame(val), train["is_fraud"], val["is_fraud"], config,
                tmp_path / "m")
    warm = RiskScorer.load(tmp_path / "m").warm_texts
    texts = set(build_model_frame(pd.concat([train, val]))["text"])
    assert set(warm) == texts and any("only in a legit row" in t for t in warm)
    assert any("only in validation" in t for t in warm)


def test_train_from_training_set_splits_by_time(data, tmp_path):
    config = TrainConfig(
        encoder="tiny", epochs=1, max_steps=2, progress=False, num_threads=1, focal_gamma=2.0
    )
    result = train_from_training_set(
        data["df"], tmp_path / "m", config, test_fraction=0.25, val_fraction=0.15
    )
    assert result.n_train == len(data["train"]) and result.n_val == len(data["val"])


def test_trains_on_generated_transactions(tmp_path):
    generator = pytest.importorskip("riskops.data.generator")
    df = generator.generate(generator.GeneratorConfig(rows=2500, seed=5, fraud_rate=0.03))
    config = TrainConfig(encoder="tiny", epochs=1, max_steps=5, progress=False, num_threads=1)
    result = train_from_training_set(df, tmp_path / "m", config)
    assert result.n_train + result.n_val == round(len(df) * 0.8)
    _, _, test = time_split(add_sequence_columns(df))  # histories from every earlier row, as training
    scorer = RiskScorer.load(tmp_path / "m")
    assert scorer.config.sequence  # generated data has users: the model reads their histories
    p = scorer.predict_proba(build_model_frame(test))
    assert p.shape == (len(test),) and ((p >= 0) & (p <= 1)).all()
    assert 1 / 20 <= result.calibration["temperature"] <= 20


def test_bad_inputs_are_rejected(data, tmp_path):
    frame = build_model_frame(data["train"].iloc[:20])
    with pytest.raises(ValueError, match="single class"):
        train_model(
            frame, frame, np.zeros(20), np.zeros(20), TrainConfig(encoder="tiny", num_threads=1), tmp_path
        )
    with pytest.raises(ValueError, match="labels"):
        train_model(
            frame, frame, np.zeros(19), np.zeros(20), TrainConfig(encoder="tiny", num_threads=1), tmp_path
        )


def test_length_bucketed_batches_cover_every_row_once():
    lengths = torch.randint(10, 45, (1000,), generator=torch.Generator().manual_seed(0))
    batches = length_bucketed_batches(lengths, 64, torch.Generator().manual_seed(1), bucket_batches=4)
    assert len(batches) == 16 and all(len(b) <= 64 for b in batches)
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    # similar lengths inside a batch: less padding than random batches
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    assert padded < 0.95 * sum(len(b) * 44 for b in batches)
    again = length_bucketed_batches(lengths, 64, torch.Generator().manual_seed(1), bucket_batches=4)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))


def test_downsampling_keeps_every_fraud():
    frame = pd.DataFrame({"x": np.arange(1000)})
    y = (np.arange(1000) % 50 == 0).astype(np.float32)
    small, ys = downsample_legit(frame, y, 200, seed=0)  # the budget counts legitimate rows only
    assert ys.sum() == y.sum() == 20 and (ys == 0).sum() == 200
    assert small["x"].is_monotonic_increasing  # time order kept
    assert downsample_legit(frame, y, None, seed=0)[0] is frame
    rich = (np.arange(1000) % 2 == 0).astype(np.float32)  # 500 frauds: still 200 legitimate rows
    _, yr = downsample_legit(frame, rich, 200, seed=0)
    assert yr.sum() == 500 and (yr == 0).sum() == 200
    assert downsample_legit(frame, y, 5000, seed=0)[0] is frame  # fewer legit rows than the budget


def test_loss_weights_frauds_and_focal_downweights_easy_rows():
    logits = torch.tensor([3.0, -3.0, 0.0])
    y = torch.tensor([1.0, 0.0, 1.0])
    plain = loss_function(1.0, 0.0)(logits, y)
    assert torch.isclose(plain, torch.nn.functional.binary_cross_entropy_with_logits(logits, y))
    assert loss_function(5.0, 0.0)(logits, y) > plain
    assert loss_function(1.0, 2.0)(logits, y) < plain


def test_each_member_of_an_ensemble_gets_its_own_loss():
    """[rows, members] logits: the loss is the members' mean loss, not the loss of the mean logit."""
    y = torch.tensor([1.0, 0.0])
    members = torch.tensor([[4.0, -4.0], [-4.0, 4.0]])  # each member right once, wrong once
    loss = loss_function(1.0, 0.0)
    per_member = [loss(members[:, k], y) for k in range(2)]
    assert torch.isclose(loss(members, y), torch.stack(per_member).mean())
    assert loss(members, y) > loss(members.mean(-1), y)  # the mean logit (0) would hide both mistakes


def test_an_ensemble_learns_the_planted_signal(data, tmp_path):
    config = TrainConfig(
        encoder="tiny", epochs=3, patience=2, finetune_layers=0, seed=SEED, progress=False, num_threads=1,
        batch_size=64, lr_head=1e-3, members=2,
    )
    result = train_model(
        build_model_frame(data["train"]), build_model_frame(data["val"]),
        data["train"]["is_fraud"], data["val"]["is_fraud"], config, tmp_path / "m",
    )  # fmt: skip
    scorer = RiskScorer.load(result.model_dir, device="cpu")
    assert scorer.config.members == 2
    p = scorer.predict_proba(build_model_frame(data["test"]))
    assert roc_auc_score(data["test"]["is_fraud"], p) > 0.9
    saved = json.loads((tmp_path / "m" / "training.json").read_text())["train_config"]
    assert saved["members"] == 2


def test_kfp_component_signature():
    spec = train_model_op.component_spec
    assert {"training_set", "epochs", "encoder", "max_steps", "finetune_layers", "seed"} <= set(spec.inputs)
    assert {"model", "metrics"} <= set(spec.outputs)


def test_auto_device_is_cpu_without_cuda():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


# --------------------------------------------------------------------------- time split
def test_time_split_orders_train_val_test():
    df = make_transactions(1000, seed=2).sample(frac=1.0, random_state=0)  # shuffled on purpose
    train, val, test = time_split(df, test_fraction=0.2, val_fraction=0.15, min_val_positives=0)
    assert (len(train), len(val), len(test)) == (650, 150, 200)
    assert train["event_timestamp"].max() <= val["event_timestamp"].min()
    assert val["event_timestamp"].max() <= test["event_timestamp"].min()
    assert sorted(pd.concat([train, val, test]).index) == sorted(df.index)  # every row exactly once
    again = time_split(df.sample(frac=1.0, random_state=1), 0.2, 0.15, min_val_positives=0)  # order-free
    assert all(a.index.equals(b.index) for a, b in zip((train, val, test), again, strict=True))
    assert len(time_split(df, 0.2, 0.0)[1]) == 0
    with pytest.raises(ValueError):
        time_split(df, 0.6, 0.5)
    with pytest.raises(KeyError):
        time_split(df.drop(columns="event_timestamp"))


def test_time_split_recent_from_keeps_the_recent_window_in_training():
    df = make_transactions(1000, seed=2).sample(frac=1.0, random_state=0)
    ts = pd.to_datetime(df["event_timestamp"], utc=True)
    since = ts.sort_values().iloc[800]  # the newest 200 rows are "the recent window"
    train, val, test = time_split(df, 0.2, 0.15, min_val_positives=0, recent_from=since.isoformat())
    recent = df.index[ts >= since]
    assert len(recent) == 200 and set(recent) <= set(train.index)  # every recent row trains
    assert (len(val), len(test)) == (120, 160)  # the fractions apply to the 800 older rows
    assert test["event_timestamp"].max() < since and val["event_timestamp"].max() <= test["event_timestamp"].min()
    assert sorted(pd.concat([train, val, test]).index) == sorted(df.index)
    same = time_split(df, 0.2, 0.15, min_val_positives=0, recent_from="")  # "" = off, as the pipeline default
    plain = time_split(df, 0.2, 0.15, min_val_positives=0)
    assert all(a.index.equals(b.index) for a, b in zip(same, plain, strict=True))
    with pytest.raises(ValueError, match="no older rows"):
        time_split(df, 0.2, 0.15, recent_from=ts.min().isoformat())


def test_time_split_breaks_timestamp_ties_by_transaction_id():
    ts = pd.Timestamp("2026-03-01", tz="UTC")
    df = pd.DataFrame({"event_timestamp": [ts] * 10, "transaction_id": [f"t{i}" for i in range(9, -1, -1)]})
    train, val, test = time_split(df, 0.2, 0.2)
    assert list(train["transaction_id"]) == [f"t{i}" for i in range(6)]
    assert list(test["transaction_id"]) == ["t8", "t9"]


# --------------------------------------------------------------------------- real encoder
@pytest.mark.slow
def test_minilm_one_training_step(data, tmp_path):
    from transformers import BertModel

    from riskops.training.model import minilm_path

    train = data["train"].iloc[:64]
    val = data["val"].iloc[:64]
    config = TrainConfig(
        encoder="minilm", epochs=1, max_steps=1, batch_size=32, finetune_layers=2, progress=False, num_threads=1
    )
    result = train_model(
        build_model_frame(train),
        build_model_frame(val),
        train["is_fraud"],
        val["is_fraud"],
        config,
        tmp_path / "m",
    )
    assert result.history[-1]["steps"] == 1
    final = load_file(str(tmp_path / "m" / "model.safetensors"))
    pretrained = BertModel.from_pretrained(str(minilm_path()), add_pooling_layer=False).state_dict()
    assert torch.equal(final["encoder.encoder.layer.0.attention.self.query.weight"],
                       pretrained["encoder.layer.0.attention.self.query.weight"])  # fmt: skip
    assert not torch.equal(final["encoder.encoder.layer.5.attention.self.query.weight"],
                           pretrained["encoder.layer.5.attention.self.query.weight"])  # fmt: skip
    scorer = RiskScorer.load(tmp_path / "m", device="cpu")  # only the model folder is needed
    assert scorer.config.encoder_config["hidden_size"] == 384
    p = scorer.predict_proba(build_model_frame(data["test"].iloc[:16]))
    assert p.shape == (16,) and ((p >= 0) & (p <= 1)).all()
    assert TEXT_COLUMN in build_model_frame(train).columns


def test_time_split_grows_a_fraudless_validation_block_back_in_time():
    df = make_transactions(1000, seed=2)
    order = df.sort_values("event_timestamp").index
    df["is_fraud"] = 0  # a quiet stretch: the only frauds are rows 500, 520 and 540 in time order
    df.loc[order[[500, 520, 540]], "is_fraud"] = 1
    train, val, test = time_split(df, 0.2, 0.1, min_val_positives=3)
    assert len(test) == 200 and test.index.equals(time_split(df, 0.2, 0.1, min_val_positives=0)[2].index)
    assert int(val["is_fraud"].sum()) == 3 and len(val) == 800 - 500  # reaches back to row 500
    assert train["event_timestamp"].max() <= val["event_timestamp"].min()
    assert len(train) + len(val) + len(test) == 1000
    # never more than half of the training rows
    df["is_fraud"] = 0
    train, val, _ = time_split(df, 0.2, 0.1, min_val_positives=3)
    assert len(train) == 700 - 350 and len(val) == 100 + 350
