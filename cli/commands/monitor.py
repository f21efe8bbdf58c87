"""`riskops monitor`: drift / volume / performance checks of the prediction log, once or in a loop."""

from __future__ import annotations

import argparse
import os
import signal
import threading

from rich.table import Table

from cli.console import console
from riskops.settings import paths


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
    """A metric value for the verdict table (floats with 4 significant digits)."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _print_monitor_result(res, rules) -> None:
    """One monitor pass: the verdict line, a row per rule (FIRED / ok / skipped), what it started, its reports."""
    term = console()
    m = res.verdict.metrics
    window = f"{m.get('window.rows', 0):.0f} rows" if "window.rows" in m else "no rows"
    if m.get("window.start"):
        window += f" ({str(m['window.start'])[:19]} .. {str(m['window.end'])[:19]})"
    verdict = ("[bold red]DRIFT[/bold red] (retrain)" if res.verdict.drift
               else "[yellow]ALERT[/yellow]" if res.verdict.alert else "[green]OK[/green]")
    term.print(f"monitor pass {res.at}: {verdict}; status {res.status}; champion {res.champion or 'none'}; "
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
    term.print(table)
    if m.get("feature_drift.drifted_columns"):
        term.print(f"drifted inputs: {m['feature_drift.drifted_columns']}", soft_wrap=True)
    if res.trigger is not None:
        t = res.trigger
        term.print(f"retraining: {t.outcome} - {t.why}" + (f" (run {t.run_id}, log {t.log_file})" if t.log_file else ""), soft_wrap=True)
    if res.promotion is not None:
        d = res.promotion
        term.print(f"promotion gate: {'PROMOTED' if d.promote else 'rejected'} {d.challenger_version} vs champion "
                   f"{d.champion_version}: " + "; ".join(d.reasons), soft_wrap=True)
    for name in ("drift.html", "performance.html", "volume.json", "verdict.json"):
        if name in res.files:
            term.print(f"report: {res.files[name]}", soft_wrap=True)
    exported = res.exported or {}
    if exported.get("pushed_to") or exported.get("textfile"):
        where = [w for w in (exported.get("pushed_to"), exported.get("textfile")) if w]
        term.print(f"metrics: {', '.join(where)}", soft_wrap=True)
    if exported.get("error"):
        term.print(f"[yellow]metrics: {exported['error']}[/yellow]", soft_wrap=True)


def _submit_pipeline(host: str, **params) -> str:
    """`pipelines.runner.submit` for the retraining trigger (retrain.mode cluster), imported when a
    run starts: it loads kfp and compiles the pipeline."""
    from pipelines.runner import submit

    return submit(host, **params)


def cmd_monitor(args: argparse.Namespace) -> int:
    """One monitor pass, or one every --every until Ctrl-C / SIGTERM; exit 3 on drift with --fail-on-drift."""
    from riskops.lifecycle.loop import load_loop_config, run_loop, run_loop_once
    from riskops.lifecycle.retrain import RetrainTrigger

    try:
        cfg = load_loop_config(args.config)
    except (OSError, ValueError) as exc:
        console().print(f"[red]monitor config:[/red] {exc}")
        return 2
    home = paths()
    trigger = RetrainTrigger(home, cfg.retrain, submit=_submit_pipeline)
    drift_seen = False
    if args.every is None:
        res = run_loop_once(home, cfg, trigger=trigger)
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

        console().print(f"monitoring {home.prediction_log_source} every {args.every:g}s (Ctrl-C stops)")
        run_loop(home, cfg, trigger=trigger, every_seconds=args.every, stop_event=stop, max_runs=args.max_runs,
                 on_result=on_result)
    return 3 if args.fail_on_drift and drift_seen else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `monitor` to the `riskops` parser."""
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
