"""After a promotion the loop settles: the shift the new champion learned stays quiet, a new one is caught.

`AfterPromotion` takes over the replay once the new champion answers. Three phases, one monitor
pass every ``monitor_every`` transactions (`riskops.lifecycle.loop.run_loop_once`):

1. **re-baselining** — the monitor compares nothing until it holds a day of the new champion's
   traffic (`riskops.monitoring.rebaseline`: at least a window of clean rows spanning 24 h of event
   time); its passes report ``status: rebaselining``;
2. **learned shift** — the same shift goes on, now checked against the re-baselined reference, for
   ``settle_rows`` transactions: (a) holds when no pass calls it drift and no retraining is triggered;
3. **second shift** — the rest of the drifted traffic is dropped and a different scenario of the
   generator follows from the same instant in the same world (`world.second_shift`): (b) holds when
   a pass catches it.

The retraining trigger is *armed* for these phases: no cooldown (the replay moves more than a day of
event time past the first retraining, well beyond the production cooldown of 6 h, so a drift verdict
on the learned shift would retrain again), and ``dry_run`` (a second retraining's data is prepared
and its command recorded, not run: the demo stays short).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd

from cli.drift_demo.report import trigger_answer
from cli.drift_demo.world import second_scenario, second_shift
from riskops.lifecycle.loop import run_loop_once
from riskops.lifecycle.retrain import RetrainTrigger


class AfterPromotion:
    """The replay after a promotion (see the module doc); `step` is called once per replay step."""

    def __init__(self, loop: Any) -> None:
        """`loop`: the `cli.drift_demo.loop.ClosedLoop` whose replay this takes over."""
        self.loop = loop
        self.scenario = second_scenario(loop.opts)
        self.version = loop.st.new
        armed = replace(loop.cfg.retrain, cooldown_seconds=0.0, mode="dry_run")
        self.trigger = RetrainTrigger(
            loop.home, armed, data_provider=loop.seen_so_far, history_provider=lambda: loop.timeline.train
        )
        self.phase = "rebaselining"  # -> learned -> second -> done
        self.start_tx = loop.tx
        self.next_pass = loop.tx + loop.opts.monitor_every
        self.served_tx: int | None = None  # the pass that found the re-baselined reference in force
        self.onset_tx: int | None = None  # the second shift's first transaction
        self.reference: dict = {}
        self.passes: list[dict] = []
        self.flagged: list[dict] = []  # drift verdicts on the learned shift (there should be none)
        self.triggered: list[dict] = []  # retraining trigger answers on the learned shift (none either)
        self.caught: dict | None = None  # the pass that caught the second shift
        loop.ev.add(
            "after_promotion",
            f"{self.version} answers; the replay goes on with the learned shift: the drift reference is "
            f"re-baselined on {self.version}'s own traffic, then a second shift ('{self.scenario}') follows. "
            "Retraining trigger armed: no cooldown, dry run (a retraining would be prepared, not run)",
            loop.tx,
            loop.after(),
        )

    # ------------------------------------------------------------------------------------------ replay
    def step(self) -> bool:
        """A monitor pass when one is due; False once the second shift was caught or cannot be."""
        if self.loop.tx >= self.next_pass:
            self.next_pass += self.loop.opts.monitor_every
            self._pass()
        return self.phase != "done"

    def _pass(self) -> None:
        loop, tx = self.loop, self.loop.tx
        res = run_loop_once(loop.home, loop.cfg, trigger=self.trigger)
        ref = res.reference or {}
        if (
            self.phase == "rebaselining"
            and ref.get("source") == "served"
            and ref.get("version") == self.version
        ):
            self._rebaselined(ref)
        rules = [r["rule"] for r in res.verdict.reasons if r.get("action") == "retrain"]
        drift = res.verdict.drift and res.status == "ok"
        rec = {
            "tx": tx,
            "phase": self.phase,
            "status": res.status,
            "drift": drift,
            "rules": rules,
            "reference": ref.get("source"),
            "progress": ref.get("progress"),
            "seconds": round(res.seconds, 2),
            "trigger": None
            if res.trigger is None
            else {"outcome": res.trigger.outcome, "why": res.trigger.why},
        }
        self.passes.append(rec)
        loop.passes.append({**rec, "tx_after_onset": loop.after(), "report_dir": str(res.report_dir)})
        if self.phase == "second":
            self._second_pass(res, rec)
            return
        if rec["trigger"] is not None:
            self.triggered.append(rec)
        if drift:
            self.flagged.append(rec)
            msgs = "; ".join(r["message"] for r in res.verdict.reasons if r.get("action") == "retrain")
            loop.ev.add(
                "flagged_again",
                f"[red]the learned shift is flagged again[/red] ({', '.join(rules)}): {msgs}; retraining "
                f"trigger: {trigger_answer(rec['trigger'])}",
                tx,
                loop.after(),
            )
        elif self.phase == "rebaselining" and (not loop.opts.quiet or len(self.passes) == 1):
            p = ref.get("progress") or {}
            loop.ev.add(
                "rebaselining" if len(self.passes) == 1 else "monitor",
                f"monitor pass: {res.status} ({p.get('rows')} of {p.get('needed_rows')} clean rows of "
                f"{self.version}, {p.get('hours')} of {p.get('needed_hours')} h of event time); "
                "no drift check",
                tx,
                loop.after(),
            )
        elif self.phase == "learned" and not loop.opts.quiet:
            loop.ev.add(
                "monitor", "monitor pass: learned shift, no drift against the new reference", tx, loop.after()
            )
        if self.phase == "learned" and tx - self.served_tx >= loop.opts.settle_rows:
            self._start_second()

    def _rebaselined(self, ref: dict) -> None:
        loop = self.loop
        self.phase, self.served_tx, self.reference = "learned", loop.tx, ref
        w = ref.get("window") or {}
        loop.ev.add(
            "rebaselined",
            f"drift reference re-baselined on the first {w.get('rows')} clean transactions "
            f"{self.version} served (event time {w.get('start')} -> {w.get('end')}; {ref.get('file')}); "
            "checks resume against it",
            loop.tx,
            loop.after(),
            reference=ref,
        )

    def _start_second(self) -> None:
        """Drop the rest of the learned shift; the second scenario follows from the next instant."""
        loop = self.loop
        last = pd.Timestamp(loop.rows["event_timestamp"].iloc[loop.tx - 1])
        rows = second_shift(
            loop.timeline, self.scenario, last + pd.Timedelta(milliseconds=1), loop.opts.second_rows
        )
        loop.replace_rest(rows)
        self.phase, self.onset_tx = "second", loop.tx
        loop.ev.add(
            "second_onset",
            f"[bold]SECOND ONSET[/bold]: '{self.scenario}' traffic from here on (event time "
            f"{rows['event_timestamp'].iloc[0].isoformat()}), after {loop.tx - self.served_tx} "
            "transactions of the learned shift checked against the re-baselined reference",
            loop.tx,
            loop.after(),
        )

    def _second_pass(self, res: Any, rec: dict) -> None:
        loop = self.loop
        if not rec["drift"]:
            if not loop.opts.quiet:
                loop.ev.add("monitor", f"monitor pass: no drift ({res.status})", loop.tx, loop.after())
            return
        self.caught = {
            **rec,
            "delay_tx": loop.tx - self.onset_tx,
            "messages": [r["message"] for r in res.verdict.reasons if r.get("action") == "retrain"],
        }
        self.phase = "done"
        loop.ev.add(
            "second_detected",
            f"[bold red]NEW SHIFT DETECTED[/bold red] {self.caught['delay_tx']} transactions after its onset "
            f"({', '.join(rec['rules'])}): {'; '.join(self.caught['messages'])}; retraining trigger: "
            f"{trigger_answer(rec['trigger'])}",
            loop.tx,
            loop.after(),
        )

    # ------------------------------------------------------------------------------------------ outcome
    @property
    def quiet(self) -> bool:
        """(a): the re-baselined reference was in force; the learned shift raised no drift, no retraining."""
        return self.served_tx is not None and not self.flagged and not self.triggered

    @property
    def ok(self) -> bool:
        """(a) and (b): the loop settled."""
        return self.quiet and self.caught is not None

    def figures(self) -> dict:
        """The after-promotion figures for the timeline JSON and the printed table."""
        learned = [p for p in self.passes if p["phase"] == "learned"]
        return {
            "champion": self.version,
            "second_scenario": self.scenario,
            "phase_reached": self.phase,
            "rebaselining_passes": sum(p["phase"] == "rebaselining" for p in self.passes),
            "rebaselined_tx_after_promotion": None
            if self.served_tx is None
            else self.served_tx - self.start_tx,
            "reference": self.reference or None,
            "learned_shift_passes": len(learned),
            "learned_shift_rows_checked": None
            if self.served_tx is None
            else (self.onset_tx or self.loop.tx) - self.served_tx,
            "learned_shift_drift_verdicts": len(self.flagged),
            "learned_shift_retrain_triggers": len(self.triggered),
            "learned_shift_quiet": self.quiet,
            "second_onset_tx": self.onset_tx,
            "second_detection_delay_tx": None if self.caught is None else self.caught["delay_tx"],
            "second_rules": None if self.caught is None else self.caught["rules"],
            "second_messages": None if self.caught is None else self.caught["messages"],
            "second_trigger": None if self.caught is None else self.caught["trigger"],
            "new_shift_caught": self.caught is not None,
        }
