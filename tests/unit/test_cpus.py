"""serving/cpus.py: the server's threads on one CPU, its helper processes on the others.

The plan is a pure function of the setting, the allowed CPUs and the cgroup quota, driven here
with every case; pinning itself runs for real in a child interpreter (it changes the affinity of
the process that calls it). The real server is held to it in
`tests/integration/test_serving_http.py::test_the_server_threads_share_one_cpu_and_the_feast_child_the_others`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from serving.config import ServingConfig, load_config
from serving.cpus import HELPER_CPUS_ENV, cgroup_cpu_quota, parse_setting, plan_cpus


def test_auto_pins_the_server_to_the_lowest_cpu_and_helpers_to_the_rest():
    plan = plan_cpus("auto", {1, 2, 3, 4}, None)
    assert plan.pinned and plan.server == {1} and plan.helpers == {2, 3, 4}
    assert "CPU 1" in plan.reason and "2,3,4" in plan.reason
    # a quota as large as the allowed set: the CPUs are this process's own
    assert plan_cpus("auto", {4, 5}, 2.0).server == {4}


def test_auto_leaves_a_shared_or_single_cpu_alone():
    shared = plan_cpus("auto", set(range(16)), 2.0)  # a pod under a 2-CPU quota on a 16-CPU node
    assert not shared.pinned and shared.helpers is None
    assert "quota of 2" in shared.reason and "16" in shared.reason
    single = plan_cpus("auto", {3}, None)
    assert not single.pinned and "one CPU" in single.reason


def test_off_and_a_cpu_number():
    assert not plan_cpus("off", {0, 1}, None).pinned
    chosen = plan_cpus(0, {0, 1}, 0.5)  # a number is obeyed whatever the quota
    assert chosen.server == {0} and chosen.helpers == {1}
    alone = plan_cpus("2", {2}, None)
    assert alone.server == {2} and alone.helpers is None  # helpers then run anywhere
    with pytest.raises(ValueError, match="server_cpu: CPU 7 is not one this process may run on"):
        plan_cpus(7, {0, 1}, None)


@pytest.mark.parametrize(
    "value, parsed",
    [("auto", "auto"), (" AUTO ", "auto"), ("off", "off"), (False, "off"), ("3", 3), (0, 0)],
)
def test_setting_values(value, parsed):
    assert parse_setting(value) == parsed


@pytest.mark.parametrize("value", ["fast", "-1", -1, True, "1.5"])
def test_bad_settings_name_the_field(value):
    with pytest.raises(ValueError, match="server_cpu must be"):
        parse_setting(value)
    with pytest.raises(ValueError, match="server_cpu must be"):
        ServingConfig(server_cpu=value)


def test_the_config_parses_the_setting(tmp_path):
    (tmp_path / "serving.yaml").write_text("server_cpu: off\n")  # YAML reads `off` as false
    assert load_config(tmp_path / "serving.yaml").server_cpu == "off"
    assert load_config(None, server_cpu="1").server_cpu == 1
    assert ServingConfig().server_cpu == "auto"


def test_cgroup_quota_v2_v1_and_none(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(v2) is None
    (v2 / "cpu.max").write_text("250000 100000\n")
    assert cgroup_cpu_quota(v2) == 2.5
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(v1) is None
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("150000\n")
    assert cgroup_cpu_quota(v1) == 1.5
    assert cgroup_cpu_quota(tmp_path / "nothing") is None


_PIN_SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys, threading
    from serving.cpus import helper_env, pin_server

    started = threading.Event()
    before = threading.Thread(target=started.wait, daemon=True)  # a thread that exists already
    before.start()
    plan = pin_server(sys.argv[1])
    after = threading.Thread(target=started.wait, daemon=True)  # one started later
    after.start()
    tids = [int(t) for t in os.listdir("/proc/self/task")]
    threads = sorted({tuple(sorted(os.sched_getaffinity(t))) for t in tids})
    started.set()
    child = subprocess.run(
        [sys.executable, "-c", "import os; from serving.cpus import pin_helper; pin_helper(); "
         "print(sorted(os.sched_getaffinity(0)))"],
        env={**os.environ, **helper_env()}, capture_output=True, text=True, check=True,
    )
    print(json.dumps({"pinned": plan.pinned, "server": sorted(plan.server or []),
                      "helpers": sorted(plan.helpers or []), "threads": threads,
                      "n_threads": len(tids), "child": json.loads(child.stdout)}))
    """
)


def _pin_in_child(setting: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != HELPER_CPUS_ENV}
    out = subprocess.run(
        [sys.executable, "-c", _PIN_SCRIPT, setting], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_pinning_moves_every_thread_and_the_helpers_move_off_it():
    allowed = sorted(os.sched_getaffinity(0))
    expected = plan_cpus("auto", set(allowed), cgroup_cpu_quota())
    got = _pin_in_child("auto")
    assert got["n_threads"] >= 3  # main, the thread from before, the thread from after
    if expected.pinned:  # two or more CPUs of our own (CI: 2 cores)
        assert got["threads"] == [[min(allowed)]]  # the earlier thread too, and the later one inherits
        assert got["child"] == sorted(expected.helpers) and min(allowed) not in got["child"]
    else:  # one CPU or a shared quota: nothing moves
        assert got["threads"] == [allowed] and got["child"] == allowed
    off = _pin_in_child("off")
    assert not off["pinned"] and off["threads"] == [allowed] and off["child"] == allowed


def test_a_helper_told_cpus_it_may_not_use_stays_where_it_is(monkeypatch, caplog):
    from serving.cpus import pin_helper

    before = os.sched_getaffinity(0)
    monkeypatch.setenv(HELPER_CPUS_ENV, "4095")  # no such CPU here: the kernel refuses the set
    assert pin_helper() is None
    assert os.sched_getaffinity(0) == before
    assert "cannot move to CPUs 4095" in caplog.text
    monkeypatch.delenv(HELPER_CPUS_ENV)
    assert pin_helper() is None  # not told anything: nothing to do
