"""Serve the risk model: KServe's ModelServer with one model, ``risk-model`` (serving.service).

Routes (KServe's, plus the guards of serving.http and the routes of serving.routes)::

    POST /v1/models/risk-model:predict   {"instances": [transaction, ...]}
    POST /v1/models/risk-model:explain   {"instances": [transaction, ...]}
    POST /v2/models/risk-model/infer     one input per field, shape [batch]
    GET  /v2/health/ready, /v2/models/risk-model/ready, /v1/models/risk-model, /metrics
    POST /v1/feedback                    {"feedback": [{"transaction_id": ..., "is_fraud": 0|1}, ...]}
    POST /v1/catalogue, GET /v1/catalogue  product texts pre-encoded by the model
    GET  /v1/canary                      canary state (serving.canary; setting `canary: true`)

Run: ``python -m serving --port 8080 [--model-version v0003] [--home DIR] [--grpc] [--workers N]``
(the CLI's ``riskops serve`` calls `main`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from kserve import ModelServer

from riskops.settings import Paths, paths
from serving.config import ServingConfig, load_config, setup_logging
from serving.cpus import pin_server
from serving.environment import PROMETHEUS_DIR_VARIABLES, prepare_process_environment
from serving.fast_path import fast_rest_server
from serving.gc_control import GcController
from serving.http import install_guards
from serving.routes import install_routes
from serving.service import build_service

log = logging.getLogger(__name__)

__all__ = ["serve", "main"]


def for_workers(config: ServingConfig) -> ServingConfig:
    """The settings as KServe's ``workers > 1`` can run them (each change logged).

    KServe then spawns worker processes with their own REST server and event loop, which the
    fast path cannot reach (serving/fast_path.py); one CPU for every worker defeats them; and one
    canary per worker would promote on a share of the evidence.
    """
    if config.workers <= 1:
        return config
    changes: dict[str, Any] = {}
    if config.fast_path:
        changes["fast_path"] = False
    if config.server_cpu != "off":
        changes["server_cpu"] = "off"
    if config.canary:
        changes["canary"] = False
    for name, value in changes.items():
        log.warning("workers: %d: %s %r -> %r (plain KServe workers)", config.workers, name, getattr(config, name), value)
    return dataclasses.replace(config, **changes)


def _multiprocess_metrics_dir() -> None:
    """Give KServe's workers one prometheus_client multiprocess dir (unless the operator set one).

    Spawned workers import prometheus_client afresh and keep their values in mmap files there;
    serving.routes.install_multiprocess_metrics sums them on /metrics.
    """
    if not any(os.environ.get(name) for name in PROMETHEUS_DIR_VARIABLES):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="riskops_metrics_")


def serve(
    port: int = 8080,
    model_version: str | None = None,
    home: Paths | None = None,
    grpc: bool = False,
    grpc_port: int | None = None,
    config_file: Path | str | None = None,
    host: str | None = "127.0.0.1",
    **overrides: Any,
) -> None:
    """Serve ``risk-model`` on `port` until SIGTERM/SIGINT (blocking).

    Args:
        port: the REST port.
        model_version: "v0003" (pinned), an alias such as "champion" or "challenger" (followed: a
            new version behind the alias is hot-swapped in), a model folder path, or None (= champion).
        home: the riskops home (registry, feature repo, prediction log, alerts; default $RISKOPS_HOME).
        grpc: also serve the v2 gRPC protocol on `grpc_port` (default port + 1; gRPC binds all interfaces).
        grpc_port: the gRPC port.
        config_file: serving settings (default <home>/serving.yaml if it exists).
        host: the REST bind address with the fast path: 127.0.0.1 by default (local use); "0.0.0.0"
            (or None) in a container. Plain KServe always binds 0.0.0.0.
        **overrides: ServingConfig fields (e.g. fail_mode="block", workers=2).
    """
    setup_logging()
    home = home or paths()
    config = load_config(
        config_file if config_file is not None else home.root / "serving.yaml",
        model_version=model_version,
        **overrides,
    ).with_home(home)
    config = for_workers(config)
    if config.workers > 1:
        _multiprocess_metrics_dir()  # before the workers are spawned: they inherit the environment
    pin_server(config.server_cpu)  # before build_service starts threads and the Feast child: they inherit it
    # the workers build their own service (serving.service.WorkerRiskService); this one answers
    # gRPC when it is on, and proves the model loads before any worker starts
    service = build_service(config, home)
    install_guards(config.max_body_bytes)
    install_routes(service)
    server = ModelServer(
        http_port=port,
        grpc_port=grpc_port or port + 1,
        enable_grpc=grpc,
        enable_latency_logging=False,
        workers=config.workers,
    )
    bind = (host or "0.0.0.0") if config.fast_path else "0.0.0.0"
    log.info(
        "serving %s %s on http://%s:%d (home %s, fast path %s, %d worker(s))",
        config.model_name,
        service.predictor.holder.current.version,
        bind,
        port,
        home.root,
        "on" if config.fast_path else "off",
        config.workers,
    )
    # last, once the model is loaded and warmed: what exists now lives as long as the process
    gc_control = GcController(freeze=config.gc_freeze).start()
    front = fast_rest_server(host, config.max_body_bytes) if config.fast_path else contextlib.nullcontext()
    try:
        with front:
            server.start([service])
    finally:
        gc_control.close()
        service.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving", description="Serve the riskops risk model (KServe)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1", help="REST bind address (0.0.0.0 in a container)")
    p.add_argument(
        "--model-version", default=None, help="v0003, an alias (champion), a model folder; default champion"
    )
    p.add_argument("--home", default=None, help="riskops home (default $RISKOPS_HOME or ./.riskops)")
    p.add_argument("--grpc", action="store_true", help="also serve gRPC (v2) on --grpc-port")
    p.add_argument("--grpc-port", type=int, default=None)
    p.add_argument("--config", default=None, help="serving.yaml (default <home>/serving.yaml)")
    p.add_argument("--workers", type=int, default=None, help="KServe worker processes (setting `workers`)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a ServingConfig field (YAML value), e.g. --set fail_mode=block",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    """`python -m serving` (serving/__main__.py) and ``riskops serve``."""
    prepare_process_environment()  # a no-op (or a warning) when prometheus_client is already loaded
    args = build_parser().parse_args(argv)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    serve(
        port=args.port,
        model_version=args.model_version,
        home=paths(args.home),
        grpc=args.grpc,
        grpc_port=args.grpc_port,
        config_file=args.config,
        host=args.host,
        **{"workers": args.workers, **overrides},
    )


if __name__ == "__main__":
    main()
