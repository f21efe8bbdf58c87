"""The checked-in pipeline YAML must be exactly what the source compiles to, and valid KFP IR."""

import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines.training_pipeline import PROFILES, compile_pipeline, compiled_path


def _docs(path):
    with open(path) as fh:
        return list(yaml.safe_load_all(fh))


def test_checked_in_yaml_matches_source(tmp_path):
    for profile in PROFILES:
        fresh = compile_pipeline(profile, tmp_path / f"{profile}.yaml")
        checked_in = compiled_path(profile)
        assert checked_in.exists(), f"{checked_in} missing: run `riskops pipeline compile`"
        assert _docs(fresh) == _docs(checked_in), (
            f"{checked_in.name} is stale: run `riskops pipeline compile` and commit the result"
        )


def test_compiled_yaml_parses_strictly_into_pipeline_spec():
    from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb2

    for profile in PROFILES:
        spec_doc, *platform_docs = _docs(compiled_path(profile))
        spec = pipeline_spec_pb2.PipelineSpec()
        json_format.ParseDict(spec_doc, spec)  # rejects unknown fields
        tasks = spec.root.dag.tasks
        assert {"ingest-transactions-op", "validate-transactions-op", "build-features-op",
                "train-model-op", "evaluate-model-op", "register-model-op"} <= set(tasks)
        # the features step runs only after the GX gate
        assert "validate-transactions-op" in tasks["build-features-op"].dependent_tasks
        for doc in platform_docs:
            for executor in doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values():
                json_format.ParseDict(executor, k8s_pb2.KubernetesExecutorConfig())


def test_prod_profile_requests_a_gpu_for_training_only():
    spec_doc, platform = _docs(compiled_path("prod-gpu"))
    executors = spec_doc["deploymentSpec"]["executors"]
    train = executors["exec-train-model-op"]["container"]["resources"]
    assert train["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert int(train["accelerator"]["resourceCount"]) == 1
    for name, ex in executors.items():
        if name != "exec-train-model-op":
            assert "accelerator" not in ex["container"].get("resources", {})
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-model-op"]
    assert k8s["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert k8s["tolerations"][0]["key"] == "nvidia.com/gpu"
    dev_spec, _ = _docs(compiled_path("dev"))
    assert "accelerator" not in dev_spec["deploymentSpec"]["executors"]["exec-train-model-op"]["container"]["resources"]
