"""`riskops retrain status`: what the retraining trigger did and what the promotion gate decided."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from cli.console import console
from riskops.settings import paths


def cmd_retrain_status(args: argparse.Namespace) -> int:
    """The run in progress, the last run, the trigger records and the promotion decisions."""
    from riskops.lifecycle.promotion import decisions_file as promotion_decisions
    from riskops.lifecycle.retrain import RetrainTrigger

    term = console()
    home = paths()
    trigger = RetrainTrigger(home, {})
    trigger.refresh()  # records the outcome of a run that has ended since the last look
    state = trigger.state()
    records = trigger.records()[-args.limit :] if args.limit else trigger.records()
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
        term.print(f"running: {running.get('run_id')} since {running.get('started_at')} "
                   f"(pid {running.get('pid', '-')}, log {Path(running.get('run_dir', '')) / 'pipeline.log'})")
    else:
        term.print("running: none")
    last = state.get("last_run")
    if last:
        reg = last.get("registration") or {}
        term.print(f"last run: {last.get('run_id')} {last.get('outcome')} at {last.get('finished_at')}"
                   + (f", registered {reg.get('version')} as {reg.get('alias')}" if reg.get("version") else ""))
    if state.get("last_attempt_at"):
        term.print(f"last start: {state['last_attempt_at']} (cooldown {trigger.settings.cooldown_seconds:.0f}s"
                   " with the default settings; see configs/monitor.yaml retrain.cooldown_seconds)")
    if not records:
        term.print(f"no retraining triggers recorded in {trigger.records_file}")
    else:
        table = Table(title=f"retraining triggers ({trigger.records_file})", min_width=100)
        for col in ("at", "event", "outcome", "run", "why"):
            table.add_column(col, overflow="fold")
        for r in records:
            table.add_row(r.get("at", ""), r.get("event", ""), r.get("outcome", ""), r.get("run_id") or "",
                          r.get("why", ""))
        term.print(table)
    if decisions:
        table = Table(title=f"promotion decisions ({decisions_file})", min_width=100)
        for col in ("at", "kind", "challenger", "decision", "reasons"):
            table.add_column(col, overflow="fold")
        for d in decisions:
            what = d.get("action") or ("promote" if d.get("promote") else "reject")
            table.add_row(d.get("at", ""), d.get("kind", ""), str(d.get("challenger_version") or ""), what,
                          "; ".join(d.get("reasons") or []))
        term.print(table)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `retrain status` to the `riskops` parser."""
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
