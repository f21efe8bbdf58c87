"""Forward-chaining cross-validation INSIDE the training period — for choices, not for reporting.

    .venv/bin/python benchmarks/cv_quality.py [--dataset ulb-ccfraud] [--folds 0.55,0.70,0.85]
    .venv/bin/python benchmarks/cv_quality.py --whole-range [--windows 4] [--trials 30] [--ft-embedding periodic]

The quality benchmark's validation block is the last 15% of the training period; on ULB that is
36 frauds, too few to choose between models or ensemble weights (one fraud moves recall by 0.03).
This script cuts the training period (the FDB train part; the test period is dropped right after
the split and never scored) into consecutive windows and, for each window, fits on every row
before it and scores the window: three folds on ULB hold 97 + 25 + 36 = 158 frauds.

It compares LightGBM (a few settings, each at several round counts: no early stopping on the
scored window, which would leak), logistic regression (C grid) and equal-weight rank ensembles
of the best of each (riskops.training.ensemble), with and without hour-of-day features (sin/cos of the
event time's hour). ``--ft`` adds the FT-Transformer with the quality benchmark's settings (early
stopped on the last 15% of the rows before each window, never on the window) and the rank
average of all three families. ``--trees`` adds the tree and neighbour families AutoML systems
stack (extra trees, random forest, k nearest neighbours; ~15 min on ULB) and their rank averages
with the best LightGBM and LR. Per fold AUC-ROC and AUPRC plus their means, and where each
model's AUC-ROC loss sits: every fraud's loss is the share of its window's legitimate rows scored
above it (the mean over frauds is 1 - AUC-ROC), so a few frauds that look legitimate to every
model show up as a few large losses. Writes ``<out>/cv_<dataset>.json`` and ``.md``.

``--whole-range`` is the reporting mode over the WHOLE time range (the test period included):
rows sorted by event time, an initial block (``--initial``, default 40%) that is only trained on,
then ``--windows`` consecutive equal windows. Each window is scored by models fitted on every row
before it, whose last 15% is their validation tail (optuna's trials and early stopping for LightGBM,
early stopping for the FT-Transformer) — never the window itself. Models: LightGBM tuned by
riskops.training.tuning.tune_lightgbm (``--trials``) and the FT-Transformer with
``--ft-embedding``. Per window and mean PR-AUC / AUC-ROC, the ratio FT / LightGBM of PR-AUC per
window and its mean with a t-interval (riskops.training.significance.mean_ci), and the frauds
scored. Writes ``<out>/cv_whole_<dataset>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench_quality import LGB_BASE, RESULTS, _lgb_frame, logistic_pipeline  # noqa: E402

from riskops.data import datasets as D  # noqa: E402
from riskops.training.ensemble import fit_rank_ensemble  # noqa: E402
from riskops.training.significance import mean_ci  # noqa: E402
from riskops.training.tabular import (  # noqa: E402
    NUMERIC_EMBEDDINGS,
    NUMERIC_TRANSFORMS,
    FTTransformerConfig,
    fit_ft_transformer,
)
from riskops.training.tuning import tune_lightgbm  # noqa: E402

log = logging.getLogger("cv_quality")

LGB_SETTINGS = {
    "lgb leaves15 lr0.03": (
        {"num_leaves": 15, "learning_rate": 0.03, "min_data_in_leaf": 20},
        (200, 400, 800),
    ),
    "lgb leaves7 lr0.02 strong-l2": (
        {
            "num_leaves": 7,
            "learning_rate": 0.02,
            "min_data_in_leaf": 50,
            "feature_fraction": 0.5,
            "lambda_l2": 10.0,
        },
        (500, 1000, 1500),
    ),  # fmt: skip
}
LR_CS = (0.01, 0.1, 1.0)
# --trees: sklearn settings; min_samples_leaf > 1 smooths the vote (leaf 1 leaves many frauds tied at 0)
TREE_SETTINGS = {
    "extra_trees leaf5": ("extra", 5),
    "extra_trees leaf20": ("extra", 20),
    "random_forest leaf1": ("forest", 1),
    "random_forest leaf5": ("forest", 5),
}
KNN_K = 100
WORST_K = (1, 3, 5, 10)


def hour_features(df: pd.DataFrame, time_column: str) -> pd.DataFrame:
    """sin/cos of the hour of day of each event (fraud rates differ between night and day)."""
    ts = pd.to_datetime(df[time_column], utc=True)
    hour = ts.dt.hour + ts.dt.minute / 60.0 + ts.dt.second / 3600.0
    return pd.DataFrame(
        {"hour_sin": np.sin(2 * np.pi * hour / 24), "hour_cos": np.cos(2 * np.pi * hour / 24)}, index=df.index
    )


def folds(n: int, starts: list[float]) -> list[tuple[int, int]]:
    edges = [*starts, 1.0]
    return [(int(n * a), int(n * b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def fit_predict_lgb(
    X, y, Xw, params: dict, rounds: tuple[int, ...], numeric, categorical
) -> dict[int, np.ndarray]:
    import lightgbm as lgb

    vocabs = {c: sorted(X[c].astype(str).unique().tolist()) for c in categorical}
    booster = lgb.train(
        {**LGB_BASE, **params},
        lgb.Dataset(
            _lgb_frame(X, numeric, categorical, vocabs), label=y, categorical_feature=categorical or "auto"
        ),
        max(rounds),
    )
    frame = _lgb_frame(Xw, numeric, categorical, vocabs)
    return {r: booster.predict(frame, num_iteration=r) for r in rounds}


def fit_predict_lr(X, y, Xw, C: float, numeric, categorical) -> np.ndarray:
    model = logistic_pipeline(C, numeric, categorical)
    model.fit(X[numeric + categorical], y)
    return model.predict_proba(Xw[numeric + categorical])[:, 1]


def fit_predict_trees(X, y, Xw, kind: str, min_leaf: int, numeric) -> np.ndarray:
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    cls = ExtraTreesClassifier if kind == "extra" else RandomForestClassifier
    model = cls(n_estimators=300, min_samples_leaf=min_leaf, max_features="sqrt", n_jobs=-1, random_state=0)
    model.fit(X[numeric].to_numpy(np.float32), y)
    return model.predict_proba(Xw[numeric].to_numpy(np.float32))[:, 1]


def fit_predict_knn(X, y, Xw, numeric, k: int = KNN_K) -> np.ndarray:
    """Distance-weighted share of frauds among the k nearest standardised training rows."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    scale = StandardScaler().fit(X[numeric])
    model = KNeighborsClassifier(n_neighbors=k, weights="distance", n_jobs=-1)
    model.fit(scale.transform(X[numeric]), y)
    return model.predict_proba(scale.transform(Xw[numeric]))[:, 1]


def fraud_losses(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each fraud's AUC-ROC loss: the share of legitimate rows scored above it (ties count half).

    Their mean is exactly 1 - AUC-ROC, so the largest few say how much of the loss a handful of
    frauds that look legitimate carry.
    """
    y = np.asarray(y).astype(bool)
    legit = np.sort(np.asarray(scores, dtype=float)[~y])
    fraud = np.asarray(scores, dtype=float)[y]
    above = len(legit) - np.searchsorted(legit, fraud, side="right")
    ties = np.searchsorted(legit, fraud, side="right") - np.searchsorted(legit, fraud, side="left")
    return (above + 0.5 * ties) / len(legit)


def loss_concentration(y_parts: list[np.ndarray], s_parts: list[np.ndarray], ks=WORST_K) -> dict:
    """Per-fraud losses pooled over the windows: the largest ones and the AUC-ROC without the k worst."""
    pooled = np.concatenate([fraud_losses(y, s) for y, s in zip(y_parts, s_parts, strict=True)])
    losses = np.sort(pooled)[::-1]
    total = float(losses.sum())
    return {
        "frauds": int(len(losses)),
        "pooled_roc_auc": float(1 - losses.mean()),
        "worst_losses": [round(float(v), 4) for v in losses[: max(ks)]],
        "roc_auc_without_worst": {str(k): float(1 - losses[k:].mean()) for k in ks},
        "loss_share_of_worst": {str(k): float(losses[:k].sum() / total) if total else 0.0 for k in ks},
    }


def fold_metrics(y_parts: list[np.ndarray], s_parts: list[np.ndarray]) -> dict:
    from sklearn.metrics import average_precision_score, roc_auc_score

    auc = [float(roc_auc_score(y, s)) for y, s in zip(y_parts, s_parts, strict=True)]
    ap = [float(average_precision_score(y, s)) for y, s in zip(y_parts, s_parts, strict=True)]
    return {
        "roc_auc": float(np.mean(auc)),
        "pr_auc": float(np.mean(ap)),
        "roc_auc_folds": auc,
        "pr_auc_folds": ap,
    }


def fit_predict_ft(
    X,
    y,
    Xw,
    numeric,
    categorical,
    numeric_transform: str = "quantile",
    pos_weight: str = "sqrt",
    val_fraction: float = 0.15,
    seed: int = 0,
    d_token: int = 32,
    n_layers: int = 2,
    embedding: str = "linear",
    max_epochs: int = 20,
    legit_per_epoch: int = 60_000,
) -> np.ndarray:
    """FT-Transformer as in bench_quality (full settings), early-stopped on the newest rows of X."""
    cut = int(len(X) * (1 - val_fraction))
    cfg = FTTransformerConfig(d_token=d_token, n_layers=n_layers, n_heads=4, lr=3e-4, legit_per_epoch=legit_per_epoch,
                              max_epochs=max_epochs, patience=6, max_train_seconds=900.0, progress=False,
                              numeric_transform=numeric_transform, pos_weight=None if pos_weight == "none" else pos_weight,
                              numeric_embedding=embedding, seed=seed)  # fmt: skip
    model = fit_ft_transformer(X.iloc[:cut], y[:cut], X.iloc[cut:], y[cut:], cfg, numeric=numeric,
                               categorical=categorical)  # fmt: skip
    return model.predict_proba(Xw)


def run(
    dataset: str,
    starts: list[float],
    with_ft: bool = False,
    ft_numeric: str = "quantile",
    ft_hour: bool = False,
    ft_pos_weight: str = "sqrt",
    with_trees: bool = False,
    ft_seeds: tuple[int, ...] = (0,),
    ft_size: tuple[int, int] = (32, 2),
) -> dict:
    cfg = D.builtin_config(dataset)
    train, test = D.fdb_split(D.load_dataset(cfg), cfg)
    del test  # never scored here: this script only informs choices
    train = train.reset_index(drop=True)
    y = D.labels(train, cfg)
    numeric, categorical = list(cfg.numeric), list(cfg.categorical)
    train = pd.concat([train, hour_features(train, cfg.event_time.column)], axis=1)
    windows = folds(len(train), starts)
    y_parts = [y[a:b] for a, b in windows]
    log.info("%s: %d training-period rows, windows %s with %s frauds", dataset, len(train), windows,
             [int(p.sum()) for p in y_parts])  # fmt: skip

    scores: dict[str, list[np.ndarray]] = {}
    for fs_name, num in (("", numeric), (" +hour", numeric + ["hour_sin", "hour_cos"])):
        for a, b in windows:
            X, Xw = train.iloc[:a], train.iloc[a:b]
            for name, (params, rounds) in LGB_SETTINGS.items():
                t = time.perf_counter()
                for r, s in fit_predict_lgb(X, y[:a], Xw, params, rounds, num, categorical).items():
                    scores.setdefault(f"{name} @{r}{fs_name}", []).append(s)
                log.info("%s%s window %d-%d: %.0fs", name, fs_name, a, b, time.perf_counter() - t)
            for C in LR_CS:
                scores.setdefault(f"logistic C={C}{fs_name}", []).append(
                    fit_predict_lr(X, y[:a], Xw, C, num, categorical)
                )
    if with_trees:
        for a, b in windows:
            X, Xw = train.iloc[:a], train.iloc[a:b]
            for name, (kind, leaf) in TREE_SETTINGS.items():
                t = time.perf_counter()
                scores.setdefault(name, []).append(fit_predict_trees(X, y[:a], Xw, kind, leaf, numeric))
                log.info("%s window %d-%d: %.0fs", name, a, b, time.perf_counter() - t)
            scores.setdefault(f"knn k={KNN_K}", []).append(fit_predict_knn(X, y[:a], Xw, numeric))
    if with_ft:
        import torch

        torch.set_num_threads(1)
        ft_numeric_columns = numeric + (["hour_sin", "hour_cos"] if ft_hour else [])
        for seed in ft_seeds:
            name = "ft_transformer" if seed == ft_seeds[0] else f"ft_transformer seed {seed}"
            for a, b in windows:
                t = time.perf_counter()
                scores.setdefault(name, []).append(
                    fit_predict_ft(train.iloc[:a], y[:a], train.iloc[a:b], ft_numeric_columns, categorical,
                                   ft_numeric, ft_pos_weight, seed=seed, d_token=ft_size[0], n_layers=ft_size[1])
                )  # fmt: skip
                log.info("%s window %d-%d: %.0fs", name, a, b, time.perf_counter() - t)
        if len(ft_seeds) > 1:  # a seed ensemble: the mean of the seeds' probabilities
            names = [n for n in scores if n.startswith("ft_transformer")]
            scores[f"ft_transformer mean of {len(names)} seeds"] = [
                np.mean([scores[n][i] for n in names], axis=0) for i in range(len(windows))
            ]
    table = {name: fold_metrics(y_parts, parts) for name, parts in scores.items()}

    def best(prefix: str) -> str:
        return max((n for n in table if n.startswith(prefix)), key=lambda n: table[n]["pr_auc"])

    # Ensembles of the CV-best of each family. Picking the members on the same folds flatters the
    # ensemble a little; the members' own rows carry the same bias, so the comparison is fair.
    ensembles = [(best("lgb"), best("logistic"))]
    if with_trees:
        trees = max(TREE_SETTINGS, key=lambda n: table[n]["roc_auc"])
        ensembles += [(best("lgb"), best("logistic"), trees), (best("lgb"), trees)]
    if with_ft:
        ensembles += [("ft_transformer", best("lgb"), best("logistic")), ("ft_transformer", best("lgb"))]
    if with_ft and with_trees:
        ensembles += [("ft_transformer", best("lgb"), best("logistic"), trees)]
    for members in ensembles:
        name = "rank average: " + " + ".join(members)
        parts = []
        for i in range(len(windows)):
            ens = fit_rank_ensemble({m: scores[m][i] for m in members})
            parts.append(ens({m: scores[m][i] for m in members}))
        table[name] = fold_metrics(y_parts, parts)
        scores[name] = parts
    for name, parts in scores.items():
        table[name]["auc_loss"] = loss_concentration(y_parts, parts)
    return {
        "dataset": cfg.name,
        "windows": [{"start_row": a, "end_row": b, "frauds": int(p.sum())} for (a, b), p in zip(windows, y_parts, strict=True)],
        "models": table,
    }  # fmt: skip


def markdown(doc: dict) -> str:
    lines = [
        f"# Forward-chaining CV inside the training period: {doc['dataset']}",
        "",
        "Windows (fit on every row before each): "
        + ", ".join(f"rows {w['start_row']}–{w['end_row']} ({w['frauds']} frauds)" for w in doc["windows"]),
        "",
        "| model | mean AUC-ROC | AUC-ROC per window | mean AUPRC | AUPRC per window |",
        "|---|---|---|---|---|",
    ]
    for name, m in sorted(doc["models"].items(), key=lambda kv: -kv[1]["pr_auc"]):
        lines.append(
            f"| {name} | {m['roc_auc']:.4f} | {' / '.join(f'{v:.4f}' for v in m['roc_auc_folds'])} | "
            f"{m['pr_auc']:.3f} | {' / '.join(f'{v:.3f}' for v in m['pr_auc_folds'])} |"
        )
    ks = list(next(iter(doc["models"].values()))["auc_loss"]["roc_auc_without_worst"])
    lines += [
        "",
        "Where the AUC-ROC loss sits (pooled over the windows; a fraud's loss = the share of its window's",
        "legitimate rows scored above it; their mean is 1 - AUC-ROC):",
        "",
        "| model | pooled AUC-ROC | 5 largest losses | "
        + " | ".join(f"AUC-ROC without worst {k}" for k in ks)
        + " | "
        + " | ".join(f"loss share of worst {k}" for k in ks)
        + " |",
        "|---|---|---|" + "---|" * (2 * len(ks)),
    ]
    for name, m in sorted(doc["models"].items(), key=lambda kv: -kv[1]["auc_loss"]["pooled_roc_auc"]):
        c = m["auc_loss"]
        lines.append(
            f"| {name} | {c['pooled_roc_auc']:.4f} | {' '.join(f'{v:.3f}' for v in c['worst_losses'][:5])} | "
            + " | ".join(f"{c['roc_auc_without_worst'][k]:.4f}" for k in ks)
            + " | "
            + " | ".join(f"{c['loss_share_of_worst'][k]:.0%}" for k in ks)
            + " |"
        )
    lines += ["", f"Command: `{doc['command']}`", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# --whole-range: forward-chaining windows over the whole time range (reporting, not choosing)
# --------------------------------------------------------------------------------------------


def whole_range_windows(n: int, n_windows: int, initial: float) -> list[tuple[int, int]]:
    """[start, end) row ranges of ``n`` time-sorted rows: ``n_windows`` consecutive, near-equal
    windows covering every row after the first ``floor(n * initial)`` exactly once."""
    if n_windows < 1 or not 0 < initial < 1:
        raise ValueError("need at least one window and an initial share in (0, 1)")
    edges = np.linspace(int(n * initial), n, n_windows + 1).round().astype(int)
    if np.any(np.diff(edges) < 1):
        raise ValueError(f"{n} rows are too few for {n_windows} windows after {initial:.0%}")
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def run_whole_range(
    dataset: str, n_windows: int = 4, initial: float = 0.4, trials: int = 30, embedding: str = "periodic",
    ft_max_epochs: int = 20, ft_legit_per_epoch: int = 60_000, val_fraction: float = 0.15,
) -> dict:  # fmt: skip
    """Tuned LightGBM and the FT-Transformer scored on every window after the initial block."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    cfg = D.builtin_config(dataset)
    df = D.load_dataset(cfg)
    df = df.sort_values(cfg.event_time.column, kind="stable").reset_index(drop=True)
    y = D.labels(df, cfg)
    numeric, categorical = list(cfg.numeric), list(cfg.categorical)
    X = df[numeric + categorical]
    windows = whole_range_windows(len(df), n_windows, initial)
    rows, scores = [], {"lightgbm": [], "ft_transformer": []}
    for a, b in windows:
        cut = int(a * (1 - val_fraction))  # the validation tail of the rows before the window
        t = time.perf_counter()
        lgb = tune_lightgbm(X.iloc[:cut], y[:cut], X.iloc[cut:a], y[cut:a], n_trials=trials,
                            categorical=categorical)  # fmt: skip
        scores["lightgbm"].append(lgb.predict_scores(X.iloc[a:b]))
        t_lgb, t = time.perf_counter() - t, time.perf_counter()
        scores["ft_transformer"].append(
            fit_predict_ft(X.iloc[:a], y[:a], X.iloc[a:b], numeric, categorical, embedding=embedding,
                           max_epochs=ft_max_epochs, legit_per_epoch=ft_legit_per_epoch, val_fraction=val_fraction)
        )  # fmt: skip
        row = {"start_row": a, "end_row": b, "frauds": int(y[a:b].sum()), "train_rows": a, "train_frauds": int(y[:a].sum()),
               "lightgbm_seconds": round(t_lgb, 1), "ft_seconds": round(time.perf_counter() - t, 1),
               "lightgbm_best_params": lgb.best_params, "lightgbm_rounds": lgb.best_iteration}  # fmt: skip
        for name, parts in scores.items():
            row[f"{name}_pr_auc"] = float(average_precision_score(y[a:b], parts[-1]))
            row[f"{name}_roc_auc"] = float(roc_auc_score(y[a:b], parts[-1]))
        row["ratio_pr_auc"] = row["ft_transformer_pr_auc"] / row["lightgbm_pr_auc"]
        rows.append(row)
        log.info("window %d-%d (%d frauds): LightGBM PR-AUC %.3f, FT %.3f (%.0fs + %.0fs)", a, b, row["frauds"],
                 row["lightgbm_pr_auc"], row["ft_transformer_pr_auc"], t_lgb, row["ft_seconds"])  # fmt: skip
    summary = {
        f"{name}_{metric}": mean_ci([r[f"{name}_{metric}"] for r in rows])
        for name in scores
        for metric in ("pr_auc", "roc_auc")
    }
    summary["ratio_pr_auc"] = mean_ci([r["ratio_pr_auc"] for r in rows])
    return {
        "dataset": cfg.name, "mode": "whole-range", "initial_rows": windows[0][0], "windows": rows,
        "frauds_scored": int(sum(r["frauds"] for r in rows)), "summary": summary,
        "settings": {"trials": trials, "ft_embedding": embedding, "ft_max_epochs": ft_max_epochs,
                     "ft_legit_per_epoch": ft_legit_per_epoch, "val_fraction": val_fraction, "initial": initial},
    }  # fmt: skip


def markdown_whole_range(doc: dict) -> str:
    s, st = doc["summary"], doc["settings"]

    def ci(m: dict, nd: int = 3) -> str:
        return f"{m['mean']:.{nd}f} [{m['lo']:.{nd}f}, {m['hi']:.{nd}f}]"

    lines = [
        f"# Forward-chaining windows over the whole time range: {doc['dataset']}",
        "",
        f"Initial training block: {doc['initial_rows']:,} rows; {len(doc['windows'])} windows, "
        f"{doc['frauds_scored']} frauds scored. Each window: models fitted on every row before it "
        f"(last {st['val_fraction']:.0%} = validation tail). LightGBM: tune_lightgbm, {st['trials']} trials; "
        f"FT-Transformer: numeric embedding `{st['ft_embedding']}`, {st['ft_max_epochs']} epochs at most, "
        f"{st['ft_legit_per_epoch']:,} legit rows per epoch.",
        "",
        "| window (rows) | frauds | LightGBM PR-AUC | FT PR-AUC | FT / LightGBM | LightGBM AUC-ROC | FT AUC-ROC |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["windows"]:
        lines.append(
            f"| {r['start_row']:,}–{r['end_row']:,} | {r['frauds']} | {r['lightgbm_pr_auc']:.3f} | "
            f"{r['ft_transformer_pr_auc']:.3f} | {r['ratio_pr_auc']:.2f} | {r['lightgbm_roc_auc']:.4f} | "
            f"{r['ft_transformer_roc_auc']:.4f} |"
        )
    lines += [
        f"| mean [95% t-interval] | {doc['frauds_scored']} | {ci(s['lightgbm_pr_auc'])} | "
        f"{ci(s['ft_transformer_pr_auc'])} | {ci(s['ratio_pr_auc'], 2)} | {ci(s['lightgbm_roc_auc'], 4)} | "
        f"{ci(s['ft_transformer_roc_auc'], 4)} |",
        "",
        f"Command: `{doc.get('command', '')}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ulb-ccfraud",
                    help="a built-in dataset config or a YAML path; numeric/categorical columns only are used")  # fmt: skip
    ap.add_argument(
        "--folds", default="0.55,0.70,0.85", help="window starts as fractions of the training period"
    )
    ap.add_argument(
        "--out", type=Path, default=RESULTS, help="folder for cv_<dataset>.json/.md (git-ignored)"
    )
    ap.add_argument(
        "--ft", action="store_true", help="also the FT-Transformer (~6 min per window on 2 cores)"
    )
    ap.add_argument("--ft-pos-weight", default="sqrt", choices=("sqrt", "balanced", "none"),
                    help="the FT-Transformer's fraud class weight")  # fmt: skip
    ap.add_argument("--ft-numeric", default="quantile", choices=NUMERIC_TRANSFORMS,
                    help="the FT-Transformer's numeric preprocessing (riskops.training.tabular)")  # fmt: skip
    ap.add_argument(
        "--ft-hour", action="store_true", help="give the FT-Transformer the hour-of-day features too"
    )
    ap.add_argument("--ft-seeds", default="0",
                    help="comma-separated FT-Transformer seeds; several add each seed's row and their mean")  # fmt: skip
    ap.add_argument("--ft-size", default="32,2",
                    help="the FT-Transformer's token width and encoder layers (benchmark: 32,2; 4 heads)")  # fmt: skip
    ap.add_argument("--trees", action="store_true",
                    help="also extra trees, random forests and kNN, and their rank averages (~15 min on ULB)")  # fmt: skip
    ap.add_argument("--whole-range", action="store_true",
                    help="report over windows covering the whole time range (see the module docstring)")  # fmt: skip
    ap.add_argument("--windows", type=int, default=4, help="--whole-range: windows after the initial block")
    ap.add_argument("--initial", type=float, default=0.4, help="--whole-range: share of rows only trained on")
    ap.add_argument("--trials", type=int, default=30, help="--whole-range: optuna trials per window")
    ap.add_argument("--ft-embedding", default="periodic", choices=NUMERIC_EMBEDDINGS,
                    help="--whole-range: the FT-Transformer's numeric embedding (periodic: the best "
                         "validation PR-AUC on the FDB split)")  # fmt: skip
    ap.add_argument(
        "--ft-max-epochs", type=int, default=20, help="--whole-range: FT-Transformer epochs at most"
    )
    ap.add_argument("--ft-legit-per-epoch", type=int, default=60_000,
                    help="--whole-range: legit rows per FT-Transformer epoch")  # fmt: skip
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = " ".join(["python", "benchmarks/cv_quality.py", *(argv if argv is not None else sys.argv[1:])])
    if args.whole_range:
        import torch

        torch.set_num_threads(1)
        t0 = time.perf_counter()
        doc = run_whole_range(args.dataset, args.windows, args.initial, args.trials, args.ft_embedding,
                              args.ft_max_epochs, args.ft_legit_per_epoch)  # fmt: skip
        doc.update(command=command, seconds=round(time.perf_counter() - t0, 1))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"cv_whole_{doc['dataset']}.json").write_text(json.dumps(doc, indent=2))
        (args.out / f"cv_whole_{doc['dataset']}.md").write_text(markdown_whole_range(doc))
        print(markdown_whole_range(doc))
        return 0
    starts = [float(v) for v in args.folds.split(",")]
    if starts != sorted(starts) or not 0 < starts[0] or starts[-1] >= 1:
        ap.error("--folds must be increasing fractions in (0, 1)")
    t0 = time.perf_counter()
    doc = run(
        args.dataset,
        starts,
        with_ft=args.ft,
        ft_numeric=args.ft_numeric,
        ft_hour=args.ft_hour,
        ft_pos_weight=args.ft_pos_weight,
        with_trees=args.trees,
        ft_seeds=tuple(int(v) for v in args.ft_seeds.split(",")),
        ft_size=tuple(int(v) for v in args.ft_size.split(",")),
    )
    doc["command"] = command
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"cv_{doc['dataset']}.json").write_text(json.dumps(doc, indent=2))
    (args.out / f"cv_{doc['dataset']}.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
