"""`riskops pipeline compile` and `riskops pipeline run` (built-in schema, or your own data with --dataset)."""

from __future__ import annotations

import argparse
import json

from cli.arguments import add_pipeline_args, pipeline_params
from cli.console import (
    console,
    escape,
    print_failure,
    print_metrics_table,
    print_run_files,
    print_run_summary,
)
from riskops.settings import paths


def cmd_pipeline_compile(args: argparse.Namespace) -> int:
    """Compile both pipelines for the chosen cluster profile(s) to pipelines/*.yaml."""
    from pipelines.training_pipeline import PROFILES, compile_dataset_pipeline, compile_pipeline

    profiles = list(PROFILES) if args.profile == "all" else [args.profile]
    for profile in profiles:
        out = compile_pipeline(profile)
        console().print(f"compiled {profile} -> {out}")
        out = compile_dataset_pipeline(profile)  # bring-your-own-data (`pipeline run --dataset`)
        console().print(f"compiled {profile} -> {out}")
    return 0


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    """Run the training pipeline with kfp.local, or submit it to Kubeflow with --host."""
    if getattr(args, "dataset", None):
        return run_dataset(args)
    term = console()
    params = pipeline_params(args)
    if args.host:
        from pipelines.runner import SubmitError, submit

        try:
            run_id = submit(args.host, profile=args.profile, **params)
        except SubmitError as exc:
            term.print(f"[red]could not submit the run:[/red] {escape(str(exc))}", soft_wrap=True)
            return 1
        term.print(f"submitted to {args.host}: run {run_id}")
        return 0
    from pipelines.runner import PipelineFailed, run_local

    try:
        run = run_local(paths(), **params)
    except PipelineFailed as exc:
        print_failure(exc)
        return 1
    print_run_summary(run)
    return 0


def dataset_params_from_args(args: argparse.Namespace) -> dict:
    """`riskops pipeline run --dataset ...` flags -> the dataset pipeline's parameters."""
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


def run_dataset(args: argparse.Namespace) -> int:
    """`riskops pipeline run --dataset CONFIG`: the bring-your-own-data pipeline (pipelines/dataset_runner.py).

    Exit code 2 for a config or mapping that does not fit the data (before any step runs), 1 for
    a failed run.
    """
    from pipelines.dataset_runner import run_dataset_local, submit_dataset
    from pipelines.runner import PipelineFailed
    from riskops.byod.config import registry_name, resolve_config
    from riskops.data.datasets import MappingError
    from riskops.registry.store import ModelRegistry

    term = console()
    try:
        config = resolve_config(args.dataset)
        if args.host:
            run_id = submit_dataset(args.host, args.dataset, profile=args.profile, **dataset_params_from_args(args))
            term.print(f"submitted to {args.host}: run {run_id}")
            return 0
        run = run_dataset_local(paths(), config, **dataset_params_from_args(args))
    except (MappingError, FileNotFoundError, ValueError) as exc:
        term.print(f"[red]dataset config {args.dataset}:[/red] {exc}")
        return 2
    except PipelineFailed as exc:
        print_failure(exc)
        return 1
    term.print(f"\npipeline finished in {run.seconds:.0f}s")
    reg = run.registration
    if not reg:
        term.print("[yellow]no registration record found[/yellow]")
        return 1
    mv = ModelRegistry(paths().registry, name=registry_name(config)).get(reg["version"])
    evaluation = json.loads((mv.path / "evaluation.json").read_text())
    print_metrics_table(evaluation)
    data = evaluation.get("data", {})
    term.print(
        f"dataset {config.name}: {data.get('rows')} rows; test period from {data.get('test_start')}: "
        f"{data.get('test_rows')} rows, {data.get('test_frauds')} frauds; model {evaluation.get('model_kind')}"
    )
    term.print(f"registered [bold]{reg['model_name']} {reg['version']}[/bold] as {reg['alias']} ({reg['reason']})")
    term.print(f"model folder: {mv.path}")
    print_run_files(run)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `pipeline compile` and `pipeline run` to the `riskops` parser."""
    pp = sub.add_parser("pipeline", help="compile or run the Kubeflow training pipeline",
                        description="The training pipeline: ingest -> GX gate -> Feast -> fine-tune -> evaluate -> register.")
    psub = pp.add_subparsers(dest="pipeline_command", required=True, metavar="SUBCOMMAND")
    p = psub.add_parser("compile", help="write the pipeline IR YAML (checked in under pipelines/)",
                        description="Compile the pipeline for a cluster profile to pipelines/training_pipeline.<profile>.yaml.")
    p.add_argument("--profile", default="all", help="dev, prod-gpu or all (default)")
    p.set_defaults(func=cmd_pipeline_compile)
    p = psub.add_parser("run", help="run locally with kfp.local, or submit with --host",
                        description="Run the whole pipeline locally (kfp.local, this venv, no containers) "
                        "or submit it to a Kubeflow Pipelines endpoint with --host.")
    add_pipeline_args(p)
    p.add_argument("--dataset", metavar="CONFIG", help="train on your own data: a dataset config YAML (or a "
                   "built-in name, e.g. ulb-ccfraud) mapping columns to roles; see docs/quality.md")
    p.add_argument("--max-rows", type=int, default=0, help="--dataset: keep only the newest N rows by event time"
                   " (0 = all; a quick run)")
    p.add_argument("--max-train-seconds", type=float, default=0, help="--dataset without text: stop the "
                   "FT-Transformer after the epoch that crosses this budget (0 = no budget)")
    p.add_argument("--host", help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline (token: $KFP_TOKEN)")
    p.add_argument("--profile", default="dev", help="cluster profile for --host: dev or prod-gpu")
    p.set_defaults(func=cmd_pipeline_run)
