"""Run the training pipeline locally (kfp.local) or submit it to a Kubeflow Pipelines endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.training_pipeline import PIPELINE_NAME, build_pipeline, compile_pipeline
from riskops.config import PROJECT_ROOT, Paths


class PipelineFailed(RuntimeError):
    """A step failed (e.g. the GX gate); later steps did not run and the registry is unchanged."""

    def __init__(self, message: str, reports_dir: Path) -> None:
        super().__init__(message)
        self.reports_dir = reports_dir


@dataclass
class LocalRun:
    seconds: float
    registration: dict
    run_dir: Path | None
    reports_dir: Path


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def local_parameters(paths: Paths, reports_dir: Path, **overrides) -> dict:
    params = {
        "feature_repo_dir": str(paths.feature_repo),
        "registry_root": str(paths.registry),
        "reports_dir": str(reports_dir),
        "git_commit": git_commit(),
    }
    params.update({k: v for k, v in overrides.items() if v is not None})
    return params


def run_local(paths: Paths, **parameters) -> LocalRun:
    """Execute the pipeline with kfp.local in this virtual environment (no containers).

    Raises RuntimeError when a step fails (e.g. the GX gate): later steps do not run, and the
    registry (and so the serving champion) is left as it was.
    """
    from kfp import local

    paths.pipeline_root.mkdir(parents=True, exist_ok=True)
    # each run keeps its own reports (GX data docs, evaluation, registration) side by side
    reports_dir = paths.reports / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    reports_dir.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(paths.pipeline_root))
    params = local_parameters(paths, reports_dir, **parameters)
    before = set(paths.pipeline_root.iterdir())
    started = time.perf_counter()
    try:
        build_pipeline("dev")(**params)
    except RuntimeError as exc:
        raise PipelineFailed(str(exc), reports_dir) from exc
    seconds = time.perf_counter() - started
    new_dirs = sorted(set(paths.pipeline_root.iterdir()) - before)
    registration_file = reports_dir / "registration.json"
    registration = json.loads(registration_file.read_text()) if registration_file.exists() else {}
    return LocalRun(
        seconds=seconds,
        registration=registration,
        run_dir=new_dirs[-1] if new_dirs else None,
        reports_dir=reports_dir,
    )


def submit(host: str, profile: str = "dev", experiment: str = "riskops", **parameters) -> str:
    """Compile for the cluster profile and create a run on a KFP API server; returns the run id.

    Authentication: $KFP_TOKEN (a bearer token) when set, otherwise kfp.Client's own defaults.
    """
    import kfp

    package = compile_pipeline(profile)
    client = kfp.Client(host=host, existing_token=os.environ.get("KFP_TOKEN") or None)
    arguments = {k: v for k, v in parameters.items() if v is not None}
    arguments.setdefault("git_commit", git_commit())
    run = client.create_run_from_pipeline_package(
        str(package),
        arguments=arguments,
        experiment_name=experiment,
        run_name=f"{PIPELINE_NAME}-{time.strftime('%Y%m%d-%H%M%S')}",
    )
    return run.run_id
