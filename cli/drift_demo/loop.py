"""The closed loop, step by step: serve the champion, replay the timeline, monitor, retrain, gate, serve the decision.

`run_loop` builds a `ClosedLoop` and runs it. One replay step (`ClosedLoop._step`) posts the next
transactions, hands their labels to the delayed feedback, and every ``monitor_every`` transactions
runs a monitor pass (which may start the retraining run, and later the promotion gate). Near the end
of the generated traffic, the loop holds the rest back until the gate has decided, then replays a
few hundred more transactions to show which model answers. After a promotion `settle.AfterPromotion`
takes over: the learned shift against the re-baselined reference, then a second shift.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from cli.drift_demo.cluster import ClusterServing
from cli.drift_demo.decisions import announce, canary_state, gate_without_applying, last_canary
from cli.drift_demo.events import Events
from cli.drift_demo.feedback import DelayedFeedback
from cli.drift_demo.monitoring import CANARY_MIN_REQUESTS, SERVING_SKEWED_INPUTS, monitor_config
from cli.drift_demo.report import LoopResult, pr_auc, run_seconds, write_timeline
from cli.drift_demo.server_process import Server
from cli.drift_demo.settle import AfterPromotion
from cli.drift_demo.world import DEMO_DIR, LoopOptions, Timeline, request_records, second_scenario
from riskops.lifecycle.loop import LoopConfig, run_loop_once
from riskops.lifecycle.retrain import RetrainTrigger
from riskops.registry.store import CHALLENGER, ModelRegistry
from riskops.settings import Paths


def run_loop(
    home: Paths, timeline: Timeline, opts: LoopOptions, console: Any = None, events: Events | None = None
) -> LoopResult:
    """Serve the current champion, replay the timeline, close the loop. See the package doc."""
    return ClosedLoop(home, timeline, opts, events or Events(console)).run()


@dataclass
class LoopState:
    """Where the loop stands: what has been detected, started, decided and served so far."""

    detected: int | None = None  # transaction index of the first drift verdict after the onset
    retrain: str | None = None  # run id of the retraining run this loop started
    decision: Any = None  # the promotion gate's decision, once taken
    new: str | None = None  # the version the decision puts in charge (None: the champion stays)
    outcome: str = "timeout"
    decided: bool = False
    retrain_failed: bool = False  # the run this loop started failed (reported once)
    serving_new: bool = False
    closed: bool = False


def new_episode(trigger: RetrainTrigger) -> None:
    """A demo run is a new episode in a new simulated world: an earlier episode's retraining start
    must not hold this one back through the cooldown. A run still in progress is left alone."""
    with trigger._lock():
        trigger._refresh_locked()
        state = trigger.state()
        if not state.get("running") and state.get("last_attempt_at"):
            state.pop("last_attempt_at", None)
            trigger._write_state(state)


class ClosedLoop:
    """One run of the closed loop over `timeline` (normal traffic, then the drift) against a live server."""

    def __init__(self, home: Paths, timeline: Timeline, opts: LoopOptions, events: Events) -> None:
        self.home, self.timeline, self.opts, self.ev = home, timeline, opts, events
        self.registry = ModelRegistry(home.registry)
        champion0 = self.registry.champion()
        if champion0 is None:
            raise RuntimeError(f"no champion in {self.registry.root}: train one first (riskops pipeline run)")
        self.champion0 = champion0
        self.cfg = LoopConfig.from_dict(monitor_config(opts, home))
        self.cfg_file = home.root / DEMO_DIR / "monitor.yaml"
        self.rows = pd.concat([timeline.normal, timeline.drift], ignore_index=True)
        self.onset_tx = len(timeline.normal)
        self.labels = self.rows["is_fraud"].astype(int).to_numpy()
        self.fraud_types = self.rows["fraud_type"].astype(str).to_numpy()
        self.records = request_records(self.rows)
        self.trigger = RetrainTrigger(
            home, self.cfg.retrain, data_provider=self.seen_so_far, history_provider=lambda: timeline.train
        )
        new_episode(self.trigger)
        if opts.topology == "cluster":
            self.server: Server | ClusterServing = ClusterServing(home, opts.replicas)
        else:
            sets = {"canary": True, "canary_config": str(self.cfg_file)} if opts.canary else None
            self.server = Server(home, opts.port, sets)
        self.figures: dict[str, Any] = {
            "scenario": timeline.scenario,
            "champion_before": champion0.version,
            "onset_event_time": timeline.onset,
            "false_alarms_before_onset": 0,
        }
        self.st = LoopState()
        self.served: list[dict] = []  # one entry per answered transaction: version, score, label, ...
        self.passes: list[dict] = []  # one entry per monitor pass
        self.tx = 0  # transactions replayed so far
        self.client: httpx.Client | None = None
        self.feedback: DelayedFeedback | None = None
        self.deadline = math.inf  # onset + timeout_s, once the onset has been replayed
        self.next_pass = opts.monitor_every
        # rows kept for after the gate: to show who answers, and in canary mode for the canary to decide
        self.reserve = (
            opts.after_rows + timeline.reserve + (2 * CANARY_MIN_REQUESTS + 200 if opts.canary else 0)
        )
        self.after_count = 0  # transactions replayed since serving reflects the decision
        self.settle: AfterPromotion | None = None  # after a promotion: the loop settles
        self.last_post = time.monotonic()

    # ---------------------------------------------------------------------------------- the run
    def run(self) -> LoopResult:
        """Start the server, replay until the loop closes (or cannot), stop the server, sum up."""
        self._start()
        try:
            self._replay()
        finally:
            self.client.close()
            self.server.stop()
            self.ev.add("stopped", "server stopped", self.tx, self.after())
        last_run = self.trigger.state().get("last_run") or {}
        outcome = self._outcome(last_run)
        self._sum_up(outcome, last_run)
        result = LoopResult(
            closed=self.st.closed and outcome in ("promoted", "rejected", "canary_rollback"),
            outcome=outcome,
            figures=self.figures,
            events=self.ev.items,
            settled=None if self.settle is None else self.settle.ok,
        )
        result.timeline_file = write_timeline(self.home, result, self.opts, self.passes)
        return result

    def after(self) -> int | None:
        """Transactions since the onset (None before it)."""
        return self.tx - self.onset_tx if self.tx >= self.onset_tx else None

    def seen_so_far(self) -> pd.DataFrame:
        """What the ingestion side has seen so far: no labels (the feedback adds them)."""
        return self.rows.iloc[: self.tx].assign(is_fraud=0, fraud_type="none")

    def replace_rest(self, rows: pd.DataFrame) -> None:
        """The traffic from the next transaction on is `rows` (the second shift), not what was generated."""
        self.rows = pd.concat([self.rows.iloc[: self.tx], rows], ignore_index=True)
        self.labels = self.rows["is_fraud"].astype(int).to_numpy()
        self.fraud_types = self.rows["fraud_type"].astype(str).to_numpy()
        self.records = self.records[: self.tx] + request_records(rows)

    def _start(self) -> None:
        """Announce the setup, start the model server, open the HTTP client and the feedback channel."""
        opts, timeline = self.opts, self.timeline
        self.ev.add(
            "setup",
            f"champion {self.champion0.version}; {len(timeline.normal)} normal then {len(timeline.drift)} "
            f"'{timeline.scenario}' transactions; a monitor pass every {opts.monitor_every} tx (window {opts.window}); "
            f"labels {opts.label_delay} tx late; monitor config {self.cfg_file}",
            0,
        )
        if not opts.monitor_all_inputs and opts.topology != "cluster":
            self.ev.add(
                "note",
                f"{len(SERVING_SKEWED_INPUTS)} windowed counters left out of the drift comparison: a "
                "freshly started server can only estimate them from the online snapshots for one window "
                "(see SERVING_SKEWED_INPUTS in cli/drift_demo/monitoring.py; --monitor-all-inputs keeps them)",
                0,
            )
        self.server.start()
        if isinstance(self.server, ClusterServing):
            what = (
                f"the cluster's topology from k8s/ (Redis, predictor, {opts.replicas} transformer replicas sharing "
                f"entity state; the monitor reads the shipped log {self.server.topology.log_uri}) up on"
            )
        else:
            what = "KServe ModelServer up on"
        self.ev.add(
            "serving",
            f"{what} {self.server.base} with {self.champion0.version} (log {self.server.log_file})",
            0,
        )
        if isinstance(self.server, ClusterServing):  # the replay spreads requests over the replicas
            self.client = self.server.client(timeout=30.0)
        else:
            self.client = httpx.Client(base_url=self.server.base, timeout=30.0)
        self.feedback = DelayedFeedback(self.home, self.client, opts.feedback, opts.label_delay)
        if isinstance(self.server, ClusterServing):  # labels also reach the canary's judge, as in the server
            self.feedback.on_delivered = lambda recs: self.client.canary and self.client.canary.outcomes(recs)

    def _replay(self) -> None:
        """Replay transactions until the loop has closed (and shown who answers), failed or timed out."""
        while self.tx < len(self.records):
            if not self._step():
                return
        self.ev.add(
            "exhausted",
            "[yellow]all generated traffic replayed before the loop closed[/yellow] (raise --drift-rows)",
            self.tx,
            self.after(),
        )

    def _step(self) -> bool:
        """One replay step; False when the loop is over."""
        st, opts = self.st, self.opts
        if self.tx == self.onset_tx:
            self._mark_onset()
        n = self._post_next_batch()
        if st.outcome == "promoted" and not st.serving_new and self._answering(st.new):
            st.serving_new = True
            self.ev.add(
                "serving_new",
                f"[bold green]new champion {st.new} is answering[/bold green]",
                self.tx,
                self.after(),
            )
        if self.tx >= self.next_pass and not st.decided:
            self.next_pass += opts.monitor_every
            self._monitor_pass()
            self._decide()
            if self._retrain_failed():
                return False
        if self.tx >= self.onset_tx and not st.decided and len(self.records) - self.tx <= self.reserve:
            if not self._hold_traffic_until_decided():
                return False
        if st.outcome == "gate_passed":  # canary mode: the server decides
            self._follow_canary()
        if not st.closed and self._serving_reflects_decision():
            st.closed = True
            if st.outcome == "promoted" and second_scenario(opts) and self.timeline.world is not None:
                self.settle = AfterPromotion(self)
        if st.closed:
            if self.settle is not None:  # bounded by the traffic left, not by the onset's timeout
                return self.settle.step()
            self.after_count += n
            if self.after_count >= opts.after_rows:
                return False
        if time.monotonic() > self.deadline:
            self.ev.add(
                "timeout",
                f"[red]timeout[/red]: the loop did not close within {opts.timeout_s:.0f}s of the onset",
                self.tx,
                self.after(),
            )
            return False
        return True

    # ---------------------------------------------------------------------------------- the steps
    def _mark_onset(self) -> None:
        """The first drifted transaction is next: start the onset clock and the timeout."""
        self.ev.onset_t = time.monotonic()
        self.deadline = self.ev.onset_t + self.opts.timeout_s
        self.ev.add(
            "onset",
            f"[bold]ONSET[/bold]: '{self.timeline.scenario}' traffic from here on (event time {self.timeline.onset})",
            self.tx,
            0,
        )

    def _post_next_batch(self) -> int:
        """Score the next transactions over REST v1 (never across the onset), queue their labels."""
        tx, opts, records = self.tx, self.opts, self.records
        n = min(opts.batch, len(records) - tx, self.onset_tx - tx if tx < self.onset_tx else len(records))
        if self.st.retrain and not self.st.decided and opts.retrain_rate > 0:  # leave CPU to the retraining
            time.sleep(max(0.0, n / opts.retrain_rate - (time.monotonic() - self.last_post)))
        self.last_post = time.monotonic()
        r = self.client.post("/v1/models/risk-model:predict", json={"instances": records[tx : tx + n]})
        r.raise_for_status()
        for j, pred in enumerate(r.json()["predictions"]):
            k = tx + j
            self.served.append(
                {
                    "version": pred["model_version"],
                    "score": float(pred["risk_score"]),
                    "y": int(self.labels[k]),
                    "after_onset": k >= self.onset_tx,
                    "degraded": bool(pred.get("degraded")),
                }
            )
            self.feedback.add(k, records[k]["transaction_id"], self.labels[k], self.fraud_types[k])
        self.tx += n
        self.feedback.deliver(self.tx)
        return n

    def _monitor_pass(self) -> None:
        """One in-process monitor pass; records detection, a retraining start and a gate decision."""
        st, tx = self.st, self.tx
        res = run_loop_once(self.home, self.cfg, trigger=self.trigger)
        rules = [r["rule"] for r in res.verdict.reasons if r.get("action") == "retrain"]
        self.passes.append(
            {
                "tx": tx,
                "tx_after_onset": self.after(),
                "status": res.status,
                "drift": res.verdict.drift,
                "rules": rules,
                "seconds": round(res.seconds, 2),
                "report_dir": str(res.report_dir),
            }
        )
        if res.verdict.drift and tx <= self.onset_tx:  # the window holds normal traffic only
            self.figures["false_alarms_before_onset"] += 1
            self.ev.add(
                "false_alarm", f"[yellow]drift verdict BEFORE the onset[/yellow]: {', '.join(rules)}", tx
            )
        elif res.verdict.drift and st.detected is None:
            st.detected = tx
            msgs = "; ".join(r["message"] for r in res.verdict.reasons if r.get("action") == "retrain")
            self.ev.add(
                "detected",
                f"[bold red]DRIFT DETECTED[/bold red] ({', '.join(rules)}): {msgs}; "
                f"report {res.report_dir / 'drift.html'}",
                tx,
                self.after(),
                rules=rules,
                report_dir=str(res.report_dir),
            )
        elif not self.opts.quiet:
            what = "drift (retraining already handled)" if res.verdict.drift else f"no drift ({res.status})"
            self.ev.add(
                "monitor", f"monitor pass: {what} in {res.seconds:.1f}s -> {res.report_dir}", tx, self.after()
            )
        self._note_retraining(res.trigger)
        if res.promotion is not None:
            st.decision = res.promotion
        elif self.opts.canary and st.retrain and st.decision is None:
            st.decision = gate_without_applying(self.home, self.cfg, self.trigger)

    def _note_retraining(self, trigger: Any) -> None:
        """The retraining trigger's answer to a drift verdict: a run started, or not started and why."""
        if trigger is None or self.st.retrain is not None:
            return
        if trigger.outcome == "started":
            self.st.retrain = trigger.run_id
            d = trigger.data or {}
            self.ev.add(
                "retrain_started",
                f"retraining started ({trigger.why}): {d.get('rows')} rows, "
                f"{d.get('frauds')} frauds, {d.get('feedback_labels')} feedback labels; {d.get('holdout_rows')} "
                f"newest rows held out for the gate; log {trigger.log_file}",
                self.tx,
                self.after(),
                run_id=trigger.run_id,
            )
        elif trigger.outcome == "failed":
            self.ev.add(
                "retrain_failed", f"[red]retraining not started[/red]: {trigger.why}", self.tx, self.after()
            )

    def _retrain_failed(self) -> bool:
        """The run this loop started has ended without a challenger: nothing left to wait for."""
        st = self.st
        if st.retrain_failed:
            return True
        if not st.retrain or st.decided:
            return False
        last = self.trigger.state().get("last_run") or {}
        if last.get("run_id") != st.retrain or last.get("outcome") != "failed":
            return False
        st.retrain_failed = True
        self.ev.add(
            "retrain_failed",
            f"[red]retraining run failed[/red] (exit {last.get('returncode')}): the champion keeps serving; "
            f"log {Path(last.get('run_dir') or '.') / 'pipeline.log'}",
            self.tx,
            self.after(),
        )
        return True

    def _decide(self) -> None:
        """Announce the gate's decision once it has been taken."""
        st = self.st
        if st.decision is not None and not st.decided:
            st.decided = True
            st.new, st.outcome = announce(
                self.ev, st.decision, self.tx, self.after(), self.figures, self.registry, self.opts.canary
            )

    def _hold_traffic_until_decided(self) -> bool:
        """Keep the last rows to show who answers after the decision; until then wait (labels flushed,
        a monitor pass every few seconds). False when no decision came (run failed, or timeout)."""
        st = self.st
        self.feedback.deliver(self.tx, flush=True)
        self.ev.add(
            "waiting",
            f"traffic held back ({len(self.records) - self.tx} rows kept for after the decision); "
            "waiting for the retraining run and the gate",
            self.tx,
            self.after(),
        )
        while (
            not st.decided
            and not self._retrain_failed()
            and time.monotonic() < self.deadline
            and st.detected is not None
        ):
            time.sleep(5.0)
            self._monitor_pass()
            self._decide()
        if self._retrain_failed():
            return False
        if not st.decided:
            self.ev.add(
                "timeout",
                f"[red]no decision[/red] within {self.opts.timeout_s:.0f}s of the onset",
                self.tx,
                self.after(),
            )
            return False
        return True

    def _follow_canary(self) -> None:
        """Canary mode, after the gate passed: record the server's canary decision once it is taken.
        In the cluster topology the canary revision is started here and judged by the front."""
        if isinstance(self.server, ClusterServing):
            self.server.follow_canary(self)
            return
        verdict = canary_state(self.registry, self.st.new)
        if verdict:
            self.st.outcome = "promoted" if verdict == "promote" else "canary_rollback"
            self.ev.add(
                "canary",
                f"the server's canary decided: {verdict} ({last_canary(self.client, self.home)})",
                self.tx,
                self.after(),
            )

    def _answering(self, version: str | None) -> bool:
        """Whether `version` answers: the last answer's, or in the cluster topology every replica's."""
        if not self.served or version is None:
            return False
        if isinstance(self.server, ClusterServing):
            return self.client.all_answer_with(version)
        return self.served[-1]["version"] == version

    def _serving_reflects_decision(self) -> bool:
        """Serving reflects the decision: the new version answers (promoted), or the old one still does."""
        if self.st.outcome == "promoted":
            return self.st.serving_new
        if self.st.outcome in ("rejected", "canary_rollback"):
            return self._answering(self.figures.get("champion_before"))
        return False

    # ---------------------------------------------------------------------------------- the figures
    def _outcome(self, last_run: dict) -> str:
        """How the loop ended: promoted | rejected | canary_rollback | not_detected | retrain_not_started
        | retrain_failed | timeout (`last_run`: the trigger's record of its last retraining run)."""
        st = self.st
        if st.detected is None:
            return "not_detected"
        if st.retrain is None:
            return "retrain_not_started"
        if last_run.get("outcome") == "failed":
            return "retrain_failed"
        if st.outcome == "gate_passed":
            return "timeout"  # the canary did not decide in time
        return st.outcome

    def _sum_up(self, outcome: str, last_run: dict) -> None:
        """Fill in the figures: delays from the onset, PR-AUC per served version, feedback, passes."""
        f, st, ev = self.figures, self.st, self.ev
        if last_run:
            keys = ("run_id", "outcome", "started_at", "finished_at", "returncode", "registration", "run_dir")
            f["retrain_run"] = {k: last_run.get(k) for k in keys}
            f["retrain_run_seconds"] = run_seconds(last_run)
        f["transactions_replayed"] = self.tx
        f["onset_tx"] = self.onset_tx
        f["detection_delay_tx"] = None if st.detected is None else st.detected - self.onset_tx
        for name in ("detected", "retrain_started", "gate", "canary", "serving_new"):
            hit = next((e for e in ev.items if e["event"] == name), None)
            f[f"onset_to_{name}_s"] = hit["since_onset_s"] if hit else None
        post = [s for s in self.served if s["after_onset"]]
        versions = sorted({s["version"] for s in post})
        f["served_pr_auc_after_onset"] = {
            v: pr_auc(
                [s["y"] for s in post if s["version"] == v], [s["score"] for s in post if s["version"] == v]
            )
            for v in versions
        }
        f["served_rows_after_onset"] = {v: sum(1 for s in post if s["version"] == v) for v in versions}
        f["degraded_answers"] = sum(1 for s in self.served if s["degraded"])
        f["feedback_delivered"] = self.feedback.sent
        f["feedback_channel"] = self.feedback.mode
        f["monitor_passes"] = len(self.passes)
        seconds = [p["seconds"] for p in self.passes]
        f["monitor_pass_seconds_mean"] = round(float(np.mean(seconds)), 2) if seconds else None
        champ = self.registry.champion()
        f["champion_after"] = champ.version if champ else None
        if self.settle is not None:
            f["after_promotion"] = self.settle.figures()
        if outcome == "rejected" and self.registry.aliases().get(CHALLENGER):
            f["challenger_left"] = self.registry.aliases().get(CHALLENGER)
