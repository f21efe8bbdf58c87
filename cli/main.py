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
from riskops.settings import MODEL_NAME, paths

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

    # off a terminal (CI logs, pipes): a fixed width keeps tables readable, and messages are not
    # wrapped, so a long path cannot split a command the user is told to run across two lines
    tty = sys.stdout.isatty()
    return Console(highlight=False, width=None if tty else 120, soft_wrap=not tty)


def escape(text: str) -> str:
    """Text for rich, printed as itself (data may contain '[...]', which rich reads as markup)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


# --------------------------------------------------------------------------- data
def cmd_generate(args: argparse.Namespace) -> int:
    from riskops.data.generator import GeneratorConfig, generate, generate_with_drift, write_transactions

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
    from riskops.data.ingest import read_raw
    from riskops.data.validation import ValidationConfig, validate_transactions

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
    from riskops.data.ingest import read_raw
    from riskops.features.build import build_features

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

    from riskops.data.splits import time_split
    from riskops.features.contract import build_model_frame
    from riskops.training.finetune import TrainConfig, train_model

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
        "test_fraction": args.test_fraction,
        "val_fraction": args.val_fraction,
        "recent_from": args.recent_from,
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
        from pipelines.runner import SubmitError, submit

        try:
            run_id = submit(args.host, profile=args.profile, **params)
        except SubmitError as exc:
            console.print(f"[red]could not submit the run:[/red] {escape(str(exc))}", soft_wrap=True)
            return 1
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
    # reports quote the data: a value like "[red]" must print as itself, not as rich markup
    console.print(f"[red]pipeline failed:[/red] {escape(str(exc))}")
    validation = exc.reports_dir / "validation_report.html"
    if validation.exists():
        console.print(f"data validation report: {validation}")
        summary = exc.reports_dir / "validation_report.json"
        if summary.exists():
            for f in json.loads(summary.read_text()).get("failures", []):
                where = f" on column {f['column']!r}" if f.get("column") else ""
                examples = f", e.g. {f['examples'][:3]}" if f.get("examples") else ""
                console.print(escape(f"  - {f['expectation']}{where}: {f['details']}{examples}"))
    console.print("the registry is unchanged: the current champion keeps serving")


def _print_run_summary(run) -> None:
    from riskops.registry.store import ModelRegistry

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

    from riskops.registry.store import ModelRegistry

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
    from riskops.registry.store import CHAMPION, ModelRegistry

    registry = ModelRegistry(paths().registry)
    previous = registry.champion()
    registry.set_alias(CHAMPION, args.version)
    _console().print(
        f"{args.version} is now the champion (was {previous.version if previous else 'none'})"
    )
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    from riskops.registry.store import ModelRegistry

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


# --------------------------------------------------------------------------- monitoring loop
def _seconds(text: str) -> float:
    """'60', '60s', '5m', '1h' -> seconds."""
    t = str(text).strip().lower()
    mult = {"s": 1, "m": 60, "h": 3600}.get(t[-1:], None)
    try:
        value = float(t[:-1] if mult else t) * (mult or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration like 60s, 5m or 1h, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"the interval must be positive, got {text!r}")
    return value


def _fmt_num(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _print_monitor_result(res, rules) -> None:
    from rich.table import Table

    console = _console()
    m = res.verdict.metrics
    window = f"{m.get('window.rows', 0):.0f} rows" if "window.rows" in m else "no rows"
    if m.get("window.start"):
        window += f" ({str(m['window.start'])[:19]} .. {str(m['window.end'])[:19]})"
    verdict = ("[bold red]DRIFT[/bold red] (retrain)" if res.verdict.drift
               else "[yellow]ALERT[/yellow]" if res.verdict.alert else "[green]OK[/green]")
    console.print(f"monitor pass {res.at}: {verdict}; status {res.status}; champion {res.champion or 'none'}; "
                  f"window {window}; {res.seconds:.1f}s", soft_wrap=True)
    fired = {r["rule"]: r for r in res.verdict.reasons}
    skipped = {s["rule"]: s for s in res.verdict.skipped}
    table = Table(min_width=100)
    for col in ("rule", "result", "action", "detail"):
        table.add_column(col, overflow="fold")
    for rule in rules:
        if rule.name in fired:
            table.add_row(rule.name, "[bold red]FIRED[/bold red]", rule.action, fired[rule.name]["message"])
        elif rule.name in skipped:
            table.add_row(rule.name, "skipped", rule.action, skipped[rule.name]["why"])
        else:
            values = ", ".join(f"{c.metric}={_fmt_num(m.get(c.metric))}" for c in rule.when)
            table.add_row(rule.name, "ok", rule.action, values)
    console.print(table)
    if m.get("feature_drift.drifted_columns"):
        console.print(f"drifted inputs: {m['feature_drift.drifted_columns']}", soft_wrap=True)
    if res.trigger is not None:
        t = res.trigger
        console.print(f"retraining: {t.outcome} - {t.why}" + (f" (run {t.run_id}, log {t.log_file})" if t.log_file else ""), soft_wrap=True)
    if res.promotion is not None:
        d = res.promotion
        console.print(f"promotion gate: {'PROMOTED' if d.promote else 'rejected'} {d.challenger_version} vs champion "
                      f"{d.champion_version}: " + "; ".join(d.reasons), soft_wrap=True)
    for name in ("drift.html", "performance.html", "volume.json", "verdict.json"):
        if name in res.files:
            console.print(f"report: {res.files[name]}", soft_wrap=True)


def cmd_monitor(args: argparse.Namespace) -> int:
    import signal
    import threading

    from riskops.monitoring.monitor import load_monitor_config, run_monitor_loop, run_monitor_once

    try:
        cfg = load_monitor_config(args.config)
    except (OSError, ValueError) as exc:
        _console().print(f"[red]monitor config:[/red] {exc}")
        return 2
    home = paths()
    drift_seen = False
    if args.every is None:
        res = run_monitor_once(home, cfg)
        _print_monitor_result(res, cfg.rules)
        drift_seen = res.verdict.drift
    else:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())

        def on_result(res) -> None:
            nonlocal drift_seen
            drift_seen = drift_seen or res.verdict.drift
            _print_monitor_result(res, cfg.rules)

        _console().print(f"monitoring {home.prediction_log} every {args.every:g}s (Ctrl-C stops)")
        run_monitor_loop(home, cfg, every_seconds=args.every, stop_event=stop, max_runs=args.max_runs,
                         on_result=on_result)
    return 3 if args.fail_on_drift and drift_seen else 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from riskops.monitoring.feedback import (
        COLUMNS,
        OPTIONAL,
        REQUIRED,
        FeedbackError,
        _is_blank,
        append_feedback,
        normalise_record,
        read_feedback_file,
    )

    console = _console()
    console.soft_wrap = True  # one line per row: greppable
    home = paths()
    status = 0
    for file in args.files:
        f = Path(file)
        try:
            df = read_feedback_file(f)
        except FeedbackError as exc:
            console.print(f"[red]{exc}[/red]")
            status = 2
            continue
        missing = [c for c in REQUIRED if c not in df.columns]
        unknown = [c for c in df.columns if c not in COLUMNS]
        if missing or unknown:
            what = (f"missing required column(s) {missing}" if missing else "") + (
                ("; " if missing and unknown else "") + f"unknown column(s) {unknown}" if unknown else "")
            console.print(f"[red]{f}: {what}[/red]; required: {', '.join(REQUIRED)}; optional: {', '.join(OPTIONAL)}."
                          " Nothing stored.")
            status = 2
            continue
        good, bad = [], []
        for i, rec in enumerate(df.to_dict("records"), start=1):
            rec = {k: v for k, v in rec.items() if not _is_blank(v) or k in REQUIRED}
            out, errors = normalise_record(rec, f"row {i}", f"file:{f.name}", "")
            if errors:
                tid = rec.get("transaction_id")
                bad.append((i, None if _is_blank(tid) else tid, errors))
            else:
                good.append({k: v for k, v in out.items() if k != "received_at" and v is not None})
        line = " (CSV line = row + 1)" if f.suffix.lower() == ".csv" else ""
        for i, tid, errors in bad[: args.show]:
            console.print(f"  [red]rejected[/red] row {i}{line} (transaction_id {tid!r}): "
                          + "; ".join(e.split(": ", 1)[-1] for e in errors))
        if len(bad) > args.show:
            console.print(f"  ... and {len(bad) - args.show} more rejected rows")
        stored = 0
        if good and (not bad or args.skip_invalid):
            stored = append_feedback(home, good, source=f"file:{f.name}")
        frauds = sum(r["is_fraud"] for r in good)
        if bad and not args.skip_invalid:
            console.print(f"{f}: {len(good)} valid, [red]{len(bad)} rejected[/red]: nothing stored (all or nothing;"
                          " fix the rows or pass --skip-invalid to store the valid ones)")
        else:
            console.print(f"{f}: accepted {stored} rows ({frauds} fraud, {stored - frauds} legit)"
                          + (f", [red]rejected {len(bad)}[/red]" if bad else "")
                          + f" -> {home.root / 'feedback'}")
        if bad:
            status = max(status, 1)
    return status


def cmd_retrain_status(args: argparse.Namespace) -> int:
    from rich.table import Table

    from riskops.lifecycle.retrain import RetrainTrigger

    console = _console()
    home = paths()
    trigger = RetrainTrigger(home, {})
    trigger.refresh()  # records the outcome of a run that has ended since the last look
    state = trigger.state()
    records = trigger.records()[-args.limit :] if args.limit else trigger.records()
    from riskops.lifecycle.promotion import decisions_file as promotion_decisions

    decisions_file = promotion_decisions(home)
    decisions = []
    if decisions_file.exists():
        for line in decisions_file.read_text().splitlines()[-args.limit :]:
            try:
                decisions.append(json.loads(line))
            except ValueError:
                continue
    if args.json:
        print(json.dumps({"state": state, "triggers": records, "decisions": decisions}, indent=2, default=str))
        return 0
    running = state.get("running")
    if running:
        console.print(f"running: {running.get('run_id')} since {running.get('started_at')} "
                      f"(pid {running.get('pid', '-')}, log {Path(running.get('run_dir', '')) / 'pipeline.log'})")
    else:
        console.print("running: none")
    last = state.get("last_run")
    if last:
        reg = last.get("registration") or {}
        console.print(f"last run: {last.get('run_id')} {last.get('outcome')} at {last.get('finished_at')}"
                      + (f", registered {reg.get('version')} as {reg.get('alias')}" if reg.get("version") else ""))
    if state.get("last_attempt_at"):
        console.print(f"last start: {state['last_attempt_at']} (cooldown {trigger.settings.cooldown_seconds:.0f}s"
                      " with the default settings; see configs/monitor.yaml retrain.cooldown_seconds)")
    if not records:
        console.print(f"no retraining triggers recorded in {trigger.records_file}")
    else:
        table = Table(title=f"retraining triggers ({trigger.records_file})", min_width=100)
        for col in ("at", "event", "outcome", "run", "why"):
            table.add_column(col, overflow="fold")
        for r in records:
            table.add_row(r.get("at", ""), r.get("event", ""), r.get("outcome", ""), r.get("run_id") or "",
                          r.get("why", ""))
        console.print(table)
    if decisions:
        table = Table(title=f"promotion decisions ({decisions_file})", min_width=100)
        for col in ("at", "kind", "challenger", "decision", "reasons"):
            table.add_column(col, overflow="fold")
        for d in decisions:
            what = d.get("action") or ("promote" if d.get("promote") else "reject")
            table.add_row(d.get("at", ""), d.get("kind", ""), str(d.get("challenger_version") or ""), what,
                          "; ".join(d.get("reasons") or []))
        console.print(table)
    return 0


def exit_on_sigterm() -> None:
    """SIGTERM -> SystemExit(143) in the main thread, so that `finally` blocks run (the demos stop
    the model server they started; without this a `kill` left it running, orphaned)."""
    import signal

    def _exit(_signum, _frame) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, _exit)


def cmd_drift_demo(args: argparse.Namespace) -> int:
    from cli.drift_demo import run_drift_demo

    exit_on_sigterm()
    return run_drift_demo(args)


# --------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from cli.demo import run_demo

    exit_on_sigterm()
    return run_demo(args)


# --------------------------------------------------------------------------- parser
def _add_pipeline_args(
    p: argparse.ArgumentParser, rows: int = 20_000, epochs: int = 2, max_train_rows: int = 6000
) -> None:
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
        default=max_train_rows,
        help="train on every fraud plus a sample of legit rows up to N rows, for CPU speed; validation"
        " and test are never sampled and scores are re-calibrated (0 = all rows; default %(default)s)",
    )
    p.add_argument(
        "--promotion",
        choices=("if-none", "always", "never"),
        default="if-none",
        help="make the new model champion: only if there is none (default), always, or never",
    )
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="newest share of the data held out as the test period (default %(default)s)")
    p.add_argument("--val-fraction", type=float, default=0.15,
                   help="share before the test period for early stopping, calibration and the decision policy"
                   " (default %(default)s; retraining runs use less: see `riskops drift-demo --help`)")
    p.add_argument("--recent-from", default="", metavar="TIME",
                   help="retraining: rows at or after this UTC time (ISO 8601) all go to training, and"
                   " validation and test are cut from the rows before it, so that the few labelled rows of"
                   " a shift are learned from rather than validated on (set by `riskops monitor` when it"
                   " retrains on history + a recent window; default: off)")


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

    p = sub.add_parser(
        "monitor", help="drift / volume / performance checks of the prediction log (one pass or a loop)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compare the newest scored transactions (prediction log) with the champion's reference "
        "(captured at train time), check hourly volumes and the labelled performance (feedback), apply the "
        "rules of the monitor config, then: Evidently reports under $RISKOPS_HOME/reports/monitoring/<time>/, "
        "an alert in $RISKOPS_HOME/alerts.jsonl (and the webhook), on drift a debounced retraining run "
        "(retrain.mode), and the promotion gate once that run has registered a challenger.",
        epilog="Prints a verdict table (one row per rule: FIRED / ok / skipped and why) and the report paths.\n"
        "Exit code: 0 after a completed pass or loop, drift or not (drift is reported, not an error); 2 for an\n"
        "invalid config; with --fail-on-drift, 3 when a pass found drift.\n\n"
        "examples:\n  riskops monitor --once\n  riskops monitor --every 60s --config configs/monitor.yaml",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one pass, then exit (the default)")
    mode.add_argument("--every", type=_seconds, metavar="INTERVAL",
                      help="run a pass every INTERVAL (60s, 5m, 1h) until Ctrl-C / SIGTERM")
    p.add_argument("--config", default=os.environ.get("RISKOPS_MONITOR_CONFIG") or None,
                   help="monitor config YAML (default: $RISKOPS_MONITOR_CONFIG, else configs/monitor.yaml)")
    p.add_argument("--fail-on-drift", action="store_true", help="exit 3 when a pass found drift (for cron/CI)")
    p.add_argument("--max-runs", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser(
        "feedback", help="load confirmed outcomes (chargebacks, review results) from CSV / JSONL / Parquet",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Store confirmed outcomes keyed by transaction_id in the feedback store "
        "($RISKOPS_HOME/feedback/) that the monitor's performance check, retraining and the promotion gate read "
        "(the same store as POST /v1/feedback). Columns: transaction_id, is_fraud (0/1, true/false, fraud/legit) "
        "required; fraud_type, source, reported_at optional.",
        epilog="Every row is checked; rejected rows are listed with their reasons. All or nothing by default\n"
        "(one bad row stores none); --skip-invalid stores the valid rows.\n"
        "Exit code: 0 all rows accepted; 1 some rows rejected; 2 a file unreadable or missing columns.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help=".csv, .jsonl or .parquet")
    p.add_argument("--skip-invalid", action="store_true", help="store the valid rows even when some are rejected")
    p.add_argument("--show", type=int, default=20, help="rejected rows listed per file (default %(default)s)")
    p.set_defaults(func=cmd_feedback)

    pr = sub.add_parser("retrain", help="the retraining trigger's runs and the promotion decisions",
                        description="What the monitor's retraining trigger did (started / skipped / failed runs"
                        " and their outcomes) and what the promotion gate and canary decided.")
    rsub = pr.add_subparsers(dest="retrain_command", required=True, metavar="SUBCOMMAND")
    p = rsub.add_parser("status", help="the run in progress, the trigger records and promotion decisions",
                        description="Show the retraining run in progress (if any), the last run, the newest trigger "
                        "records ($RISKOPS_HOME/retrain/triggers.jsonl) and promotion decisions "
                        "($RISKOPS_HOME/promotion/decisions.jsonl).")
    p.add_argument("--limit", type=int, default=20, help="newest records shown (default %(default)s; 0 = all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=cmd_retrain_status)

    p = sub.add_parser(
        "drift-demo", help="the closed loop live: serve, drift, detect, retrain, gate, new champion",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a champion with the real pipeline (small, tiny encoder), serve it with KServe, replay "
        "normal generated traffic over HTTP, switch to a drift scenario with delayed feedback labels, run a "
        "monitor pass every N transactions; on drift the retraining pipeline starts as a local subprocess, the "
        "promotion gate compares the new model with the champion on labelled post-drift traffic, and the server "
        "hot-swaps the new champion (or keeps the old one and says why). Prints a timeline and the figures; "
        "writes the timeline JSON to $RISKOPS_HOME/reports/drift-demo/.",
        epilog="scenarios (riskops/data/generator.py): fraud_ring (a new ring: hosting IPs, shared devices, new\n"
        "accounts), promotion_season (2.5x volume, many legitimate newcomers), price_shift (prices x1.3-1.5),\n"
        "new_payment_method (bnpl / crypto, favoured by fraud).\n"
        "Exit code: 0 when the loop closed (a gate decision was taken and serving reflects it), 1 otherwise.",
    )
    p.add_argument("--scenario", default="fraud_ring",
                   choices=("fraud_ring", "promotion_season", "price_shift", "new_payment_method"),
                   help="the drift after the onset (default %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="the simulated world (default %(default)s)")
    p.add_argument("--train-rows", type=int, default=20_000, help="transactions the first champion trains on")
    p.add_argument("--normal-rows", type=int, default=1_500, help="normal transactions replayed before the onset")
    p.add_argument("--drift-rows", type=int, default=6_000, help="drifted transactions generated (replayed as needed)")
    p.add_argument("--monitor-every", type=int, default=250, help="a monitor pass every N transactions")
    p.add_argument("--window", type=int, default=1500, help="the monitor's window (transactions)")
    p.add_argument("--label-delay", type=int, default=300, help="a label arrives N transactions after its transaction")
    p.add_argument("--batch", type=int, default=1, help="transactions per predict request (default one at a time)")
    p.add_argument("--retrain-rate", type=float, default=20.0,
                   help="replay rate (tx/s) while the retraining runs, to leave it the CPU (0 = no limit)")
    p.add_argument("--encoder", choices=("minilm", "tiny"), default="tiny", help="text encoder (default tiny: fast)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs, first champion and retraining")
    p.add_argument("--max-train-rows", type=int, default=12_000,
                   help="train on every fraud plus legit rows up to N, first champion and retraining (default %(default)s)")
    p.add_argument("--val-fraction", type=float, default=0.05,
                   help="retraining: validation share (small: the drifted rows are the newest, and the gate decides)")
    p.add_argument("--test-fraction", type=float, default=0.05, help="retraining: test share")
    p.add_argument("--timeout", dest="timeout_s", type=float, default=900.0, help="onset -> loop closed, at most (s)")
    p.add_argument("--canary", action="store_true",
                   help="after the gate, let the server's online canary (50%% share) decide the promotion")
    p.add_argument("--feedback", choices=("auto", "api", "file"), default="auto",
                   help="label delivery: POST /v1/feedback, dropped files (riskops feedback), or auto")
    p.add_argument("--config", help="base monitor config (default configs/monitor.yaml)")
    p.add_argument("--monitor-all-inputs", action="store_true",
                   help="also compare the windowed counters a freshly started server over-counts (see the module doc"
                   " of cli/drift_demo.py); expect a drift verdict ~1,000 transactions after the start")
    p.add_argument("--reuse-champion", action="store_true",
                   help="keep the current champion instead of training one (it must come from the same world)")
    p.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    p.add_argument("--quiet", action="store_true", help="do not print monitor passes without news")
    p.set_defaults(func=cmd_drift_demo)

    p = sub.add_parser("demo", help="run the whole loop end to end (what `make demo` runs)",
                       description="Train through the real pipeline and print metrics, model version and reports; serve the "
                       "champion and score new orders; then close the loop (unless --skip-loop): normal traffic, a drift "
                       "scenario with delayed feedback, monitor -> retraining -> promotion gate -> new champion. Exit 1 when "
                       "the loop did not close.")
    # 3 epochs on up to 12,000 rows, for the first champion and the loop's retraining: ~2 minutes of
    # training each on 2 CPU cores (the encoder reads short texts, most of them cached)
    _add_pipeline_args(p, rows=int(os.environ.get("RISKOPS_DEMO_ROWS", 20_000)), epochs=3, max_train_rows=12_000)
    p.add_argument("--skip-loop", action="store_true",
                   help="stop after training and serving (no drift / monitor / retraining / promotion loop)")
    p.add_argument("--scenario", default="fraud_ring",
                   choices=("fraud_ring", "promotion_season", "price_shift", "new_payment_method"),
                   help="the drift the closed loop meets (default %(default)s; see `riskops drift-demo --help`)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
