"""The process environment a model server needs, set by its entry points (never at import).

Importing Feast (``feast.metrics``) sets ``PROMETHEUS_MULTIPROC_DIR`` to a temp dir of its own, and
a server started by a process that had imported Feast (the demo, the benchmark, the tests)
inherits it: prometheus_client then keeps every metric in mmap files, one file write under one
process-wide lock per increment, for a multi-worker Feast server this process does not run.
prometheus_client picks its value storage once, when it is first imported, so this must happen
before anything imports prometheus_client (KServe does) or Feast.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

log = logging.getLogger(__name__)

# the environment variables that switch prometheus_client to mmap-file values
PROMETHEUS_DIR_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR", "prometheus_multiproc_dir")
FEAST_METRICS_DIR_PREFIX = "feast_metrics_"


def inherits_feast_metrics_dir(env: Mapping[str, str]) -> bool:
    """True when `env` carries the temp metrics dir that importing Feast sets (not an operator's dir)."""
    return os.path.basename(env.get("PROMETHEUS_MULTIPROC_DIR", "")).startswith(FEAST_METRICS_DIR_PREFIX)


def server_environment(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of `env` for starting a server subprocess: without an inherited Feast metrics dir."""
    if not inherits_feast_metrics_dir(env):
        return dict(env)
    return {k: v for k, v in env.items() if k not in PROMETHEUS_DIR_VARIABLES}


def prepare_process_environment() -> None:
    """Keep this server's metrics in memory: drop an inherited Feast metrics dir, then fix the choice.

    Call it first in an entry point, before anything imports prometheus_client or Feast. A
    directory the operator set on purpose is left alone, and so is a process whose
    prometheus_client already chose mmap files (its values need the directory).
    """
    if "prometheus_client.values" in sys.modules:
        if inherits_feast_metrics_dir(os.environ):
            log.warning(
                "prometheus_client was imported with an inherited Feast metrics dir (%s): metrics go to "
                "mmap files; start the server with serving.environment.server_environment(env)",
                os.environ["PROMETHEUS_MULTIPROC_DIR"],
            )
        return
    if inherits_feast_metrics_dir(os.environ):
        for name in PROMETHEUS_DIR_VARIABLES:
            os.environ.pop(name, None)
    # prometheus_client picks its value storage once, at import: pick it now, before Feast sets
    # the variable again in this process
    import prometheus_client.values  # noqa: F401
