"""Run the training pipeline locally (kfp.local) or submit it to a Kubeflow Pipelines endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.training_pipeline import PIPELINE_NAME, PROFILES, build_pipeline, compile_pipeline
from riskops.settings import PROJECT_ROOT, Paths


class PipelineFailed(RuntimeError):
    """A step failed (e.g. the GX gate); later steps did not run and the registry is unchanged."""

    def __init__(self, message: str, reports_dir: Path) -> None:
        super().__init__(message)
        self.reports_dir = reports_dir


@dataclass
class LocalRun:
    """A finished kfp.local run: its duration, the registration record, its artifact and report folders."""

    seconds: float
    registration: dict
    run_dir: Path | None
    reports_dir: Path


def git_commit() -> str:
    """The checkout's short commit id, recorded with each run ('' outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def local_parameters(paths: Paths, reports_dir: Path, **overrides) -> dict:
    """The training pipeline's parameters for a local run: this home's folders, then `overrides`."""
    params = {
        "feature_repo_dir": str(paths.feature_repo),
        "registry_root": str(paths.registry),
        "reports_dir": str(reports_dir),
        "git_commit": git_commit(),
    }
    params.update({k: v for k, v in overrides.items() if v is not None})
    return params


def run_local(paths: Paths, **parameters) -> LocalRun:
    """Execute the training pipeline with kfp.local in this virtual environment (no containers).

    The local launcher of a training run (`riskops pipeline run`, `riskops demo`); `submit` is the
    cluster one. Raises PipelineFailed when a step fails (e.g. the GX gate): later steps do not
    run, and the registry (and so the serving champion) is left as it was.
    """
    # each run keeps its own reports (GX data docs, evaluation, registration) side by side
    reports_dir = paths.reports / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    params = local_parameters(paths, reports_dir, **parameters)
    return run_with_kfp_local(paths, build_pipeline("dev"), params, reports_dir)


def run_with_kfp_local(paths: Paths, pipeline: Callable[..., Any], params: dict, reports_dir: Path) -> LocalRun:
    """Run a compiled-in-memory pipeline (`build_pipeline`, `build_dataset_pipeline`) with kfp.local.

    Steps run as subprocesses of this virtual environment; artifacts go under
    ``paths.pipeline_root``, reports (and the register step's registration.json) to `reports_dir`.
    Raises PipelineFailed when a step fails.
    """
    from kfp import local  # kfp: seconds to import, only when a pipeline runs

    paths.pipeline_root.mkdir(parents=True, exist_ok=True)
    reports_dir.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(paths.pipeline_root))
    before = set(paths.pipeline_root.iterdir())
    started = time.perf_counter()
    try:
        pipeline(**params)
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


class SubmitError(RuntimeError):
    """The run could not be created on the KFP API server: unreachable, refused or rejected."""


def submit(
    host: str,
    profile: str = "dev",
    experiment: str = "riskops",
    namespace: str | None = None,
    **parameters,
) -> str:
    """Compile for the cluster profile and create a run on a KFP API server; returns the run id.

    The cluster launcher of a training run (`riskops pipeline run --host`, retraining in
    ``mode: cluster``); `run_local` is the local one.

    kfp.Client's flow (KFP v2 REST API): GET /apis/v2beta1/healthz (skipped when a namespace is
    given), GET /apis/v2beta1/experiments filtered by name, POST /apis/v2beta1/experiments if the
    experiment is new, then POST /apis/v2beta1/runs with the compiled pipeline spec (and its
    Kubernetes platform spec) inline and the parameters in runtime_config.
    Authentication: $KFP_TOKEN as `Authorization: Bearer ...` when set, otherwise kfp.Client's
    own defaults. `namespace` (default $KFP_NAMESPACE): the Kubeflow profile namespace of a
    multi-user install. Raises SubmitError with a one-line reason when the server cannot be
    reached or rejects the request.
    """
    import kfp
    import kfp_server_api
    import urllib3

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: use one of {', '.join(PROFILES)}")
    namespace = namespace or os.environ.get("KFP_NAMESPACE") or None
    arguments = {k: v for k, v in parameters.items() if v is not None}
    arguments.setdefault("git_commit", git_commit())
    with tempfile.TemporaryDirectory(prefix="riskops-submit-") as tmp:
        # a fresh compile, not the checked-in YAML: what is submitted is what the source says
        package = compile_pipeline(profile, Path(tmp) / f"training_pipeline.{profile}.yaml")
        try:
            client = kfp.Client(
                host=host,
                existing_token=os.environ.get("KFP_TOKEN") or None,
                **({"namespace": namespace} if namespace else {}),
            )
            run = client.create_run_from_pipeline_package(
                str(package),
                arguments=arguments,
                experiment_name=experiment,
                namespace=namespace,
                run_name=f"{PIPELINE_NAME}-{time.strftime('%Y%m%d-%H%M%S')}",
            )
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise SubmitError(
                f"cannot reach the Kubeflow Pipelines API at {host}: {reason}. Check --host "
                "(e.g. `kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80`, then --host http://localhost:8080)"
            ) from exc
        except kfp_server_api.ApiException as exc:
            hint = "; set KFP_TOKEN to a valid bearer token" if exc.status in (401, 403) else ""
            raise SubmitError(
                f"the Kubeflow Pipelines API at {host} rejected the request: HTTP {exc.status} {exc.reason}{hint}"
            ) from exc
        except TimeoutError as exc:  # kfp.Client gives up on /healthz after 5 failed attempts
            raise SubmitError(f"the Kubeflow Pipelines API at {host} is not healthy: {exc}") from exc
    return run.run_id
