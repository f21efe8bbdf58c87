"""The Kubernetes manifests render, validate offline, and the validator catches broken ones; the
scale-out contract holds (transformers share the one Redis that Feast uses, with the settings
serving/config.py reads; the log goes to the URI the monitor reads), and the Redis arguments
keep acknowledged writes through a kill on a real redis-server.

The validator (tools/validate_k8s.py, checks in tools/k8s_checks/) is imported once: its CRD schema load
(~1-3 s) is cached for every validate() call below. Broken copies are built in tmp_path and
rendered with the dev overlay only, to keep the module well under a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from grafana_dashboard import build_dashboard
from k8s_checks.custom_resources import CRD_FILE, MONITORING_CRD_FILES, schemas_dir
from k8s_checks.render import discover_overlays, find_kubectl
from validate_k8s import validate

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "validate_k8s.py"
SCHEMAS = schemas_dir(REPO)  # a path only: read by the tests that need it


@pytest.fixture(scope="module", autouse=True)
def _kubectl_present():
    if find_kubectl() is None:
        pytest.fail("kubectl is required to render the overlays (kubectl v1.32 bundles kustomize v5.5)")


@pytest.fixture(scope="module")
def report():
    return validate(REPO)


def _objs(report, overlay: str, kind: str) -> list[dict]:
    return [o for o in report.rendered[overlay] if o["kind"] == kind]


# ---------------------------------------------------------------- the real manifests


def test_every_overlay_renders(report):
    overlays = {p.name for p in discover_overlays(REPO / "k8s")}
    assert overlays >= {"dev", "prod-gpu"}
    assert set(report.rendered) == overlays
    for name, objs in report.rendered.items():
        kinds = {o["kind"] for o in objs}
        assert {
            "Namespace",
            "InferenceService",
            "StatefulSet",
            "Service",
            "CronJob",
            "NetworkPolicy",
        } <= kinds, name


def test_validator_passes_on_real_manifests(report):
    assert report.ok, "\n".join(report.problems)
    text = "\n".join(report.checked)
    assert "kubernetes-validate --strict 1.32" in text
    assert "InferenceService schema: 1 object(s)" in text
    if (SCHEMAS / CRD_FILE).is_file():
        assert report.isvc_schema_source.startswith("KServe CRD")
    else:  # never silently skipped: the fallback says so
        assert "kserve Python models" in report.isvc_schema_source


def test_prod_gpu_training_job_and_canary(report):
    (job,) = _objs(report, "prod-gpu", "PyTorchJob")
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] >= 1
    for rtype in ("Master", "Worker"):
        pod = specs[rtype]["template"]["spec"]
        (c,) = [c for c in pod["containers"] if c["name"] == "pytorch"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] >= 1
        assert c["command"][0] == "torchrun"
        i = c["args"].index("-m")
        assert c["args"][i : i + 3] == ["-m", "riskops.training.train_job", "--distributed"]
        assert "--master-addr=$(MASTER_ADDR)" in c["args"][:i]
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        selector = pod["nodeSelector"]
        assert (
            selector.get("nvidia.com/gpu.present") == "true" or "cloud.google.com/gke-accelerator" in selector
        )
    (isvc,) = _objs(report, "prod-gpu", "InferenceService")
    pred = isvc["spec"]["predictor"]
    assert pred["canaryTrafficPercent"] == 10
    assert (pred["minReplicas"], pred["maxReplicas"]) == (2, 10)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"


def test_dev_is_single_replica_cpu_only(report):
    objs = report.rendered["dev"]
    (isvc,) = _objs(report, "dev", "InferenceService")
    for comp in ("predictor", "transformer"):
        assert (isvc["spec"][comp]["minReplicas"], isvc["spec"][comp]["maxReplicas"]) == (1, 1)
        assert "canaryTrafficPercent" not in isvc["spec"][comp]
    for o in _objs(report, "dev", "Deployment") + _objs(report, "dev", "StatefulSet"):
        assert o["spec"]["replicas"] == 1, o["metadata"]["name"]
    assert not _objs(report, "dev", "PyTorchJob")
    assert "nvidia.com/gpu" not in yaml.safe_dump_all(objs)


def test_serving_contract(report):
    for overlay in report.rendered:
        (isvc,) = _objs(report, overlay, "InferenceService")
        assert isvc["metadata"]["name"] == "risk-model"
        pred = isvc["spec"]["predictor"]["containers"][0]
        tr = isvc["spec"]["transformer"]["containers"][0]
        assert pred["command"] == ["python", "-m", "serving.predictor"]
        assert tr["command"] == ["python", "-m", "serving.transformer"]
        assert "--predictor_host" not in tr["args"]  # KServe appends it
        assert pred["env"][0]["name"] == "STORAGE_URI" and pred["env"][0]["value"].startswith("s3://")
        for c in (pred, tr):
            assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
            assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        (role,) = _objs(report, overlay, "Role")
        assert role["rules"] == [
            {
                "apiGroups": ["serving.kserve.io"],
                "resources": ["inferenceservices"],
                "resourceNames": ["risk-model"],
                "verbs": ["get", "patch"],
            }
        ]


def test_serving_args_parse_with_the_serving_code(report):
    """The container args are flags the serving entry points accept (KServe appends --predictor_host)."""
    predictor = pytest.importorskip("serving.predictor")
    transformer = pytest.importorskip("serving.transformer")
    (isvc,) = _objs(report, "prod-gpu", "InferenceService")
    pred_args = isvc["spec"]["predictor"]["containers"][0]["args"]
    tr_args = isvc["spec"]["transformer"]["containers"][0]["args"] + [
        "--predictor_host",
        "risk-model-predictor.riskops",
    ]
    args, rest = predictor.build_parser().parse_known_args(pred_args)
    assert rest == [] and args.model_name == "risk-model" and args.model_dir == "/mnt/models"
    assert args.policy_file == "/etc/riskops/policy/policy.yaml"
    args, rest = transformer.build_parser().parse_known_args(tr_args)
    assert rest == [] and args.feature_repo == "/etc/riskops/feast" and args.predictor_protocol == "v1"


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env") or []}


def _expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion, for the variables the test names."""
    for name, v in env.items():
        value = value.replace(f"$({name})", v)
    return value


def _redis_container(report, overlay: str) -> dict:
    (sts,) = [o for o in _objs(report, overlay, "StatefulSet") if o["metadata"]["name"] == "redis"]
    return sts["spec"]["template"]["spec"]["containers"][0]


def test_transformers_share_redis_state_and_ship_the_log(report):
    """Scale-out: every transformer replica reads entity state from the one Redis Feast uses too,
    the prediction log goes to the object store the monitor reads, and no feature server is left."""
    feast = yaml.safe_load((REPO / "k8s/base/config/feature_store.yaml").read_text())
    feast_host = feast["online_store"]["connection_string"].split(",")[0]
    for overlay, objs in report.rendered.items():
        assert not [o for o in objs if "feature-server" in o["metadata"]["name"]], overlay
        (isvc,) = _objs(report, overlay, "InferenceService")
        tr = isvc["spec"]["transformer"]["containers"][0]
        env, names = _env(tr), [e["name"] for e in tr["env"]]
        assert env["RISKOPS_STATE_BACKEND"]["value"] == "redis"
        url = env["RISKOPS_REDIS_URL"]["value"]
        assert "$(REDIS_PASSWORD)" in url  # the kubelet expands only variables defined earlier
        assert names.index("REDIS_PASSWORD") < names.index("RISKOPS_REDIS_URL")
        assert url.split("@", 1)[1].split("/")[0] == feast_host == "redis:6379"
        secret = env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert (
            _env(_redis_container(report, overlay))["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == secret
        )
        (svc,) = [o for o in _objs(report, overlay, "Service") if o["metadata"]["name"] == "redis"]
        assert [p["port"] for p in svc["spec"]["ports"]] == [6379]
        (cm,) = [
            o for o in _objs(report, overlay, "ConfigMap") if o["metadata"]["name"].startswith("riskops-env")
        ]
        assert cm["data"]["RISKOPS_PREDICTION_LOG_URI"].startswith("s3://")
        assert not [k for k in cm["data"] if "FEATURE_SERVER" in k]
        (cron,) = _objs(report, overlay, "CronJob")
        for c in (tr, cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]):
            assert {"configMapRef": {"name": cm["metadata"]["name"]}} in c["envFrom"]
            assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(_env(c))


def test_transformer_env_is_what_the_serving_config_reads(report, tmp_path, monkeypatch):
    from redis.connection import parse_url

    from riskops.settings import Paths
    from serving.config import ServingConfig

    (isvc,) = _objs(report, "prod-gpu", "InferenceService")
    env = _env(isvc["spec"]["transformer"]["containers"][0])
    (cm,) = [
        o for o in _objs(report, "prod-gpu", "ConfigMap") if o["metadata"]["name"].startswith("riskops-env")
    ]
    for name in ("RISKOPS_STATE_BACKEND", "RISKOPS_REDIS_URL"):
        monkeypatch.setenv(name, _expand(env[name]["value"], {"REDIS_PASSWORD": "0123abcd"}))
    monkeypatch.setenv("RISKOPS_PREDICTION_LOG_URI", cm["data"]["RISKOPS_PREDICTION_LOG_URI"])
    cfg = ServingConfig().with_home(Paths(tmp_path))
    assert cfg.state_backend == "redis" and cfg.log_ship_uri == cm["data"]["RISKOPS_PREDICTION_LOG_URI"]
    conn = parse_url(cfg.redis_url)
    assert (conn["host"], conn["port"], conn["password"], conn["db"]) == ("redis", 6379, "0123abcd", 0)


def test_redis_is_persistent_and_reachable_only_from_the_transformers(report):
    for overlay in report.rendered:
        c = _redis_container(report, overlay)
        args = c["args"]
        opts = {args[i]: args[i + 1] for i in range(0, len(args), 2)}
        assert opts["--appendonly"] == "yes" and opts["--maxmemory-policy"] == "noeviction"
        (sts,) = [o for o in _objs(report, overlay, "StatefulSet") if o["metadata"]["name"] == "redis"]
        claims = [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]]
        assert [m["name"] for m in c["volumeMounts"] if m["mountPath"] == opts["--dir"]] == claims == ["data"]
        (pol,) = [
            o for o in _objs(report, overlay, "NetworkPolicy") if o["metadata"]["name"] == "redis-ingress"
        ]
        assert (
            pol["spec"]["podSelector"]["matchLabels"].items()
            <= sts["spec"]["template"]["metadata"]["labels"].items()
        )
        (isvc,) = _objs(report, overlay, "InferenceService")
        pods = {  # KServe labels each component's pods with the InferenceService's name
            comp: {**isvc["spec"][comp]["labels"], "serving.kserve.io/inferenceservice": "risk-model"}
            for comp in ("transformer", "predictor")
        }
        selectors = [
            f["podSelector"]["matchLabels"] for f in pol["spec"]["ingress"][0]["from"] if "podSelector" in f
        ]
        assert any(sel.items() <= pods["transformer"].items() for sel in selectors)
        assert not any(sel.items() <= pods["predictor"].items() for sel in selectors)


def test_redis_args_keep_acknowledged_writes_through_a_kill(report, tmp_path):
    """The manifest's own redis-server arguments on a real redis-server: a write acknowledged before
    a SIGKILL is there after the restart (the append-only file), and a full Redis refuses writes."""
    import redis

    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is required (the OS package redis-server; .ci/run installs it)")
    with socket.socket() as sock:  # a free port for this test's server
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [_expand(a, {"REDIS_PASSWORD": "0123abcd"}) for a in _redis_container(report, "dev")["args"]]
    args[args.index("--dir") + 1] = str(tmp_path)
    cmd = [server, *args, "--port", str(port), "--bind", "127.0.0.1"]
    client = redis.Redis(port=port, password="0123abcd", socket_timeout=5)

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                client.ping()
                return proc
            except redis.ConnectionError:
                time.sleep(0.05)
        proc.kill()
        pytest.fail(f"redis-server did not start: {cmd}")

    proc = start()
    try:
        client.hset("riskops:s:user:u1", mapping={"c:1h": 3})
        proc.kill()
        proc.wait(5)
        proc = start()
        assert client.hget("riskops:s:user:u1", "c:1h") == b"3"
        client.config_set("maxmemory", "1")  # full: noeviction refuses writes rather than drop state
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            client.set("riskops:x", "y")
        assert client.hget("riskops:s:user:u1", "c:1h") == b"3"
    finally:
        proc.kill()
        proc.wait(5)


def test_policy_file_has_only_known_keys():
    policy = yaml.safe_load((REPO / "k8s/base/config/policy.yaml").read_text())
    assert set(policy) <= {"review", "block", "fail_mode"}
    assert policy["fail_mode"] == "review"


def test_monitor_config_loads_with_the_monitor_code():
    from riskops.lifecycle.loop import load_loop_config

    cfg = load_loop_config(REPO / "k8s/base/config/monitor.yaml")  # unknown keys would raise
    retrain = cfg.retrain
    assert retrain.mode == "cluster" and retrain.host.startswith("http://ml-pipeline.kubeflow")


def test_cli_exit_code_and_output():
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--overlay", "dev"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "checked" in proc.stdout and proc.stdout.strip().splitlines()[-1].startswith("OK")


# ---------------------------------------------------------------- the operator's view (monitoring/)


def _serving_pod_labels(report, overlay: str) -> dict[str, dict]:
    """component -> the labels KServe's pods carry (the component's labels + the isvc name)."""
    (isvc,) = _objs(report, overlay, "InferenceService")
    return {
        comp: {**isvc["spec"][comp]["labels"], "serving.kserve.io/inferenceservice": "risk-model"}
        for comp in ("transformer", "predictor")
    }


def _admits(policies: list[dict], pod: dict, peer: tuple[str, dict | str], port: int) -> bool:
    """Whether some NetworkPolicy selecting `pod` (its labels) lets `peer` in on `port`: peer is
    ("pod", labels) for a pod of this namespace or ("namespace", name) for any pod there."""
    for pol in policies:
        spec = pol["spec"]
        if not spec["podSelector"].get("matchLabels", {}).items() <= pod.items():
            continue
        for rule in spec.get("ingress") or []:
            if rule.get("ports") and port not in [p["port"] for p in rule["ports"]]:
                continue
            for src in rule.get("from") or []:
                ns_sel, pod_sel = src.get("namespaceSelector"), src.get("podSelector")
                if peer[0] == "pod" and ns_sel is None and pod_sel is not None:
                    if pod_sel.get("matchLabels", {}).items() <= peer[1].items():
                        return True
                if peer[0] == "namespace" and ns_sel is not None and not (pod_sel or {}).get("matchLabels"):
                    if (
                        ns_sel.get("matchLabels", {}).items()
                        <= {"kubernetes.io/metadata.name": peer[1]}.items()
                    ):
                        return True
    return False


def test_validator_counts_the_monitoring_custom_resources(report):
    for overlay in report.rendered:
        (line,) = [c for c in report.checked if c.startswith(f"[{overlay}] Prometheus Operator CRDs")]
        assert "PodMonitor 1" in line and "ServiceMonitor 1" in line, line
        n_rules = len(_objs(report, overlay, "PrometheusRule"))
        assert n_rules >= 1 and f"PrometheusRule {n_rules}" in line, line


def test_podmonitor_scrapes_every_serving_pod(report):
    """The PodMonitor selects both components' pods, on the server's port in either KServe mode,
    and adds the labels the dashboard and the rules group by; Prometheus may reach that port."""
    for overlay in report.rendered:
        (pm,) = _objs(report, overlay, "PodMonitor")
        assert pm["metadata"]["labels"]["release"] == "prometheus"  # kube-prometheus-stack's selector
        pods = _serving_pod_labels(report, overlay)
        selector = pm["spec"]["selector"]["matchLabels"]
        assert all(selector.items() <= labels.items() for labels in pods.values())
        (isvc,) = _objs(report, overlay, "InferenceService")
        for comp in pods:
            ports = isvc["spec"][comp]["containers"][0]["ports"]
            assert {"name": "http1", "containerPort": 8080, "protocol": "TCP"} in ports
        endpoints = pm["spec"]["podMetricsEndpoints"]
        assert {e["port"] for e in endpoints} == {"http1", "user-port"}  # RawDeployment, Knative
        for e in endpoints:
            assert (e["path"], e["interval"]) == ("/metrics", "15s")
            targets = {r["targetLabel"]: r["sourceLabels"] for r in e["relabelings"]}
            assert targets["component"] == ["__meta_kubernetes_pod_label_riskops_io_component"]
            assert targets["pod"] == ["__meta_kubernetes_pod_name"]
            assert targets["namespace"] == ["__meta_kubernetes_namespace"]
        policies = _objs(report, overlay, "NetworkPolicy")
        for labels in pods.values():
            assert _admits(policies, labels, ("namespace", "monitoring"), 8080)
            assert not _admits(policies, labels, ("namespace", "some-other-namespace"), 8080)


def test_monitor_pushes_to_the_pushgateway_prometheus_scrapes(report):
    """RISKOPS_PUSHGATEWAY_URL names the Pushgateway's Service; the monitor's pods and Prometheus may
    reach it, the serving pods may not; it is scraped with honorLabels (the pushed job survives)."""
    for overlay in report.rendered:
        (cm,) = [
            o for o in _objs(report, overlay, "ConfigMap") if o["metadata"]["name"].startswith("riskops-env")
        ]
        url = urlsplit(cm["data"]["RISKOPS_PUSHGATEWAY_URL"])
        (svc,) = [
            o for o in _objs(report, overlay, "Service") if o["metadata"]["name"] == "riskops-pushgateway"
        ]
        assert url.hostname == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc"
        (svc_port,) = svc["spec"]["ports"]
        assert url.port == svc_port["port"] == 9091
        (dep,) = [
            o for o in _objs(report, overlay, "Deployment") if o["metadata"]["name"] == "riskops-pushgateway"
        ]
        pod = dep["spec"]["template"]
        assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        (c,) = pod["spec"]["containers"]
        named = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert named[svc_port["targetPort"]] == 9091 and "--web.listen-address=:9091" in c["args"]
        assert {c["readinessProbe"]["httpGet"]["path"], c["livenessProbe"]["httpGet"]["path"]} == {
            "/-/ready",
            "/-/healthy",
        }
        (sm,) = _objs(report, overlay, "ServiceMonitor")
        assert sm["metadata"]["labels"]["release"] == "prometheus"
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
        (ep,) = sm["spec"]["endpoints"]
        assert ep["port"] == svc_port["name"] and ep["honorLabels"] is True
        (cron,) = _objs(report, overlay, "CronJob")
        monitor_pod = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        policies = _objs(report, overlay, "NetworkPolicy")
        gateway = pod["metadata"]["labels"]
        assert _admits(policies, gateway, ("pod", monitor_pod), 9091)
        assert _admits(policies, gateway, ("namespace", "monitoring"), 9091)
        assert not _admits(
            policies, gateway, ("pod", _serving_pod_labels(report, overlay)["transformer"]), 9091
        )


def test_grafana_dashboard_configmap_is_the_generated_dashboard(report):
    """One ConfigMap, a stable name (no hash suffix), the labels kube-prometheus-stack's Grafana
    sidecar loads it by, and the dashboard tools/grafana_dashboard.py builds."""
    for overlay in report.rendered:
        (cm,) = [o for o in _objs(report, overlay, "ConfigMap") if "grafana" in o["metadata"]["name"]]
        assert cm["metadata"]["name"] == "riskops-grafana-dashboard"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"]["grafana_folder"] == "riskops"
        assert list(cm["data"]) == ["riskops-dashboard.json"]
        assert json.loads(cm["data"]["riskops-dashboard.json"]) == build_dashboard()


# ---------------------------------------------------------------- broken copies must fail


@pytest.fixture
def tree(tmp_path):
    """A writable copy of the manifests (and the yamllint config) to break."""
    shutil.copytree(REPO / "k8s", tmp_path / "k8s")
    shutil.copy(REPO / ".yamllint.yaml", tmp_path / ".yamllint.yaml")
    return tmp_path


def _edit_docs(path: Path, fn) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    for d in docs:
        fn(d)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False, indent=2))


def _add_resource(root: Path, filename: str, doc: dict) -> None:
    base = root / "k8s" / "base"
    (base / filename).write_text(yaml.safe_dump(doc, sort_keys=False))
    kust = yaml.safe_load((base / "kustomization.yaml").read_text())
    kust["resources"].append(filename)
    (base / "kustomization.yaml").write_text(yaml.safe_dump(kust, sort_keys=False))


def _run_broken(root: Path, lint: bool = False):
    rep = validate(root, schemas=SCHEMAS, overlays=["dev"], lint=lint)
    assert not rep.ok, "the validator accepted a broken manifest"
    return "\n".join(rep.problems)


def test_fails_on_unknown_field_in_inferenceservice(tree):
    def bad(d):
        d["spec"]["predictor"]["replicaz"] = 3
        d["spec"]["transformer"]["containers"][0]["imagePullPolicyy"] = "Always"

    _edit_docs(tree / "k8s/base/inferenceservice.yaml", bad)
    problems = _run_broken(tree)
    assert "replicaz" in problems and "imagePullPolicyy" in problems


def test_kserve_model_fallback_is_strict_and_says_so(tree):
    """Without KServe's CRD the InferenceService is still validated (never skipped). The folder holds
    only the Prometheus Operator's CRDs, which have no fallback (see the missing-CRD test below)."""
    _edit_docs(tree / "k8s/base/inferenceservice.yaml", lambda d: d["spec"]["predictor"].update(replicaz=3))
    rep = validate(tree, schemas=_schemas_without(tree, CRD_FILE), overlays=["dev", "prod-gpu"], lint=False)
    assert "kserve Python models" in rep.isvc_schema_source
    assert sum("InferenceService schema" in line for line in rep.checked) == 2
    # the injected field is caught in both overlays, and it is the only thing caught
    assert len(rep.problems) == 2 and all("replicaz" in p for p in rep.problems), rep.problems


def test_fails_on_missing_resources(tree):
    def bad(d):
        if d["kind"] == "StatefulSet":
            del d["spec"]["template"]["spec"]["containers"][0]["resources"]

    _edit_docs(tree / "k8s/base/redis.yaml", bad)
    # the dev overlay patches the resources back in; drop that patch to see the base as is
    kust_path = tree / "k8s/overlays/dev/kustomization.yaml"
    kust = yaml.safe_load(kust_path.read_text())
    kust["patches"] = [p for p in kust["patches"] if p["path"] != "patch-redis.yaml"]
    kust_path.write_text(yaml.safe_dump(kust, sort_keys=False))
    assert "resources missing requests.cpu, requests.memory, limits.memory" in _run_broken(tree)


def test_fails_on_unknown_kind(tree):
    _add_resource(
        tree,
        "certificate.yaml",
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": {"name": "risk-model-tls"},
            "spec": {"secretName": "risk-model-tls", "dnsNames": ["risk.example.com"]},
        },
    )
    assert "unknown kind Certificate" in _run_broken(tree)


def test_fails_on_secret_with_value(tree):
    _add_resource(
        tree,
        "secret.yaml",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "riskops-secrets"},
            "type": "Opaque",
            "stringData": {"pii-key": "not-a-real-key"},
        },
    )
    problems = _run_broken(tree)
    assert "Secret with data/stringData" in problems and "has data/stringData in git" in problems


def test_fails_on_unpinned_image_and_root_user(tree):
    def bad(d):
        if d["kind"] == "StatefulSet":
            c = d["spec"]["template"]["spec"]["containers"][0]
            c["image"] = "redis:latest"
            c["securityContext"]["runAsUser"] = 0

    _edit_docs(tree / "k8s/base/redis.yaml", bad)
    problems = _run_broken(tree)
    assert "is not pinned" in problems and "runs as uid 0" in problems


def test_fails_on_broken_pytorchjob(tree):
    path = tree / "k8s/overlays/prod-gpu/pytorchjob-train.yaml"

    def bad(d):
        c = d["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
        del c["command"], c["args"]
        d["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = 2
        d["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["gpus"] = 1

    _edit_docs(path, bad)
    rep = validate(tree, schemas=SCHEMAS, overlays=["prod-gpu"], lint=False)
    problems = "\n".join(rep.problems)
    assert "has no command" in problems
    assert "Master must have exactly 1 replica" in problems
    assert "'gpus' was unexpected" in problems  # the embedded pod template is strictly validated


def test_fails_on_lint_and_dangling_reference(tree):
    monitor = tree / "k8s/base/monitor-cronjob.yaml"
    text = monitor.read_text().replace("name: riskops-monitor-config", "name: riskops-monitor-cfg")
    monitor.write_text(text.replace("concurrencyPolicy: Forbid", "concurrencyPolicy:   Forbid"))
    problems = _run_broken(tree, lint=True)
    assert "yamllint" in problems and "colons" in problems
    assert "references ConfigMap 'riskops-monitor-cfg'" in problems


def test_fails_clearly_without_kubectl(tree, monkeypatch):
    monkeypatch.setenv("KUBECTL", str(tree / "no-kubectl"))
    monkeypatch.setenv("PATH", str(tree))
    rep = validate(tree, schemas=SCHEMAS, lint=False)
    assert not rep.ok and any("kubectl not found" in p for p in rep.problems)


def test_pipeline_yaml_is_linted_with_long_lines_allowed(tree):
    (tree / "pipelines").mkdir()
    (tree / "pipelines" / "p.yaml").write_text("# PIPELINE DEFINITION\nkey: " + "x" * 300 + "\nflag: yes\n")
    rep = validate(tree, schemas=SCHEMAS, overlays=["dev"])
    problems = "\n".join(rep.problems)
    assert "pipelines/p.yaml:3" in problems and "truthy" in problems
    assert "line too long" not in problems


@pytest.mark.skipif(os.environ.get("RISKOPS_SKIP_CRD_TEST") == "1", reason="explicitly disabled")
def test_crd_schema_is_strict_where_it_lists_properties(kserve_crd):
    root = kserve_crd["serving.kserve.io/v1beta1"]
    assert root["additionalProperties"] is False
    assert root["properties"]["spec"]["properties"]["predictor"]["additionalProperties"] is False
    assert "additionalProperties" not in root["properties"]["status"]  # preserve-unknown-fields kept open


def _schemas_without(root: Path, *missing: str) -> Path:
    """A schemas folder holding every CRD the validator reads except `missing` (links, not copies)."""
    folder = root / "schemas"
    folder.mkdir()
    for name in {CRD_FILE, *MONITORING_CRD_FILES.values()} - set(missing):
        (folder / name).symlink_to(SCHEMAS / name)
    return folder


def test_fails_on_unknown_field_or_wrong_type_in_monitors(tree):
    def bad_podmonitor(d):
        d["spec"]["podMetricsEndpoints"][0]["scrapeIntervall"] = "15s"
        d["spec"]["podMetricsEndpoints"][1]["interval"] = 15

    def bad_servicemonitor(d):
        if d["kind"] == "ServiceMonitor":
            d["spec"]["endpoints"][0]["honourLabels"] = True

    _edit_docs(tree / "k8s/base/monitoring/podmonitor.yaml", bad_podmonitor)
    _edit_docs(tree / "k8s/base/monitoring/pushgateway.yaml", bad_servicemonitor)
    problems = _run_broken(tree)
    assert "PodMonitor schema: spec.podMetricsEndpoints.0: Additional properties" in problems
    assert "'scrapeIntervall' was unexpected" in problems
    assert "PodMonitor schema: spec.podMetricsEndpoints.1.interval: 15 is not of type 'string'" in problems
    assert "ServiceMonitor/riskops-pushgateway" in problems and "'honourLabels' was unexpected" in problems


def test_fails_naming_a_missing_monitoring_crd(tmp_path):
    """No fallback for the Prometheus Operator's kinds: a missing CRD is a problem naming the file."""
    folder = _schemas_without(tmp_path, MONITORING_CRD_FILES["PodMonitor"])
    rep = validate(REPO, schemas=folder, overlays=["dev"], lint=False)
    (problem,) = rep.problems
    assert problem.startswith("[dev] PodMonitor/risk-model:")
    assert str(folder / MONITORING_CRD_FILES["PodMonitor"]) in problem


def _mounts_of(pod_spec: dict, claim: str) -> list[str]:
    """Where a pod's containers mount the PersistentVolumeClaim `claim`."""
    volumes = {v["name"] for v in pod_spec.get("volumes", []) if v.get("persistentVolumeClaim", {}).get("claimName") == claim}
    return [m["mountPath"] for c in pod_spec["containers"] for m in c.get("volumeMounts", []) if m["name"] in volumes]  # fmt: skip


@pytest.mark.parametrize("overlay", ["dev", "prod-gpu"])
def test_the_drift_history_volume_is_where_the_monitor_writes_and_the_ui_reads(report, overlay):
    from riskops.lifecycle.loop import LoopConfig

    (claim,) = _objs(report, overlay, "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == "riskops-drift-history"
    assert claim["spec"]["accessModes"] == (["ReadWriteOnce"] if overlay == "dev" else ["ReadWriteMany"])
    (cronjob,) = _objs(report, overlay, "CronJob")
    monitor_pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (ui,) = [d for d in _objs(report, overlay, "Deployment") if d["metadata"]["name"] == "riskops-ui"]
    ui_pod = ui["spec"]["template"]["spec"]
    config_map = next(c for c in _objs(report, overlay, "ConfigMap") if c["metadata"]["name"].startswith("riskops-monitor-config"))
    workspace = LoopConfig.from_dict(yaml.safe_load(config_map["data"]["monitor.yaml"])).reports.workspace
    assert _mounts_of(monitor_pod, "riskops-drift-history") == [workspace]  # the monitor writes on the volume
    assert _mounts_of(ui_pod, "riskops-drift-history") == [workspace]
    command = ui_pod["containers"][0]["command"]
    assert command[:2] == ["riskops", "ui"] and command[command.index("--workspace") + 1] == workspace
    assert "--create" in command  # it starts before the monitor's first pass
    # the command parses with the CLI's own parser (a renamed flag fails here, not in the cluster)
    from cli.main import build_parser

    args = build_parser().parse_args(command[1:])
    assert args.workspace == workspace and args.host == "0.0.0.0" and args.create
