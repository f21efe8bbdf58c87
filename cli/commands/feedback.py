"""`riskops feedback FILE...`: load confirmed outcomes (chargebacks, review results) into the feedback store."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.console import console
from riskops.settings import paths


def cmd_feedback(args: argparse.Namespace) -> int:
    """Check every row of each file and store the outcomes (all or nothing per file unless --skip-invalid)."""
    from riskops.monitoring.feedback import (
        COLUMNS,
        OPTIONAL,
        REQUIRED,
        FeedbackError,
        append_feedback,
        is_blank,
        normalise_record,
        read_feedback_file,
    )

    term = console()
    term.soft_wrap = True  # one line per row: greppable
    home = paths()
    status = 0
    for file in args.files:
        f = Path(file)
        try:
            df = read_feedback_file(f)
        except FeedbackError as exc:
            term.print(f"[red]{exc}[/red]")
            status = 2
            continue
        missing = [c for c in REQUIRED if c not in df.columns]
        unknown = [c for c in df.columns if c not in COLUMNS]
        if missing or unknown:
            what = (f"missing required column(s) {missing}" if missing else "") + (
                ("; " if missing and unknown else "") + f"unknown column(s) {unknown}" if unknown else "")
            term.print(f"[red]{f}: {what}[/red]; required: {', '.join(REQUIRED)}; optional: {', '.join(OPTIONAL)}."
                       " Nothing stored.")
            status = 2
            continue
        good, bad = [], []
        for i, rec in enumerate(df.to_dict("records"), start=1):
            rec = {k: v for k, v in rec.items() if not is_blank(v) or k in REQUIRED}
            out, errors = normalise_record(rec, f"row {i}", f"file:{f.name}", "")
            if errors:
                tid = rec.get("transaction_id")
                bad.append((i, None if is_blank(tid) else tid, errors))
            else:
                good.append({k: v for k, v in out.items() if k != "received_at" and v is not None})
        line = " (CSV line = row + 1)" if f.suffix.lower() == ".csv" else ""
        for i, tid, errors in bad[: args.show]:
            term.print(f"  [red]rejected[/red] row {i}{line} (transaction_id {tid!r}): "
                       + "; ".join(e.split(": ", 1)[-1] for e in errors))
        if len(bad) > args.show:
            term.print(f"  ... and {len(bad) - args.show} more rejected rows")
        stored = 0
        if good and (not bad or args.skip_invalid):
            stored = append_feedback(home, good, source=f"file:{f.name}")
        frauds = sum(r["is_fraud"] for r in good)
        if bad and not args.skip_invalid:
            term.print(f"{f}: {len(good)} valid, [red]{len(bad)} rejected[/red]: nothing stored (all or nothing;"
                       " fix the rows or pass --skip-invalid to store the valid ones)")
        else:
            term.print(f"{f}: accepted {stored} rows ({frauds} fraud, {stored - frauds} legit)"
                       + (f", [red]rejected {len(bad)}[/red]" if bad else "")
                       + f" -> {home.root / 'feedback'}")
        if bad:
            status = max(status, 1)
    return status


def register(sub: argparse._SubParsersAction) -> None:
    """Add `feedback` to the `riskops` parser."""
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
