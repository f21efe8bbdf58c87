"""Fused-model benchmark (issue #23): does the behaviour-sequence + tabular + text model beat tuned LightGBM?

    .venv/bin/python benchmarks/bench_fused.py [--rows 40000] [--seeds 7,8,9] [--trials 50]
                                               [--out benchmarks/results] [--quick] [--threads 1] [--days D]
                                               [--jobs N]

Per generator seed: generate transactions, build the Feast point-in-time features (temporary
folder), add the behaviour-sequence columns on the whole frame (histories come from every earlier
row), split by time into train / validation / test. Every choice (optuna trial and its rounds,
the fused model's epoch and calibration, the "best LightGBM variant") is made on validation; the
test period is scored once per model:

* ``lightgbm_tuned``: tabular features (NUMERIC_FEATURES + CATEGORICAL_FEATURES), --trials optuna trials;
* ``lightgbm_tuned_behaviour``: the same + hand-made sequence features (BEHAVIOUR_FEATURES), same tuning;
* ``tabular_transformer``: the fused model without the sequence branch (text + tabular);
* ``sequence_only``: the sequence branch alone (no text, no tabular features);
* ``fused_single``: sequence + text + tabular, trained jointly, one network;
* ``fused_no_text``: ``fused_single`` without the product text (text width 0): does the text pay?
* ``fused``: the platform's model: TRAINING.members such networks side by side, logits averaged
  (riskops.training.model.RiskModel); the single-network rows above are its ablations;
* ``lightgbm_on_fused_embedding``: tabular features + the fused model's last hidden layer, same tuning
  (the embedding of the training rows comes from a model trained on them, so it is optimistic there;
  validation chooses the trial, so the test figure stays honest);
* ``fused_plus_lightgbm``: ``fused`` and the best LightGBM variant, their ranks averaged with equal
  weights (riskops.training.ensemble; percentiles against each model's validation scores). Not the
  goal's model: what the history model knows that the trees do not shows as the gain over the trees;
* ``sequence_only_shuffled``: the shuffle ablation (`shuffle_times_within_user`): each user's event
  times permuted among that user's rows, sequences rebuilt, the frame split again by its new times
  (so its test period holds other rows), ``sequence_only`` retrained on it. If the history signal
  lives in the order of events, this falls well below ``sequence_only``.

Reported per model and seed: test PR-AUC (average precision), ROC-AUC, recall at 1% FPR, train seconds
(wall clock), per-fraud-type PR-AUC; ``fused`` against the LightGBM variant with the better VALIDATION
PR-AUC with a paired block bootstrap over test days; the fused model's single-row scoring latency.
Across seeds: mean and 95% t-interval; the goal (fused / best LightGBM >= GOAL_RATIO and the
difference's interval above 0) is computed from those numbers. Writes bench_fused.json / .md / .png.

``--jobs N`` runs N seeds at a time, each in its own process with ``--threads`` threads: on a machine
with many cores, more seeds and rows (more test frauds, a narrower interval) in the same wall time.
A seed's results do not depend on N (one thread per model is deterministic); its train seconds and
latency do, as the processes share the machine, and the report says how many ran side by side.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from riskops.settings import use_offline_environment  # noqa: E402

use_offline_environment()

from riskops.features.contract import CATEGORICAL_FEATURES, NUMERIC_FEATURES  # noqa: E402
from riskops.training.ensemble import fit_rank_ensemble  # noqa: E402
from riskops.training.metrics import score_metrics  # noqa: E402
from riskops.training.params import TRAINING  # noqa: E402
from riskops.training.significance import mean_ci, metric_by_group, paired_bootstrap  # noqa: E402

log = logging.getLogger("bench_fused")
RESULTS = ROOT / "benchmarks" / "results"

# The fused models' training knobs (riskops.training.finetune.TrainConfig; batch size, learning rates and
# patience are its defaults). Each run adds the model's sequence/tabular switches (FUSED_MODELS) and seed = the generator seed;
# num_threads defaults to --threads. Scores and latency are computed on CPU (RiskScorer.load(device="cpu")).
FUSED_CONFIG: dict = {  # the training pipeline's own profile (riskops.training.params.TRAINING)
    "encoder": TRAINING.encoder,
    "finetune_layers": TRAINING.finetune_layers,
    "epochs": TRAINING.epochs,
    "max_train_rows": TRAINING.max_train_rows or None,
    "members": TRAINING.members,
    "progress": False,
}
QUICK_OVERRIDES: dict = {"encoder": "tiny", "epochs": 2}  # --quick: smoke settings, numbers not meaningful
# The sequence / tabular switches of each fused model (names as in the report). ``fused`` is the platform's
# model (TRAINING.members heads averaged); the ablations are single networks, to be read against
# ``fused_single`` (the same network as one member), which also shows what the ensemble adds.
FUSED_MODELS: dict[str, dict] = {
    "tabular_transformer": {"sequence": False, "tabular": True, "members": 1},
    "sequence_only": {"sequence": True, "tabular": False, "members": 1},
    "fused_single": {"sequence": True, "tabular": True, "members": 1},
    "fused_no_text": {"sequence": True, "tabular": True, "members": 1, "model": {"text_dim": 0}},
    "fused": {"sequence": True, "tabular": True},
    "sequence_only_shuffled": {"sequence": True, "tabular": False, "members": 1},
}
LIGHTGBM_VARIANTS = ("lightgbm_tuned", "lightgbm_tuned_behaviour")
MODELS = (
    *LIGHTGBM_VARIANTS,
    "tabular_transformer",
    "sequence_only",
    "fused_single",
    "fused_no_text",
    "fused",
    "lightgbm_on_fused_embedding",
    "fused_plus_lightgbm",
    "sequence_only_shuffled",
)
GOAL_RATIO = 1.10  # issue #23: fused PR-AUC at least 10% above the best tuned LightGBM, difference > 0
LATENCY_ROWS = 300
N_BOOT = 1000
MIN_DAYS = 10  # fewer test days than this: the report says the day-block bootstrap interval is coarse


def shuffle_times_within_user(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The shuffle ablation's frame: each user's event times permuted among that user's rows.

    A row keeps its contents and label (amount, device, product, is_fraud, ...) but gets the
    timestamp of another row of the same user, drawn as a uniform random permutation per user; the
    rows are then re-sorted by their new time (original index kept). Each user's set of contents
    and set of times stay the same, only which content happened when changes, so a model that
    reads the order of a user's events loses it. Rows without a user form one group.

    Args:
        frame: transactions with ``user_id`` and ``event_timestamp`` (sequence columns, if any,
            are stale afterwards: rebuild them with ``add_sequence_columns``).
        seed: seeds the permutation.
    """
    n = len(frame)
    users = pd.factorize(frame["user_id"].astype("string").fillna(""))[0]
    ts = pd.to_datetime(frame["event_timestamp"], utc=True)
    by_time = np.lexsort((ts.to_numpy("datetime64[ns]").astype("int64"), users))  # per user, in time order
    by_chance = np.lexsort((np.random.default_rng(seed).random(n), users))  # per user, in random order
    source = np.empty(n, dtype="int64")
    source[by_chance] = by_time  # the k-th drawn row of a user takes the user's k-th time
    out = frame.copy()
    out["event_timestamp"] = pd.Series(ts.array.take(source), index=frame.index)
    keys = ["event_timestamp", "transaction_id"] if "transaction_id" in out.columns else ["event_timestamp"]
    return out.sort_values(keys, kind="mergesort")


def best_lightgbm(models: dict[str, dict]) -> str:
    """The LightGBM variant with the higher VALIDATION PR-AUC (never the test figure); ties: the first."""
    return max(
        LIGHTGBM_VARIANTS, key=lambda name: (models[name]["val_pr_auc"], -LIGHTGBM_VARIANTS.index(name))
    )


class _Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def _evaluate(y_val, val_scores, y_test, test_scores, fraud_type, seconds: float, notes: str = "") -> dict:
    m = score_metrics(y_test, test_scores)
    by_type = metric_by_group(y_test, test_scores, fraud_type)
    return {
        "val_pr_auc": score_metrics(y_val, val_scores)["pr_auc"],
        "pr_auc": m["pr_auc"],
        "roc_auc": m["roc_auc"],
        "recall_at_1pct_fpr": m["recall_at_1pct_fpr"],
        "train_seconds": seconds,
        "per_fraud_type": {
            str(t): {"pr_auc": r.metric, "n_positives": int(r.n_positives)} for t, r in by_type.iterrows()
        },
        "notes": notes,
    }


def _split(frame: pd.DataFrame) -> dict:
    """Sequence columns on the whole frame, then the time split and each part's model frame and labels."""
    from riskops.data.splits import time_split
    from riskops.features.contract import build_model_frame
    from riskops.features.sequences import add_sequence_columns

    parts = dict(
        zip(("train", "val", "test"), time_split(add_sequence_columns(frame), 0.2, 0.15), strict=True)
    )
    return {
        k: {"raw": p, "mf": build_model_frame(p), "y": p["is_fraud"].astype("int64").to_numpy()}
        for k, p in parts.items()
    }


def _tune(X: dict[str, pd.DataFrame], s: dict, args, seed: int):
    from riskops.training.tuning import tune_lightgbm

    with _Timer() as t:
        tuned = tune_lightgbm(
            X["train"],
            s["train"]["y"],
            X["val"],
            s["val"]["y"],
            n_trials=args.trials,
            seed=seed,
            categorical=list(CATEGORICAL_FEATURES),
            n_jobs=args.threads,
        )
    scores = {k: tuned.predict_scores(X[k]) for k in ("val", "test")}
    best = {k: float(f"{v:.3g}") if isinstance(v, float) else v for k, v in tuned.best_params.items()}
    note = f"{tuned.n_trials} optuna trials, best {best}, {tuned.best_iteration} rounds"
    return scores, t.seconds, note


def _train_fused(name: str, s: dict, args, seed: int, work: Path):
    from riskops.training.finetune import TrainConfig, train_model
    from riskops.training.scorer import RiskScorer

    cfg = {**FUSED_CONFIG, **(QUICK_OVERRIDES if args.quick else {}), **FUSED_MODELS[name], "seed": seed}
    cfg.setdefault("num_threads", args.threads)
    with _Timer() as t:
        res = train_model(
            s["train"]["mf"], s["val"]["mf"], s["train"]["y"], s["val"]["y"], TrainConfig(**cfg), work / name
        )
    scorer = RiskScorer.load(work / name, device="cpu")
    scores = {k: scorer.predict_proba(s[k]["mf"]) for k in ("val", "test")}
    return (
        scores,
        t.seconds,
        f"best epoch {res.best_epoch}, {res.n_train} training rows, {res.device}",
        scorer,
    )


def latency_ms(model_dir: Path, mf: pd.DataFrame, n: int = LATENCY_ROWS, seed: int = 0) -> dict:
    """p50 / p99 of ``predict_proba`` on one-row ColumnFrames (serving's frame type), one torch thread.

    The model is loaded afresh and its cache warmed as a server starts (``warm_cache``: the frequent
    training texts), so a test row's text is cached only if serving would have it cached too.
    """
    import torch

    from riskops.features.contract import ColumnFrame
    from riskops.training.scorer import RiskScorer

    scorer = RiskScorer.load(model_dir, device="cpu")

    columns = {c: mf[c].to_numpy() for c in mf.columns}
    rows = np.random.default_rng(seed).choice(len(mf), size=min(n, len(mf)), replace=False)
    frames = [ColumnFrame({c: v[i : i + 1] for c, v in columns.items()}) for i in rows]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scorer.warm_cache()
        scorer.predict_proba(frames[-1])  # first call pays one-off set-up
        hits, misses = scorer.cache_hits, scorer.cache_misses
        times = []
        for frame in frames:
            t = time.perf_counter()
            scorer.predict_proba(frame)
            times.append((time.perf_counter() - t) * 1e3)
    finally:
        torch.set_num_threads(threads)
    hits, misses = scorer.cache_hits - hits, scorer.cache_misses - misses
    return {
        "p50": float(np.percentile(times, 50)),
        "p99": float(np.percentile(times, 99)),
        "n": len(times),
        "text_cache_hit_rate": hits / max(hits + misses, 1),
    }


def run_seed(seed: int, args, work: Path, t0: float) -> dict:
    """Every model on one generated dataset; returns the seed's JSON-ready results."""
    from riskops.data.generator import GeneratorConfig, generate
    from riskops.features.behaviour import behaviour_features
    from riskops.features.build import build_features

    def progress(what: str) -> None:
        log.info("seed %d: %s (%.0fs elapsed)", seed, what, time.perf_counter() - t0)

    progress(f"generating {args.rows} rows and building features")
    with _Timer() as t_feat:
        frame = build_features(
            generate(GeneratorConfig(rows=args.rows, seed=seed, days=args.days)), work / "features"
        ).training_frame
        s = _split(frame)
    y_val, y_test, test = s["val"]["y"], s["test"]["y"], s["test"]["raw"]
    fraud_type = test["fraud_type"].astype("string").to_numpy()
    tab = list(NUMERIC_FEATURES) + list(CATEGORICAL_FEATURES)
    X_tab = {k: s[k]["mf"][tab] for k in s}
    beh = behaviour_features(frame)  # on the whole frame: point-in-time by construction
    X_beh = {k: pd.concat([X_tab[k], beh.loc[X_tab[k].index]], axis=1) for k in s}
    models: dict[str, dict] = {}
    val_scores: dict[str, np.ndarray] = {}
    test_scores: dict[str, np.ndarray] = {}

    def record(name: str, scores: dict, seconds: float, notes: str, ys=(y_val, y_test), types=fraud_type):
        models[name] = _evaluate(ys[0], scores["val"], ys[1], scores["test"], types, seconds, notes)
        val_scores[name], test_scores[name] = scores["val"], scores["test"]
        progress(
            f"{name}: val PR-AUC {models[name]['val_pr_auc']:.4f}, test PR-AUC {models[name]['pr_auc']:.4f}, "
            f"{seconds:.0f}s"
        )

    for name, X in (("lightgbm_tuned", X_tab), ("lightgbm_tuned_behaviour", X_beh)):
        progress(f"{name}: {args.trials} trials")
        record(name, *_tune(X, s, args, seed))
    scorers = {}
    for name in ("tabular_transformer", "sequence_only", "fused_single", "fused_no_text", "fused"):
        progress(f"training {name}")
        scores, seconds, note, scorers[name] = _train_fused(name, s, args, seed, work)
        record(name, scores, seconds, note)

    progress("lightgbm_on_fused_embedding: embeddings, then tuning")
    with _Timer() as t_emb:
        emb = {k: scorers["fused"].embeddings(s[k]["mf"]) for k in s}
    names = [f"fused_emb_{i:02d}" for i in range(emb["train"].shape[1])]
    X_emb = {
        k: pd.concat([X_tab[k], pd.DataFrame(emb[k], index=X_tab[k].index, columns=names)], axis=1) for k in s
    }
    scores, seconds, note = _tune(X_emb, s, args, seed)
    total = seconds + t_emb.seconds + models["fused"]["train_seconds"]
    record(
        "lightgbm_on_fused_embedding", scores, total, f"{note}; train s include the fused model's training"
    )

    progress("sequence_only_shuffled: shuffling each user's event times, rebuilding the sequences")
    shuffled = shuffle_times_within_user(frame, seed)
    moved = float((shuffled["event_timestamp"] != frame.loc[shuffled.index, "event_timestamp"]).mean())
    sh = _split(shuffled)
    scores, seconds, note, _ = _train_fused("sequence_only_shuffled", sh, args, seed, work)
    record(
        "sequence_only_shuffled",
        scores,
        seconds,
        f"{note}; {moved:.0%} of rows got another time",
        ys=(sh["val"]["y"], sh["test"]["y"]),
        types=sh["test"]["raw"]["fraud_type"].astype("string").to_numpy(),
    )

    best = best_lightgbm(models)
    # what the sequence model knows that the trees do not: both models' ranks averaged (equal weights,
    # percentiles against their validation scores; nothing is fitted on the test period)
    blend = fit_rank_ensemble({"fused": val_scores["fused"], best: val_scores[best]})
    record(
        "fused_plus_lightgbm",
        {k: blend({"fused": v["fused"], best: v[best]}) for k, v in (("val", val_scores), ("test", test_scores))},
        models["fused"]["train_seconds"] + models[best]["train_seconds"],
        f"rank average {blend.describe()}",
    )
    days = pd.to_datetime(test["event_timestamp"], utc=True).dt.floor("D").to_numpy()
    boot = paired_bootstrap(
        y_test, test_scores["fused"], test_scores[best], groups=days, n_boot=N_BOOT, seed=seed
    )
    progress("latency of the fused model")
    data = {k: {"rows": len(s[k]["y"]), "frauds": int(s[k]["y"].sum())} for k in s}
    data["shuffled_test"] = {"rows": len(sh["test"]["y"]), "frauds": int(sh["test"]["y"].sum())}
    return {
        "data": {**data, "features_seconds": t_feat.seconds, "test_days": len(set(days))},
        "models": models,
        "best_lightgbm": best,
        "fused_vs_best_lightgbm": boot,
        "latency_ms": latency_ms(work / "fused", s["test"]["mf"], seed=seed),
    }


def summarise(per_seed: dict[int, dict]) -> dict:
    """Across seeds: each model's mean [95% t-interval], fused / best LightGBM and the goal verdict.

    The difference's interval is the t-interval over seeds; with a single seed (no spread to
    estimate) it is that seed's block-bootstrap interval over test days, and the summary says so.
    """
    runs = list(per_seed.values())
    out: dict = {"n_seeds": len(runs), "models": {}}
    for name in MODELS:
        ms = [r["models"][name] for r in runs]
        types = sorted({t for m in ms for t in m["per_fraud_type"]})
        out["models"][name] = {
            "pr_auc": mean_ci([m["pr_auc"] for m in ms]),
            **{
                k: float(np.mean([m[k] for m in ms]))
                for k in ("roc_auc", "recall_at_1pct_fpr", "train_seconds")
            },
            "per_fraud_type": {
                t: float(np.nanmean([m["per_fraud_type"].get(t, {}).get("pr_auc", np.nan) for m in ms]))
                for t in types
            },
        }
    fused = np.array([r["models"]["fused"]["pr_auc"] for r in runs])
    best = np.array([r["models"][r["best_lightgbm"]]["pr_auc"] for r in runs])
    ratio, diff = mean_ci(fused / best), mean_ci(fused - best)
    if len(runs) >= 2:
        lo, hi, source = diff["lo"], diff["hi"], f"95% t-interval over {len(runs)} seeds"
    else:
        (lo, hi), source = (
            runs[0]["fused_vs_best_lightgbm"]["diff_ci"],
            "block bootstrap over test days (1 seed)",
        )
    met = bool(ratio["mean"] >= GOAL_RATIO and math.isfinite(lo) and lo > 0)
    out["fused_vs_best_lightgbm"] = {
        "ratio": ratio,
        "difference": diff,
        "best_by_seed": [r["best_lightgbm"] for r in runs],
    }
    blend = np.array([r["models"]["fused_plus_lightgbm"]["pr_auc"] for r in runs])
    out["fused_plus_lightgbm_vs_best_lightgbm"] = {"ratio": mean_ci(blend / best), "difference": mean_ci(blend - best)}
    out["goal"] = {
        "ratio_at_least": GOAL_RATIO,
        "difference_interval_above": 0.0,
        "ratio_mean": ratio["mean"],
        "difference_interval": [lo, hi],
        "interval_source": source,
        "met": met,
    }
    seq, shuf = (out["models"][n]["pr_auc"]["mean"] for n in ("sequence_only", "sequence_only_shuffled"))
    out["shuffle_ablation"] = {
        "sequence_only": seq,
        "sequence_only_shuffled": shuf,
        "ratio": shuf / seq if seq else None,
    }
    out["latency_ms"] = {k: float(np.mean([r["latency_ms"][k] for r in runs])) for k in ("p50", "p99")}
    return out


def _f(v, nd: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def _iv(value, interval) -> str:
    return f"{_f(value)} [{_f(interval[0])}, {_f(interval[1])}]"


def _ci(c: dict) -> str:
    return _iv(c["mean"], (c["lo"], c["hi"]))


def markdown(doc: dict) -> str:
    """The report: summary table, goal, per-seed, per-fraud-type, shuffle ablation and bootstrap lines."""
    sm, seeds = doc["summary"], doc["seeds"]
    g, fv, ab, lat = sm["goal"], sm["fused_vs_best_lightgbm"], sm["shuffle_ablation"], sm["latency_ms"]
    bl = sm["fused_plus_lightgbm_vs_best_lightgbm"]
    lo, hi = g["difference_interval"]
    lines = [
        "# Fused model vs tuned LightGBM (issue #23)",
        "",
        f"Command: `{doc['command']}`  ",
        f"Host: {doc['host']}  ",
        f"Fused config: `{json.dumps(doc['fused_config'])}`",
        "",
        f"## Summary over {sm['n_seeds']} seed(s) (test period)",
        "",
        "| model | PR-AUC mean [95% CI] | ROC-AUC | recall@1%FPR | train s |",
        "|---|---|---|---|---|",
    ]
    for name, m in sm["models"].items():
        lines.append(
            f"| {name} | {_ci(m['pr_auc'])} | {_f(m['roc_auc'], 4)} | {_f(m['recall_at_1pct_fpr'])} | "
            f"{m['train_seconds']:.0f} |"
        )
    lines += [
        "",
        "train s: wall clock on this host (LightGBM: the whole optuna study; lightgbm_on_fused_embedding: "
        "plus the fused model's training and the embeddings).",
        "",
        f"Fused / best LightGBM (chosen per seed on validation PR-AUC: {', '.join(fv['best_by_seed'])}): "
        f"ratio {_ci(fv['ratio'])}, difference {_ci(fv['difference'])}.",
        "",
        f"Fused + best LightGBM, ranks averaged / best LightGBM: ratio {_ci(bl['ratio'])}, difference "
        f"{_ci(bl['difference'])} (not the goal's model: it shows what the sequence model adds to the trees).",
        "",
        f"**Goal** (ratio ≥ {g['ratio_at_least']:.2f} and the difference's interval above 0; interval from "
        f"{g['interval_source']}: [{_f(lo)}, {_f(hi)}]): **{'met' if g['met'] else 'not met'}** "
        f"(mean ratio {_f(g['ratio_mean'], 2)}).",
        "",
        f"Shuffle ablation (each user's event times permuted among that user's rows, sequences rebuilt, "
        f"sequence_only retrained): {_f(ab['sequence_only'])} → {_f(ab['sequence_only_shuffled'])} "
        f"(ratio {_f(ab['ratio'], 2)}).",
        "",
        f"Fused model latency, one row per `predict_proba`, 1 thread: p50 {_f(lat['p50'], 2)} ms, "
        f"p99 {_f(lat['p99'], 2)} ms (model time; the sequence read is not included).",
        "",
        "## Per seed: test PR-AUC (validation PR-AUC)",
        "",
        "| model | " + " | ".join(f"seed {k}" for k in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    for name in MODELS:
        cells = [
            f"{_f(r['models'][name]['pr_auc'])} ({_f(r['models'][name]['val_pr_auc'])})"
            for r in seeds.values()
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [""]

    for k, r in seeds.items():
        b, d = r["fused_vs_best_lightgbm"], r["data"]
        split = ", ".join(
            f"{p} {d[p]['rows']:,} rows ({d[p]['frauds']} frauds)" for p in ("train", "val", "test")
        )
        # a block bootstrap over a handful of days has few distinct resamples
        coarse = (
            f"; only {d['test_days']} day blocks: a coarse interval, see --days"
            if d["test_days"] < MIN_DAYS
            else ""
        )
        lines.append(
            f"- seed {k}: {split}, test over {d['test_days']} days. Fused vs {r['best_lightgbm']} (best on "
            f"validation): PR-AUC difference {_iv(b['diff'], b['diff_ci'])}, ratio "
            f"{_iv(b['ratio'], b['ratio_ci'])}, P(fused better) {_f(b['p_a_better'], 2)} (paired block "
            f"bootstrap over test days, {b['n_boot']} resamples{coarse})."
        )
    # the types of the real test period (the shuffled frame's test period holds other rows)
    types = sorted(
        {t for n, m in sm["models"].items() if n != "sequence_only_shuffled" for t in m["per_fraud_type"]}
    )
    fused_types = [r["models"]["fused"]["per_fraud_type"] for r in seeds.values()]
    frauds = {t: sum(f.get(t, {}).get("n_positives", 0) for f in fused_types) for t in types}
    lines += [
        "",
        "## Per fraud type: test PR-AUC, mean over seeds",
        "",
        "Each type's frauds against all legitimate test rows; (n) = that type's test frauds over all seeds. "
        "sequence_only_shuffled is scored on the shuffled frame's own test period (other rows and counts).",
        "",
        "| model | " + " | ".join(f"{t} ({frauds[t]})" for t in types) + " |",
        "|---|" + "---|" * len(types),
    ]
    for name, m in sm["models"].items():
        lines.append(f"| {name} | " + " | ".join(_f(m["per_fraud_type"].get(t)) for t in types) + " |")
    notes = [
        f"- {n} (seed {k}): {m['notes']}"
        for k, r in seeds.items()
        for n, m in r["models"].items()
        if m["notes"]
    ]
    return "\n".join([*lines, "", *notes, ""])


def plot(doc: dict, path: Path) -> None:
    """PR-AUC per model: one dot per seed, the mean with its 95% interval as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, name in enumerate(MODELS):
        values = [r["models"][name]["pr_auc"] for r in doc["seeds"].values()]
        ax.scatter(i + np.linspace(-0.15, 0.15, len(values)), values, s=14, color="grey", zorder=3)
        c = doc["summary"]["models"][name]["pr_auc"]
        err = [[c["mean"] - c["lo"]], [c["hi"] - c["mean"]]] if math.isfinite(c["lo"]) else None
        ax.errorbar(i, c["mean"], yerr=err, fmt="o", color="C0" if "lightgbm" in name else "C1", capsize=5)
    ax.set_xticks(range(len(MODELS)), MODELS, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("test PR-AUC")
    ax.set_title("PR-AUC per model (dots: seeds; bar: mean with 95% t-interval)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    return None if isinstance(o, float) and not math.isfinite(o) else o


def _configure_process(threads: int) -> None:
    """Logging and torch threads, in the main process and in each --jobs worker."""
    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("feast", "great_expectations", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(threads)


def _run_seed_in_temp(seed: int, args, t0: float) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-fused-{seed}-") as tmp:
        return run_seed(seed, args, Path(tmp), t0)


def _seed_process(seed: int, args, t0: float) -> dict:
    """One seed in a --jobs worker process."""
    _configure_process(args.threads)
    return _run_seed_in_temp(seed, args, t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--rows", type=int, default=None, help="generated rows per seed (default 40000; --quick 6000)"
    )
    ap.add_argument(
        "--seeds", default=None, help="comma-separated generator seeds (default 7,8,9; --quick 7)"
    )
    ap.add_argument(
        "--trials", type=int, default=None, help="optuna trials per LightGBM (default 50; --quick 3)"
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per model (LightGBM and torch)")
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="seeds run at a time, each in its own process with --threads threads (give it jobs x threads "
        "cores); results per seed are the same as with 1, train seconds and latency are not",
    )
    ap.add_argument(
        "--days", type=float, default=None, help="generated span (default: the generator's, ~2500 rows/day)"
    )
    ap.add_argument(
        "--quick", action="store_true", help="smoke settings: tiny encoder, 2 epochs; numbers not meaningful"
    )
    args = ap.parse_args(argv)
    args.rows = args.rows if args.rows is not None else 6000 if args.quick else 40_000
    args.trials = args.trials if args.trials is not None else 3 if args.quick else 50
    seeds = [int(x) for x in (args.seeds or ("7" if args.quick else "7,8,9")).split(",") if x.strip()]
    jobs = max(1, min(args.jobs, len(seeds)))
    _configure_process(args.threads)
    import torch

    argv_s = argv if argv is not None else sys.argv[1:]
    doc: dict = {
        "command": " ".join(["python", "benchmarks/bench_fused.py", *argv_s]),
        "host": f"{platform.machine()}, {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f} at "
        f"start; torch {torch.__version__}, {args.threads} thread(s) per model"
        + (f", {jobs} seeds side by side" if jobs > 1 else ""),
        "rows": args.rows,
        "trials": args.trials,
        "quick": args.quick,
        "jobs": jobs,
        "fused_config": {**FUSED_CONFIG, **(QUICK_OVERRIDES if args.quick else {})},
        "seeds": {},
    }
    t0 = time.perf_counter()
    if jobs == 1:
        doc["seeds"] = {seed: _run_seed_in_temp(seed, args, t0) for seed in seeds}
    else:  # spawned, not forked: a forked child would inherit torch's and LightGBM's thread pools
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {seed: pool.submit(_seed_process, seed, args, t0) for seed in seeds}
            doc["seeds"] = {seed: f.result() for seed, f in futures.items()}
    doc["summary"] = summarise(doc["seeds"])
    doc["total_seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_fused.json").write_text(json.dumps(_jsonable(doc), indent=1))
    md = markdown(doc)
    (args.out / "bench_fused.md").write_text(md)
    plot(doc, args.out / "bench_fused.png")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
