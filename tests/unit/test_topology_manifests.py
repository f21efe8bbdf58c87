"""cli/topology/manifests.py: a container of the rendered manifests as the process `riskops up` runs."""

from __future__ import annotations

import pytest

from cli.commands.up import schedule_seconds
from cli.topology.manifests import arg, render, set_arg, workload

DOCS = [
    {"kind": "ConfigMap", "metadata": {"name": "env-abc"}, "data": {"HOST": "redis", "LEVEL": "info"}},
    {"kind": "ConfigMap", "metadata": {"name": "policy-xyz"}, "data": {"policy.yaml": "review: 0.4\n"}},
    {
        "kind": "InferenceService",
        "metadata": {"name": "risk-model"},
        "spec": {
            "predictor": {
                "containers": [{
                    "command": ["python", "-m", "serving.predictor"],
                    "args": ["--http_port", "8080", "--policy_file", "/etc/p/policy.yaml", "--tag", "$(LEVEL)"],
                    "envFrom": [{"configMapRef": {"name": "env-abc"}}],
                    "env": [
                        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "redis-password"}}},
                        {"name": "URL", "value": "redis://:$(PASSWORD)@$(HOST):6379/0"},
                        {"name": "EARLY", "value": "$(LATER)"},
                        {"name": "LATER", "value": "x"},
                    ],
                    "volumeMounts": [{"name": "policy", "mountPath": "/etc/p"}],
                }],
                "volumes": [{"name": "policy", "configMap": {"name": "policy-xyz"}}],
            }
        },
    },
]  # fmt: skip


def test_a_container_becomes_its_command_arguments_and_environment():
    w = workload(DOCS, "InferenceService", "risk-model", {"redis-password": "pw"}, part="predictor")
    assert w.command == ["python", "-m", "serving.predictor"]
    assert w.args[-1] == "info"  # $(VAR) in args, from the envFrom ConfigMap
    assert w.env["URL"] == "redis://:pw@redis:6379/0"  # a Secret, then an earlier variable, expanded
    assert w.env["EARLY"] == "$(LATER)"  # the kubelet expands only variables defined before
    assert w.files == {"/etc/p": {"policy.yaml": "review: 0.4\n"}}


def test_a_secret_without_a_local_value_is_named():
    with pytest.raises(KeyError, match="redis-password"):
        workload(DOCS, "InferenceService", "risk-model", {}, part="predictor")


def test_a_missing_object_is_named():
    with pytest.raises(KeyError, match="StatefulSet 'redis'"):
        workload(DOCS, "StatefulSet", "redis", {})


def test_arguments_are_replaced_or_added():
    args = ["--http_port", "8080"]
    assert set_arg(args, "--http_port", "9") == ["--http_port", "9"]
    assert set_arg(args, "--x", "1") == ["--http_port", "8080", "--x", "1"]
    assert arg(args, "--http_port") == "8080" and arg(args, "--y") is None


def test_the_shipped_overlays_hold_what_riskops_up_runs():
    """The real manifests: every workload `riskops up` starts is there, with the shared state."""
    docs = render("dev")
    secrets = {"pii-key": "k", "redis-password": "pw", "s3-access-key": "a", "s3-secret-key": "b"}
    transformer = workload(docs, "InferenceService", "risk-model", secrets, part="transformer")
    assert transformer.env["RISKOPS_STATE_BACKEND"] == "redis"
    assert transformer.env["RISKOPS_REDIS_URL"] == "redis://:pw@redis:6379/0"
    assert transformer.env["RISKOPS_PREDICTION_LOG_URI"].startswith("s3://")
    assert "--feature_repo" in transformer.args and "--http_port" in transformer.args
    predictor = workload(docs, "InferenceService", "risk-model", secrets, part="predictor")
    assert arg(predictor.args, "--policy_file").rsplit("/", 1)[0] in predictor.files
    redis = workload(docs, "StatefulSet", "redis", secrets)
    assert redis.command == ["redis-server"] and arg(redis.args, "--appendonly") == "yes"
    monitor = workload(docs, "CronJob", "riskops-monitor", secrets)
    assert monitor.command[:2] == ["riskops", "monitor"] and schedule_seconds(monitor.schedule) > 0
    assert monitor.env["RISKOPS_MONITOR_CONFIG"].rsplit("/", 1)[0] in monitor.files


def test_cron_schedules():
    assert schedule_seconds("*/10 * * * *") == 600.0
    assert schedule_seconds("0 3 * * *", default=5.0) == 5.0
