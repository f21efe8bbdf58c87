"""Drift history in Evidently's UI: every monitor pass becomes one run of an Evidently workspace.

    ws = DriftWorkspace(paths.root / "evidently")
    ws.add_pass(drift_result.snapshots, at=now, tags=["status:ok", "drift"])
    # riskops ui  (Evidently's own UI over the folder)

The workspace is Evidently 0.7's *local* workspace: a folder of JSON files (one project folder per
model, one file per run). It is a filesystem, not an object store: on a cluster it lives on a mounted
volume (the monitor writes, `riskops ui` reads the same mount); an ``s3://`` path is refused.

What one pass adds: ONE run holding the pass's reports merged (the "drift" report, plus the
"performance" report when the labelled window allowed one), its time set to the pass's time, tagged
with what the verdict said (``drift`` / ``no-drift`` first, ``status:<status>``,
``champion:<version>``, ``alert``) and metadata (the rules that fired, the report folder). A pass
that compared nothing (re-baselining, no champion) is still one run, empty but tagged, so the
history shows every pass.

Size: a run with the drift report's plots is ~3 MB, its values, tests and tags alone ~80 KB. The
newest ``keep_full`` runs keep their plots (the monitor passes ``reports.keep_last``: a run's full
report lives as long as its report folder); older runs are slimmed to values, tests and tags, which is
all the dashboard reads; beyond ``keep_runs`` runs the oldest are deleted.

The project ("riskops drift monitor (<model>)") and its dashboard are created by the first pass, once
across processes (a lock file); later passes leave the dashboard alone unless its panel titles differ
from `PANELS` (a newer riskops), which replaces it. The panels plot what the
Evidently presets of `riskops.monitoring.drift` compute (`PANELS`): a panel whose metric id or labels
do not match what the runs hold stays empty, which is what tests/integration/test_evidently_ui.py
looks for in a real browser.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from riskops.monitoring.drift import SCORE_QUANTILES
from riskops.monitoring.reference import DECISIONS
from riskops.settings import MODEL_NAME

PROJECT_NAME = "riskops drift monitor"
LOCK_FILE = ".riskops.lock"  # Evidently lists only UUID-named folders, so this file is invisible to it


def project_name(model_name: str = MODEL_NAME) -> str:
    """The Evidently project of a model's monitor passes."""
    return f"{PROJECT_NAME} ({model_name})"


# --------------------------------------------------------------------------------------------
# The dashboard
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One plotted series: an Evidently metric type and the labels that pick its values."""

    metric: str  # the metric's type name, e.g. "ValueDrift" (stored as "evidently:metric_v2:ValueDrift")
    labels: tuple[tuple[str, str], ...] = ()  # metric params / value location the series must carry
    legend: str | None = None
    tags: tuple[str, ...] = ()  # only runs carrying all of these tags (one tagged series per panel:
    # Evidently's local storage matches a value against the first series of its metric only)


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # text | counter | line | bar
    series: tuple[Series, ...] = ()
    description: str = ""
    size: str = "full"


def _value_drift(column: str, method: str, legend: str) -> Series:
    return Series("ValueDrift", (("column", column), ("method", method)), legend)


def _score_quantile(q: float) -> Series:
    return Series("QuantileValue", (("column", "risk_score"), ("quantile", str(q))), f"p{q * 100:g}")


def _decision_rate(decision: str) -> Series:
    # CategoryCount's value is a count and a share ("value_type"); its `categories` param is a list,
    # stored as str(list)
    labels = (("column", "decision"), ("categories", str([decision])), ("value_type", "share"))
    return Series("CategoryCount", labels, decision)


# Labels are compared as strings with the run's metric params plus the value's location in the
# result (Evidently stores str(value)); methods are riskops.monitoring.drift_settings.DriftSettings'
# defaults, quantiles and decisions what riskops.monitoring.drift's report computes.
PANELS: tuple[Panel, ...] = (
    Panel(
        "riskops drift monitor",
        "text",
        description="One run per monitor pass (tags: status, champion version, drift / no-drift, alert). "
        "Inputs: DataDriftPreset with self-calibrated per-column thresholds; score: ValueDrift of "
        "risk_score, its mean and quantiles; decisions: the rates of approve / review / block and "
        "ValueDrift of that mix; performance: ClassificationPreset on the labelled window.",
    ),
    Panel(
        "Drifted inputs, newest pass",
        "counter",
        (Series("DriftedColumnsCount", (("value_type", "count"),), "drifted inputs"),),
        description="One value per reference, the newest on the right",
        size="half",
    ),
    Panel(
        "Share of drifted inputs, newest pass",
        "counter",
        (Series("DriftedColumnsCount", (("value_type", "share"),), "share"),),
        description="One value per reference, the newest on the right",
        size="half",
    ),
    Panel(
        "Share of drifted inputs per pass",
        "line",
        (Series("DriftedColumnsCount", (("value_type", "share"),), "drifted share"),),
        description="DataDriftPreset: share of monitored inputs whose drift score passed its threshold. "
        "A new reference (a new champion, a re-baselining) calibrates its own thresholds: a series of "
        "its own",
    ),
    Panel(
        "Passes with a drift verdict",
        "line",
        (Series("DriftedColumnsCount", (("value_type", "share"),), "drifted share", tags=("drift",)),),
        description="One point per pass whose rules said drift (run tag 'drift'; the rules are in the "
        "run's metadata), at its share of drifted inputs",
    ),
    Panel(
        "Drifted inputs per pass",
        "bar",
        (Series("DriftedColumnsCount", (("value_type", "count"),), "drifted inputs"),),
    ),
    Panel(
        "Risk score per pass (mean, p50, p90, p99)",
        "line",
        (Series("MeanValue", (("column", "risk_score"),), "mean"), *map(_score_quantile, SCORE_QUANTILES)),
        description="MeanValue and QuantileValue of risk_score over the window's rows scored by the "
        "champion (a canary challenger's rows are left out)",
    ),
    Panel(
        "Score drift (risk_score)",
        "line",
        (_value_drift("risk_score", "wasserstein", "normed Wasserstein distance"),),
        description="ValueDrift of risk_score, reference vs window",
    ),
    Panel(
        "Score drift p-value (risk_score, KS)",
        "line",
        (_value_drift("risk_score", "ks", "KS p-value"),),
    ),
    Panel(
        "Decision rates per pass",
        "line",
        tuple(map(_decision_rate, DECISIONS)),
        description="CategoryCount share of each decision among the window's rows scored by the champion "
        "(a canary challenger's rows are left out), the decision recomputed from the score with the "
        "version's thresholds",
    ),
    Panel(
        "Decision mix shift (chi-square p-value)",
        "line",
        (_value_drift("decision", "chisquare", "approve/review/block p-value"),),
        description="ValueDrift of the decision recomputed from the score with the version's thresholds",
    ),
    Panel(
        "Performance on the labelled window",
        "line",
        (
            Series("RocAuc", (), "ROC AUC"),
            Series("Precision", (), "precision at the review threshold"),
            Series("Recall", (), "recall at the review threshold"),
        ),
        description="ClassificationPreset on the labelled part of the log (when enough labels arrived); "
        "each champion's review threshold makes its own series",
    ),
)


def dashboard_model(panels: Sequence[Panel] = PANELS) -> Any:
    """The Evidently `DashboardModel` of `panels`: one tab holding them in order."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel, PanelMetric
    from evidently.sdk.panels import bar_plot_panel, counter_panel, line_plot_panel, text_panel

    charts = {"counter": counter_panel, "line": line_plot_panel, "bar": bar_plot_panel}
    plots = []
    for p in panels:
        if p.kind != "text" and p.kind not in charts:
            raise ValueError(f"panel {p.title!r}: unknown kind {p.kind!r} (text, {', '.join(charts)})")
        values = [
            PanelMetric(metric=s.metric, metric_labels=dict(s.labels), legend=s.legend, tags=list(s.tags))
            for s in p.series
        ]
        about = p.description or None
        plots.append(text_panel(p.title, about, p.size) if p.kind == "text"
                     else charts[p.kind](p.title, values, description=about, size=p.size))  # fmt: skip
    tab = DashboardTabModel(title="Drift", panels=[p.id for p in plots])
    return DashboardModel(tabs=[tab], panels=plots)


# --------------------------------------------------------------------------------------------
# The workspace
# --------------------------------------------------------------------------------------------


def _naive_utc(at: datetime) -> datetime:
    """Evidently compares run times with naive datetimes (its own default is `datetime.now()`)."""
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo else at


def _has_plots(model: Any) -> bool:
    return bool(model.widgets) or any(r.widget for r in model.metric_results.values())


def _slim(model: Any) -> Any:
    """A run's `SnapshotModel` without its plots (widgets), changed in place: values, tests, tags and
    time stay. Results nest (a count's share, a value per label), so every result met is stripped."""
    from evidently.core.metric_types import MetricResult

    def strip(node: Any) -> None:
        if isinstance(node, MetricResult):
            node.widget = []
            for name in node.__fields__:
                if name not in ("widget", "tests", "metric_value_location"):
                    strip(getattr(node, name))
        elif isinstance(node, dict):
            for v in node.values():
                strip(v)
        elif isinstance(node, list | tuple):
            for v in node:
                strip(v)

    strip(list(model.metric_results.values()))
    model.widgets, model.tests_widgets = [], []
    return model


class DriftWorkspace:
    """An Evidently local workspace holding one project per model, one run per monitor pass."""

    def __init__(
        self, path: Path | str, model_name: str = MODEL_NAME, keep_full: int = 48, keep_runs: int = 5000
    ):
        text = str(path)
        if "://" in text:
            raise ValueError(
                f"Evidently workspace {text!r}: only a local folder works (Evidently 0.7's local workspace "
                "is a filesystem); on a cluster mount a volume and give its path"
            )
        self.path = Path(path)
        self.model_name = model_name
        self.keep_full = keep_full  # newest runs that keep their plots (0: all)
        self.keep_runs = keep_runs  # runs kept in all (0: all)
        self._project: Any = None
        self._ws: Any = None

    def _workspace(self) -> Any:
        if self._ws is None:
            from evidently.ui.workspace import Workspace

            self.path.mkdir(parents=True, exist_ok=True)
            self._ws = Workspace(str(self.path))
        return self._ws

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOCK_FILE, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def find_project(self) -> Any | None:
        """The model's project, or None before the first pass (reads only; creates nothing)."""
        if not self.path.is_dir():
            return None
        found = self._workspace().search_project(project_name(self.model_name))
        return min(found, key=lambda p: str(p.id)) if found else None

    def project(self) -> Any:
        """The model's project, created with its dashboard on first use (once, across processes)."""
        if self._project is not None:
            return self._project
        with self._lock():
            ws = self._workspace()
            found = ws.search_project(project_name(self.model_name))
            if found:
                project = min(found, key=lambda p: str(p.id))
            else:
                project = ws.create_project(
                    project_name(self.model_name),
                    description=f"riskops monitor passes of {self.model_name}: drift, decisions, performance",
                )
            wanted = dashboard_model()
            have = ws.get_dashboard(project.id)
            if [p.title for p in have.panels] != [p.title for p in wanted.panels]:
                ws.save_dashboard(project.id, wanted)  # new project, or panels of an older riskops
        self._project = project
        return project

    def add_pass(
        self,
        snapshots: Mapping[str, Any],
        at: datetime,
        tags: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> str:
        """Add one monitor pass as one run: `snapshots` (name -> Evidently Snapshot) merged in order,
        at the pass's time `at`, with `tags` and `metadata` (values stored as strings). Returns its id."""
        from evidently.core.report import Snapshot
        from evidently.core.serialization import ReportModel, SnapshotModel

        models = [s.to_snapshot_model() for s in snapshots.values()]
        merged = SnapshotModel(
            report=ReportModel(items=[]),
            name=name or f"monitor pass {_naive_utc(at).isoformat(timespec='seconds')}Z",
            timestamp=_naive_utc(at),
            metadata={k: str(v) for k, v in (metadata or {}).items()},
            tags=list(dict.fromkeys(tags)),
            metric_results={k: v for m in models for k, v in m.metric_results.items()},
            top_level_metrics=[k for m in models for k in m.top_level_metrics],
            widgets=[w for m in models for w in m.widgets],
            tests_widgets=[w for m in models for w in m.tests_widgets],
        )
        project = self.project()
        ref = self._workspace().add_run(project.id, Snapshot.load_model(merged), include_data=False)
        self._prune(project.id)
        return str(ref.id)

    def _prune(self, project_id: Any) -> None:
        """Delete the runs beyond `keep_runs`; slim the ones that just left the newest `keep_full`."""
        ws = self._workspace()
        ids = sorted(str(i) for i in ws.list_runs(project_id))  # uuid7 ids: creation order
        if self.keep_runs > 0 and len(ids) > self.keep_runs:
            for run_id in ids[: -self.keep_runs]:
                ws.delete_run(project_id, run_id)
            ids = ids[-self.keep_runs :]
        if self.keep_full <= 0:
            return
        # each pass pushes one run out of the window; a little slack covers passes of other processes
        for run_id in ids[-(self.keep_full + 3) : -self.keep_full]:
            model = ws.get_run(project_id, run_id)
            if model is not None and _has_plots(model):
                ws.state.write_snapshot(project_id, run_id, _slim(model))  # in place: same id, same time

    def runs(self) -> list[dict[str, Any]]:
        """The project's runs, oldest first: id, timestamp (naive UTC), tags, metadata, metric count."""
        project = self.find_project()
        if project is None:
            return []
        ws = self._workspace()
        out = []
        for run_id in ws.list_runs(project.id):
            m = ws.get_run(project.id, run_id)
            out.append(
                {
                    "id": str(run_id),
                    "timestamp": m.timestamp,
                    "tags": list(m.tags),
                    "metadata": dict(m.metadata),
                    "metrics": len(m.metric_results),
                }
            )
        return sorted(out, key=lambda r: (r["timestamp"], r["id"]))
