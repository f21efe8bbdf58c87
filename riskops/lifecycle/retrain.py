"""The retraining trigger: drift verdict -> (at most) one retraining run, recorded.

`RetrainTrigger(paths, settings, submit=...).maybe_trigger(reason)` decides, under a file lock,
whether to start a run and appends a `TriggerRecord` to ``<home>/retrain/triggers.jsonl`` whatever
it decides:

* **debounce** — nothing starts while a run is in progress (``state.json`` holds its run id, PID
  or KFP run id, start time), nor within ``cooldown_seconds`` of the last start; so one shift that
  the monitor sees every minute triggers one run, and a persisting shift (say the challenger was
  rejected) triggers another only after the cooldown;
* **data** — `riskops.lifecycle.retraining_data.build_retraining_data`: recent raw transactions
  with feedback labels (+ history), the newest held out for the promotion gate. Where the raw
  transactions come from is the caller's choice: pass a DataFrame, a ``data_provider``, or
  configure ``transactions_file`` (a parquet the ingestion side appends to);
* **start** — ``mode: local`` runs ``python -m cli.main pipeline run --input train.parquet
  --promotion never ...`` in a SUBPROCESS (own session, output in the run folder) through
  `riskops.lifecycle.local_run`, which records the exit code and the version the run registered;
  ``mode: cluster`` first copies ``train.parquet`` to ``cluster_input_path`` (any fsspec path or URI,
  e.g. ``s3://bucket/retrain/{run_id}/train.parquet``), then calls the injected ``submit`` (the
  core never imports ``pipelines``: callers pass `pipelines.runner.submit`); ``mode: dry_run``
  prepares the data and records the command without running it.

A failed or crashed run never disturbs serving: the pipeline registers the new model as
*challenger* (``--promotion never``) only in its last step, so a failure leaves the registry and
the champion untouched; the failure is recorded (``outcome: failed``, return code, log file).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from riskops.lifecycle.retrain_settings import RetrainError, RetrainSettings
from riskops.lifecycle.retraining_data import RetrainingData, build_retraining_data
from riskops.monitoring.feedback import load_feedback
from riskops.monitoring.log_store import put_file
from riskops.settings import PROJECT_ROOT, Paths

log = logging.getLogger(__name__)

# Starts a pipeline run on a cluster: called as submit(host, profile=..., **pipeline_parameters),
# returns the KFP run id (`pipelines.runner.submit`, passed in by the CLI).
PipelineSubmit = Callable[..., str]


@dataclass
class TriggerRecord:
    """One line of triggers.jsonl."""

    trigger_id: str
    at: str
    event: str  # "trigger" (a decision) or "finished" (a run's outcome)
    outcome: str  # started | skipped | failed | running | succeeded
    why: str
    reason: dict = field(default_factory=dict)
    run_id: str | None = None
    mode: str | None = None
    pid: int | None = None
    input: str | None = None
    log_file: str | None = None
    returncode: int | None = None
    registration: dict | None = None
    data: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime | None = None) -> str:
    return (t or _now()).isoformat(timespec="seconds")


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# The trigger
# --------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)  # our own child: reap it if it exited
        if done == pid:
            return False
    except ChildProcessError:
        pass
    except OSError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RetrainTrigger:
    """Debounced retraining. Thread/process safe through a lock file under ``<home>/retrain``."""

    def __init__(
        self,
        paths: Paths,
        config: dict | RetrainSettings | None = None,
        data_provider: Callable[[], pd.DataFrame | None] | None = None,
        feedback_provider: Callable[[], pd.DataFrame | None] | None = None,
        history_provider: Callable[[], pd.DataFrame | None] | None = None,
        clock: Callable[[], datetime] = _now,
        submit: PipelineSubmit | None = None,
    ) -> None:
        """Args:
            paths: the home folder's layout (state under ``<home>/retrain``).
            config: the `retrain:` section (a dict or RetrainSettings).
            data_provider / feedback_provider / history_provider: where the recent transactions,
                the labels and the older history come from (defaults: ``transactions_file``,
                ``<home>/feedback``, ``history_file``).
            clock: the time (tests move it).
            submit: starts a pipeline run on a cluster (``mode: cluster``), e.g. `pipelines.runner.submit`.
        """
        self.paths = paths
        self.settings = config if isinstance(config, RetrainSettings) else RetrainSettings.from_dict(config)
        self.dir = paths.root / "retrain"
        self.state_file = self.dir / "state.json"
        self.records_file = self.dir / "triggers.jsonl"
        self.data_provider = data_provider
        self.feedback_provider = feedback_provider
        self.history_provider = history_provider
        self.clock = clock
        self.submit = submit
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _write_state(self, state: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        os.replace(tmp, self.state_file)

    def _append(self, rec: TriggerRecord) -> TriggerRecord:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.records_file, "a") as fh:
            fh.write(json.dumps(rec.to_dict(), sort_keys=True, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return rec

    def records(self) -> list[dict]:
        if not self.records_file.exists():
            return []
        out = []
        for line in self.records_file.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    # -- public -----------------------------------------------------------------------------
    def maybe_trigger(self, reason: dict, transactions: pd.DataFrame | None = None) -> TriggerRecord:
        """Start a retraining run for `reason` (the monitor's verdict) unless debounced.

        Always returns (and appends to triggers.jsonl) a TriggerRecord: ``outcome`` is ``started``,
        ``skipped`` (run in progress / cooldown / disabled; ``why`` says which) or ``failed`` (no or
        too little data, submission error). Never raises for those.
        """
        now = self.clock()
        tid = uuid.uuid4().hex[:12]
        base = {"trigger_id": tid, "at": _iso(now), "event": "trigger", "reason": _jsonable(reason),
                "mode": self.settings.mode}
        with self._lock():
            self._refresh_locked()
            state = self.state()
            if not self.settings.enabled:
                return self._append(TriggerRecord(**base, outcome="skipped", why="retraining disabled (retrain.enabled)"))
            running = state.get("running")
            if running:
                return self._append(TriggerRecord(
                    **base, outcome="skipped", run_id=running.get("run_id"), pid=running.get("pid"),
                    why=f"run {running.get('run_id')} in progress since {running.get('started_at')}"))
            last = _parse(state.get("last_attempt_at"))
            if last is not None and (now - last).total_seconds() < self.settings.cooldown_seconds:
                until = datetime.fromtimestamp(last.timestamp() + self.settings.cooldown_seconds, UTC)
                return self._append(TriggerRecord(
                    **base, outcome="skipped", run_id=state.get("last_run_id"),
                    why=f"cooldown: last run {state.get('last_run_id')} started {_iso(last)}; next allowed {_iso(until)}"))

            run_id = f"retrain-{now.strftime('%Y%m%d-%H%M%S')}-{tid[:6]}"
            run_dir = self.dir / "runs" / run_id
            state["last_attempt_at"] = _iso(now)
            state["last_run_id"] = run_id
            self._write_state(state)  # the cooldown starts now, whatever happens next
            try:
                data = self._prepare_data(run_dir, transactions)
            except Exception as exc:  # data problems are recorded, never raised into the monitor
                return self._append(TriggerRecord(**base, outcome="failed", run_id=run_id,
                                                  why=f"retraining data: {exc}"))
            try:
                started = self._start(run_id, run_dir, data)
            except Exception as exc:
                log.exception("retraining submission failed")
                return self._append(TriggerRecord(**base, outcome="failed", run_id=run_id, input=str(data.train_file),
                                                  data=data.to_dict(), why=f"submission failed: {exc}"))
            if self.settings.mode != "dry_run":
                state["running"] = {"run_id": run_id, "started_at": _iso(now), "mode": self.settings.mode,
                                    **{k: v for k, v in started.items() if k in ("pid", "kfp_run_id")},
                                    "run_dir": str(run_dir), "holdout_file": data.to_dict()["holdout_file"],
                                    "cutoff": data.cutoff}
            self._write_state(state)
            return self._append(TriggerRecord(
                **base, outcome="started" if self.settings.mode != "dry_run" else "skipped",
                why=started.get("why", "drift verdict"), run_id=run_id, pid=started.get("pid"),
                input=str(data.train_file), log_file=started.get("log_file"), data=data.to_dict()))

    def refresh(self) -> TriggerRecord | None:
        """Check the run in progress; when it has ended, record its outcome (and return it)."""
        with self._lock():
            return self._refresh_locked()

    def running(self) -> dict | None:
        with self._lock():
            self._refresh_locked()
            return self.state().get("running")

    # -- internals --------------------------------------------------------------------------
    def _prepare_data(self, run_dir: Path, transactions: pd.DataFrame | None) -> RetrainingData:
        tx = transactions
        if tx is None and self.data_provider is not None:
            tx = self.data_provider()
        if tx is None and self.settings.transactions_file:
            p = self._home_path(self.settings.transactions_file)
            if p.exists():
                tx = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_json(p, lines=True)
        if tx is None:
            raise RetrainError(
                "no recent transactions: pass them to maybe_trigger, give RetrainTrigger a data_provider or "
                f"write {self._home_path(self.settings.transactions_file or 'data/recent_transactions.parquet')}"
            )
        fb = self.feedback_provider() if self.feedback_provider is not None else load_feedback(self.paths)
        hist = self.history_provider() if self.history_provider is not None else None
        if hist is None and self.settings.history_file:
            p = self._home_path(self.settings.history_file)
            if p.exists():
                hist = pd.read_parquet(p)
        return build_retraining_data(tx, fb, run_dir, self.settings, history=hist)

    def _home_path(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.paths.root / p

    def local_command(self, data: RetrainingData, run_dir: Path) -> list[str]:
        if self.settings.command:
            subs = {"python": sys.executable, "input": str(data.train_file), "run_dir": str(run_dir)}
            return [str(a).format(**subs) for a in self.settings.command]
        recent = ["--recent-from", data.recent_from] if data.recent_from else []
        return [sys.executable, "-m", "cli.main", "pipeline", "run", "--input", str(data.train_file),
                "--promotion", "never", *recent, *map(str, self.settings.pipeline_args)]

    def _start(self, run_id: str, run_dir: Path, data: RetrainingData) -> dict:
        mode = self.settings.mode
        if mode == "dry_run":
            cmd = self.local_command(data, run_dir)
            return {"why": "dry run: data prepared, command not started: " + " ".join(cmd)}
        if mode == "cluster":
            if self.submit is None:
                raise RetrainError("retrain.mode 'cluster' needs a submit function (RetrainTrigger(submit=...)); "
                                   "`riskops monitor` passes pipelines.runner.submit")
            input_path = (self.settings.cluster_input_path or str(data.train_file)).format(run_id=run_id)
            if input_path != str(data.train_file):  # the cluster reads its input there, not on this disk
                try:
                    put_file(data.train_file, input_path)
                except Exception as exc:
                    raise RetrainError(f"cannot write the training set to {input_path}: {exc}") from exc
            params = {"source": "file", "input_path": input_path, "promotion": "never",
                      **({"recent_from": data.recent_from} if data.recent_from else {}),
                      **self.settings.cluster_parameters}
            kfp_run_id = self.submit(self.settings.host, profile=self.settings.profile, **params)
            return {"kfp_run_id": kfp_run_id, "why": f"submitted to {self.settings.host}: KFP run {kfp_run_id}"}
        cmd = self.local_command(data, run_dir)
        log_file = run_dir / "pipeline.log"
        launcher = [sys.executable, "-m", "riskops.lifecycle.local_run", str(run_dir), str(self.paths.root), "--", *cmd]
        env = {**os.environ, "RISKOPS_HOME": str(self.paths.root)}
        pythonpath = [str(PROJECT_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
        (run_dir / "command.json").write_text(json.dumps(cmd))
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            launcher, cwd=str(PROJECT_ROOT), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
        return {"pid": proc.pid, "log_file": str(log_file), "why": f"started locally (pid {proc.pid})"}

    def _refresh_locked(self) -> TriggerRecord | None:
        state = self.state()
        running = state.get("running")
        if not running:
            return None
        run_dir = Path(running.get("run_dir", ""))
        result = _read_json(run_dir / "result.json") if running.get("run_dir") else {}
        outcome, why, rc, registration = None, "", None, None
        started = _parse(running.get("started_at"))
        age = (self.clock() - started).total_seconds() if started else 0.0
        if running.get("mode") == "cluster":
            status = self._cluster_status(running.get("kfp_run_id"))
            if status in ("SUCCEEDED",):
                outcome, why = "succeeded", f"KFP run {running.get('kfp_run_id')} succeeded"
            elif status in ("FAILED", "CANCELED", "CANCELLED", "SKIPPED"):
                outcome, why = "failed", f"KFP run {running.get('kfp_run_id')} {status.lower()}"
        elif result:
            rc = result.get("returncode")
            registration = result.get("registration")
            outcome = "succeeded" if rc == 0 else "failed"
            why = f"pipeline exited with {rc}" + (f"; registered {registration.get('version')} as "
                                                  f"{registration.get('alias')}" if registration else "")
        elif running.get("pid") and not _pid_alive(int(running["pid"])):
            result = _read_json(run_dir / "result.json")  # it may have finished between the checks
            if result:
                rc, registration = result.get("returncode"), result.get("registration")
                outcome = "succeeded" if rc == 0 else "failed"
                why = f"pipeline exited with {rc}"
            else:
                outcome, why = "failed", f"run process {running['pid']} died without a result (crashed or killed)"
        if outcome is None and age > self.settings.max_run_seconds:
            outcome, why = "failed", f"no result after {age:.0f}s (retrain.max_run_seconds); declared dead"
            pid = running.get("pid")
            if pid and _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.killpg(int(pid), signal.SIGTERM)  # the launcher leads its own session
        if outcome is None:
            return None
        state["running"] = None
        state["last_run"] = {**running, "outcome": outcome, "finished_at": _iso(self.clock()),
                             "returncode": rc, "registration": registration}
        self._write_state(state)
        return self._append(TriggerRecord(
            trigger_id=uuid.uuid4().hex[:12], at=_iso(self.clock()), event="finished", outcome=outcome, why=why,
            run_id=running.get("run_id"), mode=running.get("mode"), pid=running.get("pid"), returncode=rc,
            registration=registration, log_file=str(run_dir / "pipeline.log") if running.get("run_dir") else None))

    def _cluster_status(self, kfp_run_id: str | None) -> str | None:
        if not kfp_run_id:
            return "FAILED"
        try:
            import kfp

            client = kfp.Client(host=self.settings.host, existing_token=os.environ.get("KFP_TOKEN") or None)
            return str(client.get_run(kfp_run_id).state).upper()
        except Exception as exc:  # unreachable API: keep waiting until max_run_seconds
            log.warning("cannot read KFP run %s: %s", kfp_run_id, exc)
            return None


def _read_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))

