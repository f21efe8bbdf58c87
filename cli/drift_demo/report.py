"""The loop's outcome: its figures, the timeline JSON it writes, the figures table it prints."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table
from sklearn.metrics import average_precision_score

from cli.drift_demo.world import LoopOptions
from riskops.settings import Paths

REPORT_DIR = "drift-demo"  # under <home>/reports: timelines


@dataclass
class LoopResult:
    """How the loop ended, its figures and events, and where the timeline JSON went."""

    closed: bool
    outcome: str  # promoted | rejected | canary_rollback | not_detected | retrain_failed | timeout | error
    figures: dict = field(default_factory=dict)
    timeline_file: Path | None = None
    events: list[dict] = field(default_factory=list)
    settled: bool | None = None  # after a promotion: (a) the learned shift quiet and (b) a new one caught

    def to_dict(self) -> dict:
        """The result as plain JSON-ready data."""
        d = asdict(self)
        d["timeline_file"] = str(self.timeline_file) if self.timeline_file else None
        return d


def pr_auc(y: list[int] | np.ndarray, s: list[float] | np.ndarray) -> float | None:
    """Average precision of scores `s` for labels `y`; None when one class is missing."""
    y, s = np.asarray(y, dtype=int), np.asarray(s, dtype=float)
    if y.size == 0 or y.sum() == 0 or y.sum() == y.size:
        return None
    return float(average_precision_score(y, s))


def run_seconds(run: dict | None) -> float | None:
    """A retraining run record's duration (started_at -> finished_at), None when unknown."""
    if not run or not run.get("started_at") or not run.get("finished_at"):
        return None
    try:
        return (
            datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])
        ).total_seconds()
    except ValueError:
        return None


def fmt_metric(x: Any) -> str:
    """A metric with 3 decimals, 'n/a' when missing or not finite."""
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"


def round1(x: Any) -> Any:
    """`x` rounded to one decimal (None stays None)."""
    return None if x is None else round(float(x), 1)


def write_timeline(home: Paths, result: LoopResult, opts: LoopOptions, passes: list[dict]) -> Path:
    """Write the timeline JSON (options, figures, events, monitor passes) under <home>/reports/drift-demo/."""
    out = home.reports / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    f = out / f"timeline-{stamp}.json"
    doc = {
        "closed": result.closed,
        "outcome": result.outcome,
        "settled": result.settled,
        "options": asdict(opts),
        "figures": result.figures,
        "events": result.events,
        "monitor_passes": passes,
    }
    f.write_text(json.dumps(doc, indent=2, default=str))
    return f


def print_figures(console: Any, result: LoopResult) -> None:
    """The closed loop's figures as a table (figures that did not happen are left out)."""
    f = result.figures
    t = Table(title=f"closed loop: {f.get('scenario')} -> {result.outcome}", min_width=80)
    t.add_column("figure")
    t.add_column("value", justify="right")
    rows = [
        ("detection delay (transactions after onset)", f.get("detection_delay_tx")),
        ("false alarms before the onset", f.get("false_alarms_before_onset")),
        ("onset -> drift detected (s)", f.get("onset_to_detected_s")),
        ("onset -> retraining started (s)", f.get("onset_to_retrain_started_s")),
        ("retraining run (s)", round1(f.get("retrain_run_seconds"))),
        ("onset -> gate decision (s)", f.get("onset_to_gate_s")),
        ("onset -> canary decision (s)", f.get("onset_to_canary_s")),
        ("onset -> new champion serving (s)", f.get("onset_to_serving_new_s")),
        ("PR-AUC old champion, post-drift (gate window)", fmt_metric(f.get("pr_auc_old_post_drift"))),
        ("PR-AUC new model, post-drift (gate window)", fmt_metric(f.get("pr_auc_new_post_drift"))),
        (
            "gate window (rows / frauds)",
            f"{f['gate']['n']} / {f['gate']['frauds']}" if f.get("gate") else None,
        ),
        ("champion before -> after", f"{f.get('champion_before')} -> {f.get('champion_after')}"),
        (
            "served PR-AUC after onset, by version",
            ", ".join(
                f"{v}: {fmt_metric(x)} ({f['served_rows_after_onset'].get(v)} rows)"
                for v, x in (f.get("served_pr_auc_after_onset") or {}).items()
            ),
        ),
        (
            "feedback labels delivered (channel)",
            f"{f.get('feedback_delivered')} ({f.get('feedback_channel')})",
        ),
        (
            "monitor passes (mean seconds)",
            f"{f.get('monitor_passes')} ({f.get('monitor_pass_seconds_mean')})",
        ),
    ]
    rows += settle_rows(f.get("after_promotion"))
    for k, v in rows:
        if v is not None:
            t.add_row(k, str(v))
    console.print(t)
    console.print("the drift history of every pass, in Evidently's UI: `riskops ui` (docs/operations.md)")


def settle_rows(a: dict | None) -> list[tuple[str, Any]]:
    """The after-promotion rows of the figures table: the re-baselining, (a) and (b)."""
    if not a:
        return []
    ref = a.get("reference") or {}
    w = ref.get("window") or {}
    rebased = a.get("rebaselined_tx_after_promotion")
    learned = (
        f"{a['learned_shift_drift_verdicts']} drift verdicts, {a['learned_shift_retrain_triggers']} "
        f"retraining triggers in {a['learned_shift_passes']} passes over "
        f"{a['learned_shift_rows_checked']} transactions: "
        + ("quiet" if a["learned_shift_quiet"] else "NOT quiet")
        if rebased is not None
        else "not shown: the reference was not re-baselined before the traffic ended"
    )
    if a.get("new_shift_caught"):
        trigger = trigger_answer(a.get("second_trigger"))
        second = (
            f"caught {a['second_detection_delay_tx']} transactions after its onset "
            f"({', '.join(a['second_rules'])}); retraining trigger: {trigger}"
        )
    elif a.get("second_onset_tx") is not None:
        second = "NOT caught before the traffic ended"
    else:
        second = "not reached"
    return [
        (
            "after the promotion: reference re-baselined (tx after promotion)",
            None
            if rebased is None
            else f"{rebased} ({w.get('rows')} rows of {a.get('champion')}, "
            f"{w.get('start')} -> {w.get('end')})",
        ),
        ("(a) the learned shift, no second retraining", learned),
        (f"(b) a new shift ({a.get('second_scenario')})", second),
    ]


def trigger_answer(trigger: dict | None) -> str:
    """The retraining trigger's answer in a few words (a dry run's recorded command is left out)."""
    if not trigger:
        return "not called"
    why = str(trigger.get("why") or trigger.get("outcome"))
    return (
        "a retraining would start (dry run: its data prepared, its command recorded)"
        if why.startswith("dry run")
        else why
    )
