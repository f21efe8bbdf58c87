"""The checks behind tools/validate_k8s.py, one module per kind of check (see that script's docstring).

- `report`: what was checked and the problems found.
- `render`: yamllint over the YAML, `kubectl kustomize` of each overlay.
- `core`: core kinds, strict, with kubernetes-validate.
- `custom_resources`: InferenceService (KServe CRD or kserve's models), PrometheusRule / ServiceMonitor /
  PodMonitor (Prometheus Operator CRDs) and PyTorchJob.
- `invariants`: security, resources, probes, references, namespace, RBAC, secrets.
"""
