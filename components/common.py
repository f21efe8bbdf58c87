"""What every pipeline component shares."""

import os
from typing import Any

from kfp import dsl

# The one project image: components and serving run from it on a cluster (see Dockerfile).
# kfp.local's SubprocessRunner ignores it and runs in the current virtual environment.
PROJECT_IMAGE = "ghcr.io/riskops/riskops:0.1.0"


def step_component(**kwargs: Any):
    """`dsl.component(base_image=PROJECT_IMAGE, ...)`, or a no-op inside a running KFP task.

    A task's body imports its own step module to reach the plain function. Inside a task KFP sets
    _KFP_RUNTIME=true and `kfp.dsl` has no `component`, so the decorator must not run there.
    """
    if os.environ.get("_KFP_RUNTIME", "false") == "true":
        return lambda func: func
    kwargs.setdefault("base_image", PROJECT_IMAGE)
    return dsl.component(**kwargs)
