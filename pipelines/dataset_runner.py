"""Run the dataset (bring-your-own-data) pipeline locally with kfp.local, or submit it to Kubeflow.

``riskops pipeline run --dataset CONFIG`` lands here. The mapping is checked in this process first
(reading the source once), so a config whose mapped column is missing or of the wrong type fails
in seconds with a MappingError naming the columns, before any pipeline step starts; the ingest
step repeats the check where the pipeline runs (e.g. on a cluster).

Each dataset gets its own Feast repo (``$RISKOPS_HOME/datasets/<name>/feature_repo``) and its own
registry model name (``risk-model-<name>``), so a run never touches the serving feature store or
the serving champion of the built-in schema.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pipelines.runner import LocalRun, PipelineFailed, git_commit
from pipelines.training_pipeline import (
    DATASET_PIPELINE_NAME,
    build_dataset_pipeline,
    compile_dataset_pipeline,
)
from riskops.byod import check_source, config_text, registry_name, resolve_config, slug
from riskops.data.datasets import DatasetConfig
from riskops.settings import Paths


def dataset_parameters(paths: Paths, config: DatasetConfig, reports_dir: Path, **overrides) -> dict:
    params = {
        "dataset_config": config_text(config),
        "feature_repo_dir": str(paths.root / "datasets" / slug(config.name) / "feature_repo"),
        "registry_root": str(paths.registry),
        "reports_dir": str(reports_dir),
        "git_commit": git_commit(),
    }
    params.update({k: v for k, v in overrides.items() if v is not None})
    return params


def run_dataset_local(paths: Paths, dataset: str | Path | DatasetConfig, **parameters) -> LocalRun:
    """Check the mapping, then run the dataset pipeline with kfp.local (this venv, no containers).

    Raises MappingError (a ValueError naming every bad column) before the pipeline starts, and
    PipelineFailed when a step fails (e.g. the generated GX gate; the registry is then unchanged).
    """
    from kfp import local

    config = dataset if isinstance(dataset, DatasetConfig) else resolve_config(dataset)
    check_source(config)
    paths.pipeline_root.mkdir(parents=True, exist_ok=True)
    reports_dir = paths.reports / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{slug(config.name)}"
    reports_dir.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(paths.pipeline_root))
    params = dataset_parameters(paths, config, reports_dir, **parameters)
    before = set(paths.pipeline_root.iterdir())
    started = time.perf_counter()
    try:
        build_dataset_pipeline("dev")(**params)
    except RuntimeError as exc:
        raise PipelineFailed(str(exc), reports_dir) from exc
    seconds = time.perf_counter() - started
    new_dirs = sorted(set(paths.pipeline_root.iterdir()) - before)
    registration_file = reports_dir / "registration.json"
    registration = json.loads(registration_file.read_text()) if registration_file.exists() else {}
    return LocalRun(seconds, registration, new_dirs[-1] if new_dirs else None, reports_dir)


def submit_dataset(host: str, dataset: str | Path, profile: str = "dev", experiment: str = "riskops",
                   namespace: str | None = None, **parameters) -> str:  # fmt: skip
    """Compile the dataset pipeline for the profile (a fresh compile) and create a run on a KFP API server.

    Authentication and namespace as pipelines.runner.submit ($KFP_TOKEN, $KFP_NAMESPACE). The
    source must be readable where the steps run (e.g. a path on the shared state volume).
    Not exercised against a live Kubeflow here (no cluster on these machines).
    """
    import tempfile

    import kfp

    config = resolve_config(dataset)
    namespace = namespace or os.environ.get("KFP_NAMESPACE") or None
    arguments = {"dataset_config": config_text(config), "git_commit": git_commit()}
    arguments.update({k: v for k, v in parameters.items() if v is not None})
    with tempfile.TemporaryDirectory(prefix="riskops-submit-") as tmp:
        package = compile_dataset_pipeline(profile, Path(tmp) / f"dataset_pipeline.{profile}.yaml")
        client = kfp.Client(host=host, existing_token=os.environ.get("KFP_TOKEN") or None,
                            **({"namespace": namespace} if namespace else {}))  # fmt: skip
        run = client.create_run_from_pipeline_package(
            str(package), arguments=arguments, experiment_name=experiment, namespace=namespace,
            run_name=f"{DATASET_PIPELINE_NAME}-{slug(config.name)}-{time.strftime('%Y%m%d-%H%M%S')}",
        )  # fmt: skip
    return run.run_id


def cli_parameters(args) -> dict:
    """`riskops pipeline run --dataset ...` flags -> pipeline parameters."""
    return {
        "max_rows": args.max_rows,
        "seed": args.seed,
        "encoder": args.encoder,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "max_train_rows": args.max_train_rows,
        "max_train_seconds": float(args.max_train_seconds),
        "promotion": args.promotion,
    }


def cli_run(args) -> int:
    """The `riskops pipeline run --dataset CONFIG` command (printing shared with cli.main)."""
    from cli.main import _console, _print_failure, _print_metrics_table
    from riskops.data.datasets import MappingError
    from riskops.registry.store import ModelRegistry
    from riskops.settings import paths

    console = _console()
    try:
        config = resolve_config(args.dataset)
        if args.host:
            run_id = submit_dataset(args.host, args.dataset, profile=args.profile, **cli_parameters(args))
            console.print(f"submitted to {args.host}: run {run_id}")
            return 0
        run = run_dataset_local(paths(), config, **cli_parameters(args))
    except (MappingError, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]dataset config {args.dataset}:[/red] {exc}")
        return 2
    except PipelineFailed as exc:
        _print_failure(exc)
        return 1
    console.print(f"\npipeline finished in {run.seconds:.0f}s")
    reg = run.registration
    if not reg:
        console.print("[yellow]no registration record found[/yellow]")
        return 1
    mv = ModelRegistry(paths().registry, name=registry_name(config)).get(reg["version"])
    evaluation = json.loads((mv.path / "evaluation.json").read_text())
    _print_metrics_table(evaluation)
    data = evaluation.get("data", {})
    console.print(
        f"dataset {config.name}: {data.get('rows')} rows; test period from {data.get('test_start')}: "
        f"{data.get('test_rows')} rows, {data.get('test_frauds')} frauds; model {evaluation.get('model_kind')}"
    )
    console.print(
        f"registered [bold]{reg['model_name']} {reg['version']}[/bold] as {reg['alias']} ({reg['reason']})"
    )
    console.print(f"model folder: {mv.path}")
    for f in sorted(run.reports_dir.iterdir()):
        if f.suffix in (".html", ".png", ".md"):
            console.print(f"report:       {f}")
    if run.run_dir:
        console.print(f"pipeline artifacts: {run.run_dir}")
    return 0
