"""Evaluation of the risk model against baselines on the test period, as plain functions.

* :func:`run_baselines` — fit the four baselines (riskops.training.baselines) on train/val, score test;
* :func:`evaluate_models` — metrics per model (riskops.training.metrics), a Markdown table, a PR-curve plot,
  a score histogram, the PR-AUC ratio transformer / LightGBM, all written to a folder;
* :func:`run_evaluation` — the whole evaluation on a labelled training set: time split, model frames,
  transformer scores, baselines, evaluation, decision-policy thresholds set on VALIDATION;
* :func:`headline_metrics` / :func:`roc_points` — the figures a pipeline run shows;
* riskops.training.evaluation_report — the self-contained HTML report.
"""

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from riskops.training.metrics import policy_report, score_metrics, thresholds_for_policy

log = logging.getLogger(__name__)

TRANSFORMER = "transformer"

LIGHTGBM = "lightgbm"

RATIO_KEY = "pr_auc_ratio_vs_lightgbm"  # the key the CLI and model card read

JSON_NAME = "evaluation.json"

TABLE_NAME = "metrics_table.md"

PR_CURVE_NAME = "pr_curve.png"

HISTOGRAM_NAME = "score_histogram.png"

HTML_NAME = "report.html"

TABLE_COLUMNS = (
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC"),
    ("recall_at_1pct_fpr", "recall@1%FPR"),
    ("precision_at_review_budget", "precision@top {budget}"),
    ("ece", "ECE"),
)

SEGMENTS: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {
    "new_user": lambda fr: fr["user_is_new"].to_numpy() == 1,
    "returning_user": lambda fr: fr["user_is_new"].to_numpy() == 0,
    "country_mismatch": lambda fr: fr["country_mismatch"].to_numpy() == 1,
}


@dataclass
class HeldOutRows:
    """Rows the model did not train on, in time order, with its scores (the monitoring reference)."""

    frame: pd.DataFrame  # model frame (riskops.features.contract.build_model_frame)
    scores: np.ndarray
    labels: np.ndarray
    timestamps: pd.Series | None


@dataclass
class EvaluationResult:
    """What evaluate_models / run_evaluation produced. ``document`` is what evaluation.json holds."""

    document: dict
    table: str
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    test_labels: np.ndarray | None = None  # kept in memory, not written to the JSON
    test_scores: dict[str, np.ndarray] = field(default_factory=dict)
    held_out: HeldOutRows | None = None  # run_evaluation: validation + test rows, for monitoring

    @property
    def metrics(self) -> dict[str, dict]:
        return self.document["models"]

    @property
    def pr_auc_ratio(self) -> float | None:
        return self.document.get(RATIO_KEY)

    @property
    def policy_thresholds(self) -> dict | None:
        return self.document.get("policy_thresholds")

    def write_json(self) -> Path:
        path = self.out_dir / JSON_NAME
        # NaN stays NaN (Python's json reads it back; the register step formats it as "nan")
        path.write_text(json.dumps(self.document, indent=2, default=_jsonable))
        self.files["json"] = path
        return path


def _jsonable(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def format_metric(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.4f}"


def budget_label(review_budget: float) -> str:
    return f"{review_budget * 100:g}%"


def metrics_table(models: dict[str, dict], review_budget: float, ratio: float | None = None) -> str:
    """A Markdown table (also readable as plain text), models sorted by PR-AUC, best first."""
    headers = ["model"] + [h.format(budget=budget_label(review_budget)) for _, h in TABLE_COLUMNS]

    def _key(item):
        v = item[1].get("pr_auc", float("nan"))
        return (math.isnan(v), -v if not math.isnan(v) else 0.0)

    rows = [
        [name] + [format_metric(m.get(k)) for k, _ in TABLE_COLUMNS]
        for name, m in sorted(models.items(), key=_key)
    ]
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def _line(cells):
        return (
            "| "
            + " | ".join(
                str(c).ljust(w) if i == 0 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    sep = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    out = [_line(headers), sep, *(_line(r) for r in rows)]
    if ratio is not None:
        out += ["", f"PR-AUC ratio transformer / LightGBM: {format_metric(ratio)}"]
    notes = [f"- {name}: {m['note']}" for name, m in models.items() if m.get("note")]
    if notes:
        out += ["", "Notes:", *notes]
    return "\n".join(out) + "\n"


def _plot_pr_curves(y: np.ndarray, model_scores: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    both_classes = 0 < y.sum() < y.size
    if both_classes:
        for name, s in model_scores.items():
            precision, recall, _ = precision_recall_curve(y, s)
            ap = average_precision_score(y, s)
            ax.step(recall, precision, where="post", label=f"{name} (AP {ap:.3f})",
                    linewidth=2.2 if name == TRANSFORMER else 1.4)  # fmt: skip
        ax.axhline(y.mean(), color="grey", linestyle=":", label=f"prevalence {y.mean():.3f}")
        ax.legend(loc="upper right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "single-class test set: no PR curve", ha="center", va="center")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall on the test period")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_histogram(y: np.ndarray, scores: np.ndarray, name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    lo, hi = float(scores.min()), float(scores.max())
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 51)
    for label, colour, title in ((0, "tab:blue", "legitimate"), (1, "tab:red", "fraud")):
        part = scores[y == label]
        if part.size:
            ax.hist(part, bins=bins, alpha=0.6, color=colour, label=f"{title} (n={part.size})")
    ax.set_yscale("log")
    ax.set_xlabel(f"{name} score")
    ax.set_ylabel("transactions (log scale)")
    ax.set_title(f"{name} scores on the test period, by label")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def evaluate_models(
    test_frame: pd.DataFrame | None,
    y_test,
    model_scores: dict[str, np.ndarray],
    out_dir: Path,
    review_budget: float = 0.01,
) -> EvaluationResult:
    """Compare models on the same test rows; write evaluation.json, metrics_table.md, pr_curve.png
    and score_histogram.png to ``out_dir``; print the table.

    ``model_scores`` maps a model name to its scores on the test rows (higher = riskier); the
    transformer is expected under "transformer" and LightGBM under "lightgbm" (the PR-AUC ratio
    needs both; it is None otherwise). The histogram shows the transformer's scores, or the first
    model's when there is no transformer. ``test_frame`` (model frame of the same rows, optional)
    adds per-segment PR-AUC (new vs returning users, country mismatch).
    """
    if not model_scores:
        raise ValueError("model_scores is empty: nothing to evaluate")
    y = np.asarray(y_test).astype("int64").ravel()
    scores = {name: np.asarray(s, dtype="float64").ravel() for name, s in model_scores.items()}
    for name, s in scores.items():
        if s.size != y.size:
            raise ValueError(f"model {name!r} has {s.size} scores for {y.size} labels")
    if test_frame is not None and len(test_frame) != y.size:
        raise ValueError(f"test_frame has {len(test_frame)} rows for {y.size} labels")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    models = {name: score_metrics(y, s, review_budget=review_budget) for name, s in scores.items()}
    ratio = None
    if TRANSFORMER in models and LIGHTGBM in models:
        num, den = models[TRANSFORMER]["pr_auc"], models[LIGHTGBM]["pr_auc"]
        if not (math.isnan(num) or math.isnan(den)) and den > 0:
            ratio = float(num / den)

    segments: dict[str, dict] = {}
    if test_frame is not None:
        for seg, mask_fn in SEGMENTS.items():
            try:
                mask = np.asarray(mask_fn(test_frame), dtype=bool)
            except KeyError:
                continue
            segments[seg] = {
                "n": int(mask.sum()),
                "positives": int(y[mask].sum()),
                "pr_auc": {
                    name: score_metrics(y[mask], s[mask], review_budget)["pr_auc"]
                    for name, s in scores.items()
                },
            }

    primary = TRANSFORMER if TRANSFORMER in scores else next(iter(scores))
    document = {
        "models": models,
        RATIO_KEY: ratio,
        "primary_model": primary,
        "review_budget": float(review_budget),
        "n": int(y.size),
        "positives": int(y.sum()),
        "segments": segments,
    }
    table = metrics_table(models, review_budget, ratio)
    result = EvaluationResult(
        document=document, table=table, out_dir=out_dir, test_labels=y, test_scores=scores
    )

    result.files["table"] = out_dir / TABLE_NAME
    result.files["table"].write_text(table)
    result.files["pr_curve"] = out_dir / PR_CURVE_NAME
    _plot_pr_curves(y, scores, result.files["pr_curve"])
    result.files["histogram"] = out_dir / HISTOGRAM_NAME
    _plot_histogram(y, scores[primary], primary, result.files["histogram"])
    result.write_json()
    print(table)
    return result


def run_baselines(
    train_frame: pd.DataFrame,
    y_train,
    val_frame: pd.DataFrame,
    y_val,
    test_frame: pd.DataFrame,
    timings: dict[str, float] | None = None,
    val_scores: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Fit the four baselines on the training period (LightGBM stops early on validation) and
    score the test rows. Returns {name: test scores}; fit+score seconds go into ``timings``, and
    each baseline's validation scores into ``val_scores`` when given."""
    from riskops.training import baselines as B

    fitters: dict[str, Callable[[], object]] = {
        "rules": lambda: B.RulesEngine(),
        "logistic_regression": lambda: B.fit_logistic_regression(train_frame, y_train),
        "lightgbm": lambda: B.fit_lightgbm(train_frame, y_train, val_frame, y_val),
        "isolation_forest": lambda: B.fit_isolation_forest(train_frame, y_train),
    }
    out: dict[str, np.ndarray] = {}
    for name, fit in fitters.items():
        t0 = time.perf_counter()
        model = fit()
        out[name] = model.predict_scores(test_frame)
        elapsed = time.perf_counter() - t0
        if val_scores is not None:
            val_scores[name] = np.asarray(model.predict_scores(val_frame), dtype=np.float64)
        if timings is not None:
            timings[name] = round(elapsed, 3)
        log.info("baseline %s: fit + score in %.2f s", name, elapsed)
    return out


def validation_comparison(y_val: np.ndarray, transformer: np.ndarray, baselines: dict[str, np.ndarray]) -> dict:
    """The transformer against the strongest baseline on VALIDATION (the period choices are made on).

    Registration reads it (riskops.registry.register: a run whose transformer loses says so, and the
    `when_worse` policy decides whether it may serve). LightGBM stops early on this same period, so
    its figure here is if anything flattering: the comparison leans towards the baseline.
    """
    from sklearn.metrics import average_precision_score

    if len(np.unique(y_val)) < 2:
        return {"models": {}, "strongest_baseline": None, "note": "validation holds one class: no comparison"}
    pr = {TRANSFORMER: float(average_precision_score(y_val, transformer))}
    pr.update({name: float(average_precision_score(y_val, s)) for name, s in baselines.items()})
    strongest = max(baselines, key=lambda n: pr[n]) if baselines else None
    out: dict = {"models": {n: {"pr_auc": v} for n, v in pr.items()}, "strongest_baseline": strongest}
    if strongest is not None:
        ratio = pr[TRANSFORMER] / pr[strongest] if pr[strongest] > 0 else float("nan")
        out.update({"pr_auc_ratio": ratio, "transformer_loses": bool(pr[TRANSFORMER] < pr[strongest])})
    return out


def _positive_scores(raw) -> np.ndarray:
    """predict_proba output -> fraud probabilities (accepts (n,) or (n, 2))."""
    arr = np.asarray(raw, dtype="float64")
    return arr[:, -1] if arr.ndim == 2 else arr.ravel()


def run_evaluation(
    training_df: pd.DataFrame,
    scorer,
    out_dir: Path,
    test_fraction: float = 0.2,
    val_fraction: float = 0.15,
    review_budget: float = 0.01,
    target_review_rate: float = 0.02,
    target_block_precision: float = 0.9,
    split: Callable | None = None,
    recent_from: str = "",
) -> EvaluationResult:
    """The whole evaluation step on a labelled training set (transactions + entity features).

    Re-splits exactly like the train step (``riskops.data.splits.time_split`` unless ``split`` is given),
    builds model frames, scores the transformer (``scorer.predict_proba(model_frame)``) on
    validation and test, fits and scores the baselines, evaluates on test, and sets the decision
    policy on VALIDATION (``policy_thresholds``; ``policy_validation``/``policy_test`` report what
    it does on each). Writes everything to ``out_dir`` and returns the result.

    ``result.held_out`` keeps the model frame of validation + test, the transformer's scores, the
    labels and the event times — the period the model did not train on, which production traffic is
    later compared against (the pipeline stores it with riskops.monitoring.reference.save_reference).

    ``recent_from``: as the train step (rows at or after it train; validation and test come before).

    Most of its length (over 80 lines) is the evaluation document, written out field by field.
    """
    from riskops.features.contract import build_model_frame
    from riskops.features.sequences import add_sequence_columns
    from riskops.schema import LABEL_COLUMN, TIMESTAMP_COLUMN

    if split is None:
        from riskops.data.splits import time_split as split
    if LABEL_COLUMN not in training_df.columns:
        raise ValueError(f"training set has no label column {LABEL_COLUMN!r}")
    if "user_id" in training_df.columns:  # the models' behaviour sequences, from every earlier row
        training_df = add_sequence_columns(training_df)
    if recent_from:
        train, val, test = split(training_df, test_fraction, val_fraction, recent_from=recent_from)
    else:
        train, val, test = split(training_df, test_fraction, val_fraction)
    frames = {
        name: build_model_frame(part) for name, part in (("train", train), ("val", val), ("test", test))
    }
    labels = {name: part[LABEL_COLUMN].astype("int64").to_numpy() for name, part in
              (("train", train), ("val", val), ("test", test))}  # fmt: skip

    t0 = time.perf_counter()
    val_scores = _positive_scores(scorer.predict_proba(frames["val"]))
    test_scores = _positive_scores(scorer.predict_proba(frames["test"]))
    transformer_seconds = time.perf_counter() - t0

    timings: dict[str, float] = {}
    baseline_val: dict[str, np.ndarray] = {}
    baseline_scores = run_baselines(
        frames["train"], labels["train"], frames["val"], labels["val"], frames["test"], timings=timings,
        val_scores=baseline_val,
    )  # fmt: skip
    timings[f"{TRANSFORMER}_scoring"] = round(transformer_seconds, 3)

    result = evaluate_models(
        frames["test"], labels["test"], {TRANSFORMER: test_scores, **baseline_scores}, out_dir, review_budget
    )
    thresholds = thresholds_for_policy(labels["val"], val_scores, target_review_rate, target_block_precision)
    ts = pd.to_datetime(training_df[TIMESTAMP_COLUMN], utc=True) if TIMESTAMP_COLUMN in training_df else None
    result.document.update(
        {
            "policy_thresholds": thresholds,
            "policy_targets": {
                "review_rate": target_review_rate,
                "block_precision": target_block_precision,
                "set_on": "validation",
            },
            "policy_validation": policy_report(labels["val"], val_scores, thresholds),
            "validation": validation_comparison(labels["val"], val_scores, baseline_val),
            "policy_test": policy_report(labels["test"], test_scores, thresholds),
            "data": {
                "start": str(ts.min()) if ts is not None else None,
                "end": str(ts.max()) if ts is not None else None,
                "rows": len(training_df),
                "train_rows": len(train),
                "val_rows": len(val),
                "test_rows": len(test),
                "fraud_rate": float(training_df[LABEL_COLUMN].mean()) if len(training_df) else float("nan"),
                "test_start": str(pd.to_datetime(test[TIMESTAMP_COLUMN], utc=True).min())
                if TIMESTAMP_COLUMN in test and len(test)
                else None,
            },
            "split": {"test_fraction": test_fraction, "val_fraction": val_fraction},
            "timings_seconds": timings,
        }
    )
    result.write_json()
    result.held_out = _held_out_rows(frames, labels, (val, test), (val_scores, test_scores), TIMESTAMP_COLUMN)
    return result


def _held_out_rows(frames: dict, labels: dict, parts: tuple, scores: tuple, ts_col: str) -> HeldOutRows:
    """Validation + test rows, in time order: what the monitor compares production traffic against."""
    frame = pd.concat([frames["val"], frames["test"]], ignore_index=True)
    y = np.concatenate([labels["val"], labels["test"]])
    s = np.concatenate([np.asarray(x, dtype="float64").ravel() for x in scores])
    ts = None
    if all(ts_col in part.columns for part in parts):
        ts = pd.concat([pd.to_datetime(part[ts_col], utc=True) for part in parts], ignore_index=True)
    return HeldOutRows(frame, s, y, ts)


def headline_metrics(document: dict) -> dict[str, float]:
    """The evaluation's headline figures, finite values only (KFP metadata cannot hold NaN/None).

    The transformer's ROC-AUC, PR-AUC, recall at 1% FPR, precision at the review budget and ECE;
    every other model's PR-AUC; the PR-AUC ratio vs LightGBM; the policy's two thresholds.
    """
    headline = {
        f"{TRANSFORMER}_{k}": v
        for k, v in document["models"][TRANSFORMER].items()
        if k in ("roc_auc", "pr_auc", "recall_at_1pct_fpr", "precision_at_review_budget", "ece")
    }
    for name, m in document["models"].items():
        if name != TRANSFORMER:
            headline[f"{name}_pr_auc"] = m["pr_auc"]
    headline[RATIO_KEY] = document.get(RATIO_KEY)
    headline["review_threshold"] = document["policy_thresholds"]["review"]
    headline["block_threshold"] = document["policy_thresholds"]["block"]
    return {k: float(v) for k, v in headline.items() if v is not None and math.isfinite(v)}


def ranking_metrics(document: dict) -> dict[str, float]:
    """Every model's ROC-AUC, PR-AUC and recall at 1% FPR as ``<model>_<metric>``, finite values only."""
    out = {}
    for name, m in document["models"].items():
        for key in ("roc_auc", "pr_auc", "recall_at_1pct_fpr"):
            value = m.get(key)
            if value is not None and math.isfinite(value):
                out[f"{name}_{key}"] = float(value)
    return out


def roc_points(y: np.ndarray, s: np.ndarray, max_points: int = 200) -> tuple[list, list, list]:
    """ROC curve, thinned to at most max_points, thresholds made finite (for KFP metadata)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, s)
    if fpr.size > max_points:
        idx = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(int))
        fpr, tpr, thr = fpr[idx], tpr[idx], thr[idx]
    thr = np.where(np.isfinite(thr), thr, float(np.max(s)) + 1.0)
    return fpr.tolist(), tpr.tolist(), thr.tolist()
