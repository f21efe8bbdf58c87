"""`riskops` command line: the platform's front door for data, pipeline, models and serving.

Heavy libraries (torch, feast, GX, kfp) are imported inside the commands that need them, so
`riskops --help` answers instantly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from riskops import __version__
from riskops.config import MODEL_NAME, paths

for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "FEAST_USAGE": "False",
    "GX_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)


def _console():
    from rich.console import Console

    # a fixed width off a terminal (CI logs, pipes) keeps the metrics table readable
    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)


# --------------------------------------------------------------------------- data
def cmd_generate(args: argparse.Namespace) -> int:
    from riskops.generator import GeneratorConfig, generate, generate_with_drift, write_transactions

    config = GeneratorConfig(rows=args.rows, seed=args.seed, fraud_rate=args.fraud_rate, start=args.start)
    if args.drift:
        df = generate_with_drift(config, args.drift, args.drift_rows or max(1, args.rows // 4))
    else:
        df = generate(config)
    out = write_transactions(df, args.out)
    fraud = df["is_fraud"].mean()
    msg = f"wrote {len(df):,} transactions ({fraud:.2%} fraud) to {out}"
    if "drift_onset" in df.attrs:
        msg += f"; drift '{args.drift}' starts at {df.attrs['drift_onset']}"
    _console().print(msg)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from components.ingest import read_raw
    from components.validate import ValidationConfig, validate_transactions

    df = read_raw(args.file)
    report_dir = Path(args.report_dir) if args.report_dir else paths().reports / "validation"
    result = validate_transactions(
        df,
        ValidationConfig(fraud_rate_min=args.fraud_rate_min, fraud_rate_max=args.fraud_rate_max),
        report_dir,
    )
    console = _console()
    console.print(result.summary())
    console.print(f"report: {result.report_html}")
    return 0 if result.success else 1


def cmd_features(args: argparse.Namespace) -> int:
    from components.features import build_features
    from components.ingest import read_raw

    df = read_raw(args.file)
    repo = Path(args.repo) if args.repo else paths().feature_repo
    result = build_features(df, repo)
    out = Path(args.out) if args.out else paths().data / "training_set.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    result.training_frame.to_parquet(out, index=False)
    _console().print(f"feature repo {repo}; training set ({len(result.training_frame):,} rows) -> {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import pandas as pd

    from components.train import TrainConfig, train_model
    from riskops.features import build_model_frame
    from riskops.splits import time_split

    df = pd.read_parquet(args.training_set)
    train, val, _test = time_split(df, args.test_fraction, args.val_fraction)
    config = TrainConfig(
        epochs=args.epochs, encoder=args.encoder, max_steps=args.max_steps or None, seed=args.seed
    )
    out = Path(args.out) if args.out else paths().root / "models" / time.strftime("%Y%m%d-%H%M%S")
    result = train_model(
        build_model_frame(train),
        build_model_frame(val),
        train["is_fraud"].to_numpy(),
        val["is_fraud"].to_numpy(),
        config,
        out,
    )
    _console().print(
        f"trained on {result.device} in {result.train_seconds:.0f}s; best epoch {result.best_epoch},"
        f" validation PR-AUC {result.val_pr_auc:.4f}; model -> {result.model_dir}"
    )
    return 0


# --------------------------------------------------------------------------- pipeline
def _pipeline_params(args: argparse.Namespace) -> dict:
    return {
        "source": "file" if args.input else "synthetic",
        "input_path": str(Path(args.input).resolve()) if args.input else "",
        "rows": args.rows,
        "seed": args.seed,
        "fraud_rate": args.fraud_rate,
        "encoder": args.encoder,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "max_train_rows": args.max_train_rows,
        "promotion": args.promotion,
    }


def cmd_pipeline_compile(args: argparse.Namespace) -> int:
    from pipelines.training_pipeline import PROFILES, compile_dataset_pipeline, compile_pipeline

    profiles = list(PROFILES) if args.profile == "all" else [args.profile]
    for profile in profiles:
        out = compile_pipeline(profile)
        _console().print(f"compiled {profile} -> {out}")
        out = compile_dataset_pipeline(profile)  # bring-your-own-data (`pipeline run --dataset`)
        _console().print(f"compiled {profile} -> {out}")
    return 0


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    if getattr(args, "dataset", None):  # bring your own data: pipelines/dataset_runner.py
        from pipelines.dataset_runner import cli_run

        return cli_run(args)
    console = _console()
    params = _pipeline_params(args)
    if args.host:
        from pipelines.runner import submit

        run_id = submit(args.host, profile=args.profile, **params)
        console.print(f"submitted to {args.host}: run {run_id}")
        return 0
    from pipelines.runner import PipelineFailed, run_local

    try:
        run = run_local(paths(), **params)
    except PipelineFailed as exc:
        _print_failure(exc)
        return 1
    _print_run_summary(run)
    return 0


def _print_failure(exc) -> None:
    console = _console()
    console.print(f"[red]pipeline failed:[/red] {exc}")
    validation = exc.reports_dir / "validation_report.html"
    if validation.exists():
        console.print(f"data validation report: {validation}")
        summary = exc.reports_dir / "validation_report.json"
        if summary.exists():
            for f in json.loads(summary.read_text()).get("failures", []):
                where = f" on column {f['column']!r}" if f.get("column") else ""
                examples = f", e.g. {f['examples'][:3]}" if f.get("examples") else ""
                console.print(f"  - {f['expectation']}{where}: {f['details']}{examples}")
    console.print("the registry is unchanged: the current champion keeps serving")


def _print_run_summary(run) -> None:
    from riskops.registry import ModelRegistry

    console = _console()
    reg = run.registration
    console.print(f"\npipeline finished in {run.seconds:.0f}s")
    if not reg:
        console.print("[yellow]no registration record found[/yellow]")
        return
    mv = ModelRegistry(paths().registry).get(reg["version"])
    evaluation_file = mv.path / "evaluation.json"
    if evaluation_file.exists():
        _print_metrics_table(json.loads(evaluation_file.read_text()))
    console.print(f"registered [bold]{MODEL_NAME} {reg['version']}[/bold] as {reg['alias']} ({reg['reason']})")
    console.print(f"model folder: {mv.path}")
    console.print(f"model card:   {mv.path / 'MODEL_CARD.md'}")
    for f in sorted(run.reports_dir.iterdir()):
        if f.suffix in (".html", ".png", ".md"):
            console.print(f"report:       {f}")
    if run.run_dir:
        console.print(f"pipeline artifacts: {run.run_dir}")


def _print_metrics_table(evaluation: dict) -> None:
    from rich.table import Table

    table = Table(title="test period (trained on the past, scored on the future)", min_width=100)
    for col in ("model", "ROC-AUC", "PR-AUC", "recall@1%FPR", "precision@budget", "ECE"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name, m in evaluation.get("models", {}).items():
        table.add_row(
            name,
            *(
                f"{m.get(k, float('nan')):.4f}"
                for k in ("roc_auc", "pr_auc", "recall_at_1pct_fpr", "precision_at_review_budget", "ece")
            ),
        )
    _console().print(table)
    ratio = evaluation.get("pr_auc_ratio_vs_lightgbm")
    if ratio is not None:
        _console().print(f"PR-AUC transformer / LightGBM = {ratio:.3f}")


# --------------------------------------------------------------------------- models
def cmd_models_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from riskops.registry import ModelRegistry

    registry = ModelRegistry(paths().registry)
    versions = registry.list_versions()
    if not versions:
        _console().print(f"no models in {registry.root}; train one with `riskops pipeline run`")
        return 0
    by_version: dict[str, list[str]] = {}
    for alias, version in registry.aliases().items():
        by_version.setdefault(version, []).append(alias)
    table = Table(title=f"{registry.name} in {registry.root}")
    for col in ("version", "aliases", "created", "ROC-AUC", "PR-AUC", "git"):
        table.add_column(col)
    for mv in versions:
        table.add_row(
            mv.version,
            ", ".join(sorted(by_version.get(mv.version, []))),
            mv.created_at,
            f"{mv.metrics.get('roc_auc', float('nan')):.4f}",
            f"{mv.metrics.get('pr_auc', float('nan')):.4f}",
            str(mv.tags.get("git_commit", "")),
        )
    _console().print(table)
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    from riskops.registry import CHAMPION, ModelRegistry

    registry = ModelRegistry(paths().registry)
    previous = registry.champion()
    registry.set_alias(CHAMPION, args.version)
    _console().print(
        f"{args.version} is now the champion (was {previous.version if previous else 'none'})"
    )
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    from riskops.registry import ModelRegistry

    mv = ModelRegistry(paths().registry).resolve(args.version)
    card = mv.path / "MODEL_CARD.md"
    _console().print(card.read_text() if card.exists() else json.dumps(mv.metrics, indent=2))
    return 0


# --------------------------------------------------------------------------- serving
def cmd_serve(args: argparse.Namespace) -> int:
    # kserve.model_server parses sys.argv when imported; keep `riskops serve --grpc ...` away from it
    sys.argv = sys.argv[:1]
    from serving.server import main as serve_main

    argv = ["--port", str(args.port), "--host", args.host]
    if args.model_version:
        argv += ["--model-version", args.model_version]
    if args.config:
        argv += ["--config", args.config]
    if args.grpc:
        argv += ["--grpc"]
    for item in args.set:
        argv += ["--set", item]
    serve_main(argv)
    return 0


# --------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from riskops.demo import run_demo

    return run_demo(args)


# --------------------------------------------------------------------------- parser
def _add_pipeline_args(p: argparse.ArgumentParser, rows: int = 20_000, epochs: int = 2) -> None:
    p.add_argument("--rows", type=int, default=rows, help="synthetic transactions to generate (default %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="random seed for data and training (default %(default)s)")
    p.add_argument("--fraud-rate", type=float, default=0.015, help="synthetic fraud share (default %(default)s)")
    p.add_argument("--input", help="train on this Parquet/JSONL file (schema columns) instead of synthetic data")
    p.add_argument(
        "--encoder",
        choices=("minilm", "tiny"),
        default="minilm",
        help="text encoder: the pretrained all-MiniLM-L6-v2 (default) or a tiny random BERT for smoke runs",
    )
    p.add_argument("--epochs", type=int, default=epochs, help="training epochs (default %(default)s)")
    p.add_argument("--max-steps", type=int, default=0, help="stop training after N steps (0 = no limit)")
    p.add_argument(
        "--max-train-rows",
        type=int,
        default=6000,
        help="train on every fraud plus a sample of legit rows up to N rows, for CPU speed; validation"
        " and test are never sampled and scores are re-calibrated (0 = all rows; default %(default)s)",
    )
    p.add_argument(
        "--promotion",
        choices=("if-none", "always", "never"),
        default="if-none",
        help="make the new model champion: only if there is none (default), always, or never",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="riskops",
        description="Real-time e-commerce fraud/risk scoring that keeps itself accurate. "
        f"State lives under $RISKOPS_HOME (now: {paths().root}).",
    )
    parser.add_argument("--version", action="version", version=f"riskops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", help="write synthetic transactions (Parquet or JSONL by extension)",
                       description="Generate labelled synthetic e-commerce transactions with a fraud typology.")
    p.add_argument("--rows", type=int, default=20_000, help="number of transactions (default %(default)s)")
    p.add_argument("--out", required=True, help="output file: .parquet or .jsonl")
    p.add_argument("--seed", type=int, default=7, help="random seed (default %(default)s)")
    p.add_argument("--fraud-rate", type=float, default=0.015, help="share of fraud (default %(default)s)")
    p.add_argument("--start", default="2026-01-01", help="first day of traffic, UTC (default %(default)s)")
    p.add_argument("--drift", choices=("fraud_ring", "promotion_season", "price_shift", "new_payment_method"),
                   help="append a drift scenario segment after the normal traffic")
    p.add_argument("--drift-rows", type=int, default=0, help="rows in the drift segment (default rows/4)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("validate", help="run the Great Expectations gate on a file",
                       description="Validate raw transactions; exit 1 and write an HTML report when the gate fails.")
    p.add_argument("file", help="Parquet/JSONL transactions")
    p.add_argument("--report-dir", help="where to write the HTML/JSON report (default $RISKOPS_HOME/reports/validation)")
    p.add_argument("--fraud-rate-min", type=float, default=0.001, help="lowest plausible fraud share")
    p.add_argument("--fraud-rate-max", type=float, default=0.10, help="highest plausible fraud share")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("features", help="build Feast features and a point-in-time training set",
                       description="Hash PII, compute windowed entity aggregates, apply the Feast repo, "
                       "materialize the online store and write the training set.")
    p.add_argument("file", help="Parquet/JSONL transactions")
    p.add_argument("--repo", help="Feast repo working copy (default $RISKOPS_HOME/feature_repo)")
    p.add_argument("--out", help="training set parquet (default $RISKOPS_HOME/data/training_set.parquet)")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("train", help="fine-tune the transformer risk model on a training set",
                       description="Fine-tune the text encoder + tabular model on a training set from `riskops features`.")
    p.add_argument("training_set", help="parquet from `riskops features`")
    p.add_argument("--out", help="model folder (default $RISKOPS_HOME/models/<timestamp>)")
    p.add_argument("--encoder", choices=("minilm", "tiny"), default="minilm", help="text encoder")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=0, help="stop after N steps (0 = no limit)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--test-fraction", type=float, default=0.2, help="newest share held out for testing")
    p.add_argument("--val-fraction", type=float, default=0.15, help="share before the test period for early stopping")
    p.set_defaults(func=cmd_train)

    pp = sub.add_parser("pipeline", help="compile or run the Kubeflow training pipeline",
                        description="The training pipeline: ingest -> GX gate -> Feast -> fine-tune -> evaluate -> register.")
    psub = pp.add_subparsers(dest="pipeline_command", required=True, metavar="SUBCOMMAND")
    p = psub.add_parser("compile", help="write the pipeline IR YAML (checked in under pipelines/)",
                        description="Compile the pipeline for a cluster profile to pipelines/training_pipeline.<profile>.yaml.")
    p.add_argument("--profile", default="all", help="dev, prod-gpu or all (default)")
    p.set_defaults(func=cmd_pipeline_compile)
    p = psub.add_parser("run", help="run locally with kfp.local, or submit with --host",
                        description="Run the whole pipeline locally (kfp.local, this venv, no containers) "
                        "or submit it to a Kubeflow Pipelines endpoint with --host.")
    _add_pipeline_args(p)
    p.add_argument("--dataset", metavar="CONFIG", help="train on your own data: a dataset config YAML (or a "
                   "built-in name, e.g. ulb-ccfraud) mapping columns to roles; see docs/quality.md")
    p.add_argument("--max-rows", type=int, default=0, help="--dataset: keep only the newest N rows by event time"
                   " (0 = all; a quick run)")
    p.add_argument("--max-train-seconds", type=float, default=0, help="--dataset without text: stop the "
                   "FT-Transformer after the epoch that crosses this budget (0 = no budget)")
    p.add_argument("--host", help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline (token: $KFP_TOKEN)")
    p.add_argument("--profile", default="dev", help="cluster profile for --host: dev or prod-gpu")
    p.set_defaults(func=cmd_pipeline_run)

    pm = sub.add_parser("models", help="inspect and promote registered models",
                        description="The local model registry: versions, metrics, aliases.")
    msub = pm.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")
    p = msub.add_parser("list", help="list versions with metrics and aliases")
    p.set_defaults(func=cmd_models_list)
    p = msub.add_parser("show", help="print a version's model card")
    p.add_argument("version", nargs="?", default="champion", help="vNNNN or an alias (default champion)")
    p.set_defaults(func=cmd_models_show)
    p = msub.add_parser("promote", help="make a version the champion")
    p.add_argument("version", help="vNNNN")
    p.set_defaults(func=cmd_models_promote)

    p = sub.add_parser("serve", help="serve the champion with KServe (REST v1, v2, explain, metrics)",
                       description="Start KServe's ModelServer with the risk model: request validation, PII hashing, "
                       "Feast online lookup, the fine-tuned model, the decision policy, reasons, prediction log. "
                       "Stops cleanly on Ctrl-C/SIGTERM. See docs/serving.md for curl examples.")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="bind address; 0.0.0.0 in a container (default %(default)s)")
    p.add_argument("--model-version", help="vNNNN (pinned), an alias (followed and hot-swapped), or a model folder;"
                   " default: the champion")
    p.add_argument("--config", help="serving.yaml (default $RISKOPS_HOME/serving.yaml if present)")
    p.add_argument("--grpc", action="store_true", help="also serve the v2 gRPC protocol on port+1")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a serving setting, e.g. --set fail_mode=block")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="run the whole loop end to end (what `make demo` runs)",
                       description="Train through the real pipeline and print metrics, model version and reports.")
    # one epoch keeps `make demo` within ~10 minutes on 2 CPU cores; `pipeline run` defaults to 2
    _add_pipeline_args(p, rows=int(os.environ.get("RISKOPS_DEMO_ROWS", 20_000)), epochs=1)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
