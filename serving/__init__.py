"""riskops serving: the KServe model server, its transformer and predictor, and what they share."""

import os as _os
import sys as _sys

# the environment variables that switch prometheus_client to mmap-file values
PROMETHEUS_DIR_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR", "prometheus_multiproc_dir")

# Importing Feast (feast.metrics) sets PROMETHEUS_MULTIPROC_DIR to a temp dir of its own, and a
# server started by a process that had imported Feast (the demo, the benchmark, the tests)
# inherits it: prometheus_client then keeps every metric in mmap files, one file write under one
# process-wide lock per increment, for a multi-worker Feast server this process does not run.
# Drop an inherited Feast temp dir so the server's metrics stay in memory; a directory the
# operator set on purpose is left alone, and so is a process whose prometheus_client already chose
# mmap files (its values need the directory).
if "prometheus_client.values" not in _sys.modules and _os.path.basename(
    _os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
).startswith("feast_metrics_"):
    for _name in PROMETHEUS_DIR_VARIABLES:
        _os.environ.pop(_name, None)

# prometheus_client picks its value storage once, at import: pick it now, before Feast sets the
# variable again in this process.
import prometheus_client.values as _prometheus_values  # noqa: E402, F401
