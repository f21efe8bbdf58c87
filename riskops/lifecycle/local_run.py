"""Runs one local retraining command and records its outcome: the process the trigger starts.

    python -m riskops.lifecycle.local_run RUN_DIR HOME -- CMD ...

`riskops.lifecycle.retrain.RetrainTrigger` (``retrain.mode: local``) starts this module in its own
session; it runs CMD (by default ``riskops pipeline run --promotion never ...``) with its output in
``RUN_DIR/pipeline.log``, then writes ``RUN_DIR/result.json``: the exit code and the version the run
registered, which the trigger reads on its next refresh.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from riskops.registry.store import ModelRegistry
from riskops.settings import Paths


def _iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _registry_versions(home: Path) -> tuple[set[str], dict]:
    reg = ModelRegistry(Paths(home).registry)
    return {v.version for v in reg.list_versions()}, reg.aliases()


def run_and_record(run_dir: Path, home: Path, cmd: list[str]) -> int:
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
    if len(argv) < 3 or "--" not in argv or argv.index("--") != 2:
        print("usage: python -m riskops.lifecycle.local_run RUN_DIR HOME -- CMD ...", file=sys.stderr)
        return 2
    return run_and_record(Path(argv[0]), Path(argv[1]), argv[3:])


if __name__ == "__main__":
    sys.exit(main())
