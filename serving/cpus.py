"""Which CPUs the serving process runs on: one for the server's threads, the rest for its helpers.

A local / bare-metal option. It never pins in the pods that `k8s/` ships: they run under a CPU
limit (a cgroup quota), where ``"auto"`` leaves scheduling to the OS; nor with KServe's
``workers > 1`` (serving.server turns it off). Measured +19% c32 throughput on a 2-CPU machine
against unpinned (docs/serving.md, "Scaling").

The server is one GIL's worth of Python spread over threads that hand work to each other several
times per request: the event loop, the model thread, the Feast reader, the prediction-log writer.
Left to the OS, they run on different CPUs, so a hand-off wakes a thread on another CPU (an
inter-processor interrupt; on a VM a trip through the hypervisor) and the request's objects move
between CPU caches, while the GIL lets only one of them run at a time anyway. Pinned to one CPU,
a hand-off is a thread switch on that CPU. The Feast child processes (`serving.feast_process`)
are then pinned to the other CPUs, so their bursts (a push flush is ~45 ms of CPU) never take the
server's.

`server_cpu` (ServingConfig):

* ``"auto"`` (default): pin when the process may run on two or more CPUs and owns them, i.e. no
  cgroup CPU quota smaller than that set (a laptop, a VM, a Kubernetes pod with exclusive CPUs
  from the static CPU manager). A pod that shares the node's CPUs under a quota is not pinned:
  the CPU picked could be one that other pods keep busy. The server takes the lowest CPU of the
  set, the helpers the others (which CPU made no measurable difference on the 2-CPU benchmark
  machine).
* ``"off"``: the OS schedules everything.
* a CPU number: the server's threads on that CPU (it must be in the allowed set), helpers on
  the others.

Only the entry points pin (`serving.server.serve`, the cluster's `serving.predictor` and
`serving.transformer` mains), before they start threads: threads and processes inherit the
affinity of the thread that creates them. Code that builds a service inside another process
(tests, tools) is not pinned.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

HELPER_CPUS_ENV = "RISKOPS_HELPER_CPUS"  # set for the helper processes the server starts
AUTO, OFF = "auto", "off"

# the helper CPUs of this process once `pin_server` ran (read by `helper_env`)
_helper_cpus: frozenset[int] | None = None


@dataclass(frozen=True)
class CpuPlan:
    server: frozenset[int] | None  # the CPUs the server's threads run on (None: not pinned)
    helpers: frozenset[int] | None  # the CPUs its helper processes run on (None: not pinned)
    reason: str  # one line for the log: what was chosen and why

    @property
    def pinned(self) -> bool:
        return self.server is not None


def parse_setting(value: str | int) -> str | int:
    """``"auto"``, ``"off"`` or a CPU number from a ServingConfig value; ValueError otherwise."""
    if isinstance(value, bool):  # YAML `off`/`no` arrive as False
        if value:
            raise ValueError("server_cpu must be 'auto', 'off' or a CPU number, got true")
        return OFF
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"server_cpu must be 'auto', 'off' or a CPU number >= 0, got {value}")
        return value
    text = str(value).strip().lower()
    if text in (AUTO, OFF):
        return text
    if text.isdigit():
        return int(text)
    raise ValueError(f"server_cpu must be 'auto', 'off' or a CPU number, got {value!r}")


def plan_cpus(setting: str | int, allowed: set[int] | frozenset[int], quota: float | None) -> CpuPlan:
    """Where the server and its helpers run, from the setting, the CPUs this process may use and
    its cgroup CPU quota in CPUs (None: no quota). Pure: the tests drive it directly."""
    setting = parse_setting(setting)
    allowed = frozenset(allowed)
    if setting == OFF:
        return CpuPlan(None, None, "server_cpu: off (the OS schedules the server's threads)")
    if isinstance(setting, int):
        if setting not in allowed:
            raise ValueError(
                f"server_cpu: CPU {setting} is not one this process may run on {sorted(allowed)}; "
                "pick one of them, 'auto' or 'off'"
            )
        helpers = allowed - {setting}
        return CpuPlan(
            frozenset({setting}),
            helpers or None,
            f"server threads on CPU {setting}, helper processes on {_cpu_list(helpers) or 'any CPU'}"
            f" (server_cpu: {setting})",
        )
    if len(allowed) < 2:
        return CpuPlan(None, None, f"not pinned: this process may run on one CPU only ({_cpu_list(allowed)})")
    if quota is not None and quota < len(allowed):
        return CpuPlan(
            None,
            None,
            f"not pinned: a CPU quota of {quota:g} over {len(allowed)} allowed CPUs means they are shared "
            "(give the pod exclusive CPUs, or set server_cpu to a CPU number)",
        )
    server = min(allowed)
    helpers = allowed - {server}
    return CpuPlan(
        frozenset({server}),
        frozenset(helpers),
        f"server threads on CPU {server}, helper processes on {_cpu_list(helpers)} (server_cpu: auto)",
    )


def _cpu_list(cpus: frozenset[int] | set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """This container's CPU quota in CPUs (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us``), None when unlimited or unreadable. Reads the cgroup mounted at
    `root`, which inside a container (cgroup namespace) is the container's own."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        if quota == "max" or not period:
            return None
        return int(quota) / int(period)
    for d in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        quota, period = _read(root / d / "cpu.cfs_quota_us"), _read(root / d / "cpu.cfs_period_us")
        if quota is not None and period is not None:
            q = int(quota)
            return None if q < 0 else q / int(period)
    return None


def pin_server(setting: str | int) -> CpuPlan:
    """Pin this process's threads (and so every thread it starts later) per `setting`; the
    helper CPUs are kept for `helper_env`. Call before the server starts its threads."""
    global _helper_cpus
    if not hasattr(os, "sched_setaffinity"):  # not Linux
        plan = CpuPlan(None, None, "not pinned: this platform cannot set CPU affinity")
    else:
        plan = plan_cpus(setting, os.sched_getaffinity(0), cgroup_cpu_quota())
    if plan.pinned:
        # every thread that exists now (imports may have started some), not just this one
        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), plan.server)
            except OSError:  # a thread that ended meanwhile
                pass
        _helper_cpus = plan.helpers
    log.info("CPUs: %s", plan.reason)
    return plan


def helper_env() -> dict[str, str]:
    """Environment for a helper process this server starts: the CPUs it should move to."""
    return {HELPER_CPUS_ENV: _cpu_list(_helper_cpus)} if _helper_cpus else {}


def pin_helper() -> frozenset[int] | None:
    """In a helper process: move to the CPUs the server left for helpers (`helper_env`), if any.
    Without it the helper would stay on the server's CPU, the affinity it inherited."""
    text = os.environ.get(HELPER_CPUS_ENV, "").strip()
    if not text or not hasattr(os, "sched_setaffinity"):
        return None
    cpus = frozenset(int(c) for c in text.split(","))
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as exc:  # CPUs this process may not use: stay where it is rather than fail
        log.warning("cannot move to CPUs %s (%s): staying on %s", text, exc, sorted(os.sched_getaffinity(0)))
        return None
    return cpus
