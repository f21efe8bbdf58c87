"""The promotion gate's and the canary's decisions as the demo sees them, announced on the timeline."""

from __future__ import annotations

import json
from typing import Any

from cli.drift_demo.events import Events
from cli.drift_demo.report import fmt_metric
from riskops.lifecycle.promotion import decisions_file, run_promotion_gate
from riskops.registry.store import CHALLENGER
from riskops.settings import Paths


def gate_without_applying(home: Paths, cfg: Any, trigger: Any) -> Any:
    """Canary mode: once the retraining run has finished, the offline gate decides whether the
    server's canary may go on (nothing is promoted here; a rejection removes the challenger)."""
    trigger.refresh()
    last = trigger.state().get("last_run") or {}
    version = (last.get("registration") or {}).get("version")
    if last.get("outcome") != "succeeded" or not version:
        return None
    return run_promotion_gate(
        home,
        cfg.promotion,
        challenger_version=version,
        cutoff=last.get("cutoff"),
        holdout_file=last.get("holdout_file"),
        apply=False,
    )


def last_canary(client: Any, home: Paths) -> str:
    """The canary's reasons and guard figures: the server's, else its record in decisions.jsonl
    (a promoted canary has already ended on the server when the registry shows the new champion)."""
    d: dict = {}
    try:
        d = client.get("/v1/canary").json().get("last_decision") or {}
    except Exception:  # noqa: BLE001 - the registry already says what happened; this is colour
        pass
    if not d:
        f = decisions_file(home)
        records = [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.exists() else []
        d = next((r for r in reversed(records) if r.get("kind") == "canary"), {})
    m = d.get("metrics") or {}
    figures = ", ".join(f"{k} {m[k]:.3f}" for k in ("score_shift", "ks", "flag_rate_ratio") if k in m)
    return "; ".join(d.get("reasons") or []) + (f"; {figures}" if figures else "") or "no reasons recorded"


def announce(
    ev: Events, decision: Any, tx: int, after: int | None, figures: dict, registry: Any, canary: bool
) -> tuple[str | None, str]:
    """Record the gate's decision; returns (the new version or None, the outcome so far)."""
    ch, new = decision.champion.get("pr_auc"), decision.challenger.get("pr_auc")
    figures["gate"] = {
        "promote": decision.promote,
        "reasons": decision.reasons,
        "n": decision.n,
        "frauds": decision.frauds,
        "champion_version": decision.champion_version,
        "challenger_version": decision.challenger_version,
        "champion": decision.champion,
        "challenger": decision.challenger,
        "delta": decision.delta,
    }
    figures["pr_auc_old_post_drift"] = ch
    figures["pr_auc_new_post_drift"] = new
    verdict = "PASSED" if decision.promote else "REJECTED"
    ev.add(
        "gate",
        f"promotion gate {verdict} for {decision.challenger_version}: {decision.n} labelled post-drift "
        f"rows ({decision.frauds} frauds) neither model trained on, PR-AUC old {fmt_metric(ch)} vs new {fmt_metric(new)}; "
        + "; ".join(decision.reasons),
        tx,
        after,
    )
    if not decision.promote:
        if canary and registry.aliases().get(CHALLENGER) == decision.challenger_version:
            registry.delete_alias(CHALLENGER)  # ends the server's canary of a model the gate rejected
        ev.add(
            "kept",
            f"[yellow]champion {decision.champion_version} kept[/yellow] (challenger "
            f"{decision.challenger_version} rejected)",
            tx,
            after,
        )
        return None, "rejected"
    if canary:
        ev.add(
            "canary_wait",
            f"gate passed; the server's canary splits traffic between {decision.champion_version} "
            f"and {decision.challenger_version} and decides",
            tx,
            after,
        )
        return decision.challenger_version, "gate_passed"
    ev.add(
        "promoted",
        f"[bold green]{decision.challenger_version} promoted to champion[/bold green] (was "
        f"{decision.champion_version}); the server hot-swaps it on its next registry poll",
        tx,
        after,
    )
    return decision.challenger_version, "promoted"


def canary_state(registry: Any, version: str) -> str | None:
    """The server's canary verdict as the registry shows it: "promote", "rollback", or None (still running)."""
    aliases = registry.aliases()
    if aliases.get("champion") == version:
        return "promote"
    if aliases.get("challenger") != version:
        return "rollback"
    return None
