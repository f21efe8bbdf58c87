"""The evaluation's self-contained HTML report (PNG plots embedded as base64) and where it is published."""

import base64
import html
import json
import shutil
from pathlib import Path

from riskops.training.evaluate import (
    HTML_NAME,
    RATIO_KEY,
    TABLE_COLUMNS,
    EvaluationResult,
    budget_label,
    format_metric,
)


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"/>'


def render_html(result: EvaluationResult) -> str:
    """A self-contained HTML report: metrics table, policy, plots (embedded), segment PR-AUCs."""
    doc = result.document
    budget = doc.get("review_budget", 0.01)
    models = doc["models"]
    head = "".join(f"<th>{html.escape(h.format(budget=budget_label(budget)))}</th>" for _, h in TABLE_COLUMNS)
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{format_metric(m.get(k))}</td>" for k, _ in TABLE_COLUMNS)
        + "</tr>"
        for name, m in models.items()
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>riskops evaluation</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}</style>",
        "</head><body><h1>Model evaluation (test period)</h1>",
        f"<p>{doc.get('n', '?')} test transactions, {doc.get('positives', '?')} fraud.</p>",
        f"<table><tr><th>model</th>{head}</tr>{body}</table>",
    ]
    if doc.get(RATIO_KEY) is not None:
        parts.append(f"<p>PR-AUC ratio transformer / LightGBM: <b>{format_metric(doc[RATIO_KEY])}</b></p>")
    notes = [
        f"<li>{html.escape(n)}: {html.escape(m['note'])}</li>" for n, m in models.items() if m.get("note")
    ]
    if notes:
        parts.append("<ul>" + "".join(notes) + "</ul>")
    if doc.get("policy_thresholds"):
        th = doc["policy_thresholds"]
        parts.append(
            "<h2>Decision policy (set on validation)</h2>"
            f"<p>review at score &ge; {th['review']:.6g}; block at score &ge; {th['block']:.6g}</p>"
        )
        rows = []
        for where in ("policy_validation", "policy_test"):
            r = doc.get(where)
            if r:
                rows.append(
                    f"<tr><td>{where.split('_')[1]}</td><td>{format_metric(r['review_rate'])}</td><td>{format_metric(r['block_rate'])}</td>"
                    f"<td>{format_metric(r['block_precision'])}</td><td>{format_metric(r['fraud_caught_by_review_or_block'])}</td></tr>"
                )
        parts.append(
            "<table><tr><th>data</th><th>review rate</th><th>block rate</th><th>block precision</th>"
            "<th>fraud caught (review+block)</th></tr>" + "".join(rows) + "</table>"
        )
    for key, alt in (("pr_curve", "precision-recall curves"), ("histogram", "score histogram")):
        if key in result.files and result.files[key].exists():
            parts.append(f"<h2>{html.escape(alt)}</h2>" + _img_tag(result.files[key], alt))
    if doc.get("segments"):
        names = list(models)
        parts.append("<h2>PR-AUC by segment</h2><table><tr><th>segment</th><th>n</th><th>fraud</th>"
                     + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>")  # fmt: skip
        for seg, info in doc["segments"].items():
            parts.append(
                f"<tr><td>{html.escape(seg)}</td><td>{info['n']}</td><td>{info['positives']}</td>"
                + "".join(f"<td>{format_metric(info['pr_auc'].get(n))}</td>" for n in names)
                + "</tr>"
            )
        parts.append("</table>")
    if doc.get("data"):
        parts.append("<h2>Data</h2><pre>" + html.escape(json.dumps(doc["data"], indent=2)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def publish_report(result: EvaluationResult, reports_dir: Path | str | None = None) -> Path:
    """Write ``report.html`` next to the evaluation's files; copy them all to ``reports_dir`` if given.

    Returns:
        The report's path in ``result.out_dir`` (also ``result.files["html"]``).
    """
    path = result.out_dir / HTML_NAME
    path.write_text(render_html(result))
    result.files["html"] = path
    if reports_dir:
        out = Path(reports_dir)
        out.mkdir(parents=True, exist_ok=True)
        for f in result.out_dir.iterdir():
            shutil.copyfile(f, out / f.name)
    return path
