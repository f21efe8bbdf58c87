"""Terminal output shared by the commands and the demos (rich).

Every command prints through `console()`; a pipeline run's outcome (failure, metrics table,
registration) is printed the same way by `riskops pipeline run`, `--dataset` runs and `riskops demo`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape as rich_escape
from rich.table import Table

from riskops.registry.store import ModelRegistry
from riskops.settings import MODEL_NAME, paths


class FailedRun(Protocol):
    """What `print_failure` reads of a failed pipeline run (pipelines.runner.PipelineFailed)."""

    reports_dir: Path


def console() -> Console:
    """A console for this command's output (plain text off a terminal)."""
    # off a terminal (CI logs, pipes): a fixed width keeps tables readable, and messages are not
    # wrapped, so a long path cannot split a command the user is told to run across two lines
    tty = sys.stdout.isatty()
    return Console(highlight=False, width=None if tty else 120, soft_wrap=not tty)


def narration_console() -> Console:
    """A console for the demos' narration: a timeline line stays one line, whatever the width."""
    return Console(highlight=False, soft_wrap=True)


def escape(text: str) -> str:
    """Text for rich, printed as itself (data may contain '[...]', which rich reads as markup)."""
    return rich_escape(text)


def print_failure(exc: FailedRun) -> None:
    """A failed pipeline run: the error, the data validation failures if the gate stopped it."""
    term = console()
    # reports quote the data: a value like "[red]" must print as itself, not as rich markup
    term.print(f"[red]pipeline failed:[/red] {escape(str(exc))}")
    validation = exc.reports_dir / "validation_report.html"
    if validation.exists():
        term.print(f"data validation report: {validation}")
        summary = exc.reports_dir / "validation_report.json"
        if summary.exists():
            for f in json.loads(summary.read_text()).get("failures", []):
                where = f" on column {f['column']!r}" if f.get("column") else ""
                examples = f", e.g. {f['examples'][:3]}" if f.get("examples") else ""
                term.print(escape(f"  - {f['expectation']}{where}: {f['details']}{examples}"))
    term.print("the registry is unchanged: the current champion keeps serving")


def print_metrics_table(evaluation: dict) -> None:
    """The evaluation step's test-period metrics, one row per model (ours and the baselines)."""
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
    console().print(table)
    ratio = evaluation.get("pr_auc_ratio_vs_lightgbm")
    if ratio is not None:
        console().print(f"PR-AUC transformer / LightGBM = {ratio:.3f}")


def print_run_files(run: Any) -> None:
    """A finished run's reports and its kfp.local artifact folder (pipelines.runner.LocalRun)."""
    term = console()
    for f in sorted(run.reports_dir.iterdir()):
        if f.suffix in (".html", ".png", ".md"):
            term.print(f"report:       {f}")
    if run.run_dir:
        term.print(f"pipeline artifacts: {run.run_dir}")


def print_run_summary(run: Any) -> None:
    """A finished training pipeline run (pipelines.runner.LocalRun): metrics, registration, files."""
    term = console()
    reg = run.registration
    term.print(f"\npipeline finished in {run.seconds:.0f}s")
    if not reg:
        term.print("[yellow]no registration record found[/yellow]")
        return
    mv = ModelRegistry(paths().registry).get(reg["version"])
    evaluation_file = mv.path / "evaluation.json"
    if evaluation_file.exists():
        print_metrics_table(json.loads(evaluation_file.read_text()))
    term.print(f"registered [bold]{MODEL_NAME} {reg['version']}[/bold] as {reg['alias']} ({reg['reason']})")
    term.print(f"model folder: {mv.path}")
    term.print(f"model card:   {mv.path / 'MODEL_CARD.md'}")
    print_run_files(run)
