"""Run the dataset (bring-your-own-data) pipeline locally with kfp.local, or submit it to Kubeflow.

``riskops pipeline run --dataset CONFIG`` (cli/commands/pipeline.py) calls these. The mapping is
checked in this process first (reading the source once), so a config whose mapped column is
missing or of the wrong type fails in seconds with a MappingError naming the columns, before any
pipeline step starts; the ingest step repeats the check where the pipeline runs (e.g. on a cluster).

Each dataset gets its own Feast repo (``$RISKOPS_HOME/datasets/<name>/feature_repo``) and its own
registry model name (``risk-model-<name>``), so a run never touches the serving feature store or
the serving champion of the built-in schema.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipelines.runner import LocalRun, git_commit, run_with_kfp_local
from pipelines.training_pipeline import (
    DATASET_PIPELINE_NAME,
    build_dataset_pipeline,
    compile_dataset_pipeline,
)
from riskops.byod.config import check_source, config_text, resolve_config, slug
from riskops.data.datasets import DatasetConfig
from riskops.settings import Paths


def dataset_parameters(paths: Paths, config: DatasetConfig, reports_dir: Path, **overrides) -> dict:
    """The dataset pipeline's parameters for a local run: the config, this home's folders, then `overrides`."""
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
    config = dataset if isinstance(dataset, DatasetConfig) else resolve_config(dataset)
    check_source(config)
    reports_dir = paths.reports / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{slug(config.name)}"
    params = dataset_parameters(paths, config, reports_dir, **parameters)
    return run_with_kfp_local(paths, build_dataset_pipeline("dev"), params, reports_dir)


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
