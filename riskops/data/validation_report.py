"""The data gate's reports: a JSON document and a self-contained HTML page.

``result`` below is a riskops.data.validation.ValidationResult (not imported: that module imports this one).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

REPORT_HTML = "validation_report.html"
REPORT_JSON = "validation_report.json"


def short_value(v: Any) -> str:
    s = repr(v) if isinstance(v, str) else str(v)
    return s if len(s) <= 60 else s[:57] + "..."


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px} .sub{color:#666;margin-bottom:16px}
.badge{display:inline-block;padding:4px 10px;border-radius:4px;color:#fff;font-weight:600}
.pass{background:#2e7d32}.fail{background:#c62828}
table{border-collapse:collapse;width:100%;margin:12px 0 24px;font-size:13px}
th,td{border:1px solid #ddd;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5} tr.bad td{background:#fdecea} code{font-size:12px}
.stats td{border:none;padding:2px 12px 2px 0}
"""


def _fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def render_html(result: Any, context: dict, suite_name: str) -> str:
    """A self-contained HTML report (inline CSS, no scripts, no external links)."""
    e = html.escape
    s = result.statistics
    badge = (
        '<span class="badge pass">PASSED</span>'
        if result.success
        else '<span class="badge fail">FAILED</span>'
    )

    def row(x: dict, show_status: bool = True) -> str:
        ok = x.get("success", False)
        status = "&#10003; pass" if ok else "&#10007; fail"
        examples = ", ".join(short_value(v) for v in x.get("examples") or [])
        count = (
            ""
            if ok or not x.get("unexpected_count")
            else (f"{x['unexpected_count']} ({x['unexpected_percent']:.2f}%)")
        )
        cells = [f"<code>{e(x['expectation'])}</code>", e(x.get("column") or "(table)")]
        if show_status:
            cells.append(status)
        cells += [e(count), e(examples), e(x.get("details") or "")]
        return f'<tr class="{"" if ok else "bad"}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"

    head = (
        "<tr><th>expectation</th><th>column</th>{}<th>unexpected</th><th>examples</th><th>details</th></tr>"
    )
    parts = [
        '<!DOCTYPE html><html><head><meta charset="utf-8">',
        f"<title>riskops data validation: {'passed' if result.success else 'FAILED'}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Raw transaction validation {badge}</h1>",
        f'<div class="sub">suite <code>{e(suite_name)}</code> &middot; Great Expectations &middot; '
        f"validated {e(str(context.get('validated_at')))}</div>",
        '<table class="stats">',
        *(f"<tr><td>{e(k)}</td><td><b>{e(_fmt(v))}</b></td></tr>" for k, v in s.items()),
        f"<tr><td>timestamp window</td><td>{e(' .. '.join(w or '(open)' for w in context.get('window') or []))}</td></tr>",
        "</table>",
    ]
    if result.failures:
        parts += ["<h2>Failures</h2><table>", head.format("")]
        parts += [row(f, show_status=False) for f in result.failures]
        parts.append("</table>")
    parts += ["<h2>All expectations</h2><table>", head.format("<th>status</th>")]
    parts += [row(x) for x in result.expectations]
    parts.append("</table>")
    if context.get("gx_data_docs"):
        parts.append(f"<p>GX Data Docs: <code>{e(context['gx_data_docs'])}</code></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_reports(result: Any, report_dir: Path, context: dict, suite_name: str) -> None:
    """Write ``validation_report.json`` and ``.html`` into ``report_dir``; set the result's paths to them."""
    result.report_json = report_dir / REPORT_JSON
    result.report_html = report_dir / REPORT_HTML
    payload = {**result.to_dict(), "summary": result.summary(), **context}
    result.report_json.write_text(json.dumps(payload, indent=2, default=str))
    result.report_html.write_text(render_html(result, context, suite_name))
