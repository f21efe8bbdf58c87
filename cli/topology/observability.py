"""Prometheus and a Pushgateway beside the local topology (`riskops up`), as the cluster runs them.

On a cluster the Prometheus Operator reads k8s/base/monitoring: a PodMonitor for the serving pods,
a ServiceMonitor for the Pushgateway the monitor CronJob pushes to, and the PrometheusRule. Here
the same objects come from the rendered overlay and become a `prometheus.yml`:

* the PodMonitor's pods -> one static target per predictor/transformer process, labelled
  ``component`` (and ``pod``) as the PodMonitor's relabelling labels them;
* the Pushgateway -> a target scraped with ``honor_labels`` (the pushed job/instance survive);
* the PrometheusRule's ``spec`` -> the rules file, unchanged.

Both binaries come from the OS packages (`tools/install_os_packages.sh`: prometheus,
prometheus-pushgateway). Grafana is not among them: its dashboard (k8s/base/monitoring/
riskops-dashboard.json) is imported into a Grafana pointed at this Prometheus (docs/operations.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml


def rule_groups(docs: list[dict]) -> dict:
    """Every PrometheusRule's groups in the rendered objects, as one Prometheus rules file."""
    groups = []
    for d in docs:
        if d.get("kind") == "PrometheusRule":
            groups.extend((d.get("spec") or {}).get("groups") or [])
    if not groups:
        raise KeyError("no PrometheusRule in the rendered overlay (k8s/base/monitoring/prometheusrule.yaml)")
    return {"groups": groups}


def prometheus_config(
    pods: dict[str, str], pushgateway: str, rule_file: Path, interval: str = "5s"
) -> dict:
    """prometheus.yml: `pods` (process name -> URL) as the PodMonitor's targets, the Pushgateway."""
    pod_targets = [
        {
            "targets": [url.removeprefix("http://")],
            "labels": {"pod": name, "component": "predictor" if "predictor" in name else "transformer"},
        }
        for name, url in pods.items()
    ]
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rule_file)],
        "scrape_configs": [
            {"job_name": "riskops-serving", "static_configs": pod_targets},
            {
                "job_name": "riskops-pushgateway",
                "honor_labels": True,
                "static_configs": [{"targets": [pushgateway.removeprefix("http://")]}],
            },
        ],
    }


def binaries() -> tuple[str, str]:
    """The prometheus and prometheus-pushgateway executables; a clear error when missing."""
    found = shutil.which("prometheus"), shutil.which("prometheus-pushgateway")
    if not all(found):
        raise FileNotFoundError(
            "prometheus / prometheus-pushgateway not found: run `make os-packages` "
            "(tools/install_os_packages.sh), or start `riskops up --no-prometheus`"
        )
    return found  # type: ignore[return-value]


def write_prometheus_files(root: Path, docs: list[dict], pods: dict[str, str], pushgateway: str) -> Path:
    """The rules file and prometheus.yml under `root`; returns the config's path."""
    root.mkdir(parents=True, exist_ok=True)
    rules = root / "riskops-rules.yml"
    rules.write_text(yaml.safe_dump(rule_groups(docs), sort_keys=False))
    config = root / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(pods, pushgateway, rules), sort_keys=False))
    return config
