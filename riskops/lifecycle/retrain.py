"""The retraining trigger: drift verdict -> (at most) one retraining run, recorded.

`RetrainTrigger(paths, config).maybe_trigger(reason)` decides, under a file lock, whether to start a
run and appends a `TriggerRecord` to ``<home>/retrain/triggers.jsonl`` whatever it decides:

* **debounce** — nothing starts while a run is in progress (``state.json`` holds its run id, PID
  or KFP run id, start time), nor within ``cooldown_seconds`` of the last start; so one shift that
  the monitor sees every minute triggers one run, and a persisting shift (say the challenger was
  rejected) triggers another only after the cooldown;
* **data** — a recent window of raw, labelled transactions: `build_retraining_data` joins the
  feedback labels (riskops.monitoring.feedback) onto them by transaction_id, optionally prepends older
  training history, holds out the newest ``holdout_fraction`` for the promotion gate (neither model
  trains on it) and writes ``train.parquet`` for the pipeline. With history, the run gets
  ``--recent-from`` (``train_on_recent``): the recent window's rows all train and the pipeline's
  validation/test come from history, because the window's few labelled rows of the shift are the
  one thing the challenger must learn (the gate's holdout judges it). Where the raw transactions come
  from is the caller's choice: pass a DataFrame, or configure ``transactions_file`` (a parquet the
  ingestion side appends to);
* **submission** — ``mode: local`` starts ``python -m cli.main pipeline run --input train.parquet
  --promotion never ...`` in a SUBPROCESS (own session, output in the run folder) through a small
  launcher that records the exit code and the version the run registered; ``mode: cluster`` calls
  `pipelines.runner.submit(host, ...)`; ``mode: dry_run`` prepares the data and records the command
  without running it.

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

from riskops.settings import PROJECT_ROOT, Paths

log = logging.getLogger(__name__)

MODES = ("local", "cluster", "dry_run")


class RetrainError(RuntimeError):
    pass


@dataclass
class RetrainSettings:
    """The `retrain:` section of configs/monitor.yaml."""

    enabled: bool = True
    mode: str = "local"  # local | cluster | dry_run
    host: str = ""  # KFP endpoint for mode: cluster
    profile: str = "dev"
    cooldown_seconds: float = 6 * 3600.0
    max_run_seconds: float = 6 * 3600.0  # a run older than this is declared dead (stale state)
    pipeline_args: list[str] = field(default_factory=list)  # extra `riskops pipeline run` flags
    cluster_parameters: dict = field(default_factory=dict)  # extra pipeline parameters for submit()
    cluster_input_path: str = ""  # path/URI the cluster reads train.parquet from; {run_id} is filled in
    command: list[str] = field(default_factory=list)  # override the local command ({python}, {input}, {run_dir})
    transactions_file: str = "data/recent_transactions.parquet"  # relative to the home folder
    history_file: str = ""  # older labelled transactions to train on as well (optional)
    holdout_fraction: float = 0.2
    unlabelled: str = "keep"  # keep: the file's own is_fraud (else 0); legit: 0; drop: only feedback rows
    min_rows: int = 2000
    min_frauds: int = 20
    # with history: the recent window's rows all train and the pipeline validates/tests on history
    # (`pipeline run --recent-from`); otherwise its newest rows would be validated on, not learned from
    train_on_recent: bool = True

    @classmethod
    def from_dict(cls, d: dict | None) -> RetrainSettings:
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"retrain: unknown keys {unknown} (known: {', '.join(sorted(known))})")
        s = cls(**d)
        if s.mode not in MODES:
            raise ValueError(f"retrain.mode must be one of {MODES}, got {s.mode!r}")
        if s.mode == "cluster" and not s.host:
            raise ValueError("retrain.mode 'cluster' needs retrain.host (the KFP endpoint)")
        if s.unlabelled not in ("keep", "legit", "drop"):
            raise ValueError(f"retrain.unlabelled must be keep, legit or drop, got {s.unlabelled!r}")
        if not 0.0 <= s.holdout_fraction < 1.0:
            raise ValueError(f"retrain.holdout_fraction must be in [0, 1), got {s.holdout_fraction}")
        return s


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
# Training data
# --------------------------------------------------------------------------------------------


@dataclass
class RetrainingData:
    train_file: Path
    holdout_file: Path | None
    rows: int
    frauds: int
    feedback_labels: int
    holdout_rows: int
    cutoff: str | None  # rows at/after this event time are held out
    recent_from: str | None = None  # rows at/after this event time are the recent window (all train)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train_file"] = str(self.train_file)
        d["holdout_file"] = str(self.holdout_file) if self.holdout_file else None
        return d


def build_retraining_data(
    transactions: pd.DataFrame,
    feedback: pd.DataFrame | None,
    out_dir: Path | str,
    settings: RetrainSettings | None = None,
    history: pd.DataFrame | None = None,
) -> RetrainingData:
    """Recent raw transactions + feedback labels (+ history) -> ``train.parquet`` / ``holdout.parquet``.

    Labels: feedback (by transaction_id) wins; rows without feedback follow ``settings.unlabelled``.
    The newest ``holdout_fraction`` of the recent rows (by event time) is held out. Raises
    RetrainError when the training part has fewer than ``min_rows`` rows or ``min_frauds`` frauds.
    """
    from riskops.data.generator import write_transactions

    settings = settings or RetrainSettings()
    if transactions is None or transactions.empty:
        raise RetrainError("no recent transactions to retrain on")
    for col in ("transaction_id", "event_timestamp"):
        if col not in transactions.columns:
            raise RetrainError(f"recent transactions lack the {col!r} column")
    recent = transactions.copy()
    recent["transaction_id"] = recent["transaction_id"].astype(str)
    recent = recent.drop_duplicates("transaction_id", keep="last")
    n_fb = 0
    if feedback is not None and not feedback.empty:
        fb = feedback.assign(transaction_id=feedback["transaction_id"].astype(str))
        fb = fb.drop_duplicates("transaction_id", keep="last").set_index("transaction_id")
        has = recent["transaction_id"].isin(fb.index)
        n_fb = int(has.sum())
    else:
        fb, has = None, pd.Series(False, index=recent.index)
    own = pd.to_numeric(recent["is_fraud"], errors="coerce") if "is_fraud" in recent.columns else None
    if settings.unlabelled == "drop":
        recent = recent[has]
        has = has[has]
        label = pd.Series(0, index=recent.index)
    elif settings.unlabelled == "keep" and own is not None:
        label = own.fillna(0).astype("int64")
    else:
        label = pd.Series(0, index=recent.index)
    if fb is not None and has.any():
        label = label.copy()
        label[has] = fb.loc[recent.loc[has, "transaction_id"], "is_fraud"].to_numpy()
    recent["is_fraud"] = label.astype("int64").to_numpy()
    if "fraud_type" in recent.columns:
        recent["fraud_type"] = recent["fraud_type"].where(recent["is_fraud"] == 1, "none")
    if fb is not None and "fraud_type" in fb.columns and has.any():
        ft = fb.loc[recent.loc[has, "transaction_id"], "fraud_type"]
        recent.loc[has, "fraud_type"] = ft.fillna("none").where(recent.loc[has, "is_fraud"] == 1, "none").to_numpy()

    ts = pd.to_datetime(recent["event_timestamp"], utc=True)
    recent = recent.assign(event_timestamp=ts).sort_values("event_timestamp", kind="stable")
    n_hold = int(round(len(recent) * settings.holdout_fraction))
    cutoff = None
    if n_hold > 0:
        holdout = recent.iloc[len(recent) - n_hold:]
        train_recent = recent.iloc[: len(recent) - n_hold]
        cutoff = holdout["event_timestamp"].min().isoformat()
    else:
        holdout, train_recent = recent.iloc[:0], recent
    parts = [train_recent]
    recent_from = None
    if history is not None and not history.empty:
        hist = history.copy()
        hist["transaction_id"] = hist["transaction_id"].astype(str)
        hist = hist[~hist["transaction_id"].isin(recent["transaction_id"])]
        hist["event_timestamp"] = pd.to_datetime(hist["event_timestamp"], utc=True)
        parts.insert(0, hist[hist.columns.intersection(train_recent.columns)])
        if settings.train_on_recent and len(train_recent):
            start = train_recent["event_timestamp"].min()
            if (hist["event_timestamp"] < start).any():
                recent_from = start.isoformat()
    train = pd.concat(parts, ignore_index=True).sort_values("event_timestamp", kind="stable")
    n_fraud = int(pd.to_numeric(train["is_fraud"], errors="coerce").fillna(0).sum())
    if len(train) < settings.min_rows or n_fraud < settings.min_frauds:
        raise RetrainError(
            f"not enough training data: {len(train)} rows ({n_fraud} frauds); need >= {settings.min_rows} rows"
            f" and >= {settings.min_frauds} frauds (retrain.min_rows / retrain.min_frauds)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_file = write_transactions(train.reset_index(drop=True), out / "train.parquet")
    holdout_file = None
    if len(holdout):
        holdout_file = write_transactions(holdout.reset_index(drop=True), out / "holdout.parquet")
    return RetrainingData(
        train_file=train_file,
        holdout_file=holdout_file,
        rows=len(train),
        frauds=n_fraud,
        feedback_labels=n_fb,
        holdout_rows=len(holdout),
        cutoff=cutoff,
        recent_from=recent_from,
    )


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
    ) -> None:
        self.paths = paths
        if isinstance(config, RetrainSettings):
            self.settings = config
        else:
            cfg = dict(config or {})
            if "retrain" in cfg or set(cfg) & {"window", "drift", "volume", "rules", "promotion", "alerts", "reports"}:
                cfg = dict(cfg.get("retrain") or {})  # a whole monitor config: take its retrain section
            self.settings = RetrainSettings.from_dict(cfg)
        self.dir = paths.root / "retrain"
        self.state_file = self.dir / "state.json"
        self.records_file = self.dir / "triggers.jsonl"
        self.data_provider = data_provider
        self.feedback_provider = feedback_provider
        self.history_provider = history_provider
        self.clock = clock

    # -- state ------------------------------------------------------------------------------
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
        if self.feedback_provider is not None:
            fb = self.feedback_provider()
        else:
            from riskops.monitoring.feedback import load_feedback

            fb = load_feedback(self.paths)
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
            from pipelines.runner import submit

            input_path = (self.settings.cluster_input_path or str(data.train_file)).format(run_id=run_id)
            params = {"source": "file", "input_path": input_path, "promotion": "never",
                      **({"recent_from": data.recent_from} if data.recent_from else {}),
                      **self.settings.cluster_parameters}
            kfp_run_id = submit(self.settings.host, profile=self.settings.profile, **params)
            return {"kfp_run_id": kfp_run_id, "why": f"submitted to {self.settings.host}: KFP run {kfp_run_id}"}
        cmd = self.local_command(data, run_dir)
        log_file = run_dir / "pipeline.log"
        launcher = [sys.executable, "-m", "riskops.lifecycle.retrain", "launch", str(run_dir), str(self.paths.root), "--", *cmd]
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


# --------------------------------------------------------------------------------------------
# Launcher: `python -m riskops.lifecycle.retrain launch RUN_DIR HOME -- CMD...`
# --------------------------------------------------------------------------------------------


def _registry_versions(home: Path) -> tuple[set[str], dict]:
    from riskops.registry.store import ModelRegistry

    reg = ModelRegistry(Paths(home).registry)
    return {v.version for v in reg.list_versions()}, reg.aliases()


def launch(run_dir: Path, home: Path, cmd: list[str]) -> int:
    """Run `cmd`, its output in run_dir/pipeline.log, then write run_dir/result.json with the exit
    code and the version the run registered (found by diffing the registry, not by a report path)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    before, _ = _registry_versions(home)
    started = _iso()
    with open(run_dir / "pipeline.log", "ab") as out:
        try:
            rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # noqa: S603
        except OSError as exc:
            out.write(f"cannot start {cmd[0]}: {exc}\n".encode())
            rc = 127
    registration = None
    try:
        after, aliases = _registry_versions(home)
        new = sorted(after - before)
        if new:
            version = new[-1]
            registration = {"version": version,
                            "alias": next((a for a, v in aliases.items() if v == version), None)}
    except Exception as exc:  # the result must be written whatever happens
        registration = {"error": str(exc)}
    result = {"returncode": rc, "started_at": started, "finished_at": _iso(), "command": cmd,
              "registration": registration}
    tmp = run_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, run_dir / "result.json")
    return rc


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 4 or argv[0] != "launch" or "--" not in argv:
        print("usage: python -m riskops.lifecycle.retrain launch RUN_DIR HOME -- CMD ...", file=sys.stderr)
        return 2
    sep = argv.index("--")
    return launch(Path(argv[1]), Path(argv[2]), argv[sep + 1:])


if __name__ == "__main__":
    sys.exit(main())
