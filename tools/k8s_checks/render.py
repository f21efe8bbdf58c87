"""Reading the manifests: yamllint on every YAML file, `kubectl kustomize` of every overlay."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from k8s_checks.report import Report


def yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml"))


def run_yamllint(root: Path, k8s_dir: Path, report: Report) -> None:
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    conf_file = root / ".yamllint.yaml"
    if not conf_file.exists():
        report.problem("yamllint", f"config {conf_file} is missing")
        return
    strict_conf = YamlLintConfig(file=str(conf_file))
    relaxed_conf = YamlLintConfig(content=f"extends: {conf_file}\nrules:\n  line-length: disable\n")
    groups = [(yaml_files(k8s_dir), strict_conf, "k8s")]
    pipeline_yaml = sorted((root / "pipelines").glob("*.yaml")) if (root / "pipelines").is_dir() else []
    groups.append((pipeline_yaml, relaxed_conf, "pipelines (line-length off)"))
    for files, conf, label in groups:
        n_problems = 0
        for path in files:
            text = path.read_text()
            for p in linter.run(text, conf, str(path)):
                # strict: warnings count as failures too
                n_problems += 1
                report.problem(
                    f"yamllint {path.relative_to(root)}:{p.line}:{p.column}",
                    f"[{p.level}] {p.desc} ({p.rule})",
                )
        report.check(f"yamllint: {len(files)} file(s) under {label}, {n_problems} problem(s)")


# --------------------------------------------------------------------------------------------
# 2. kustomize


def find_kubectl() -> str | None:
    exe = os.environ.get("KUBECTL") or shutil.which("kubectl")
    return exe if exe and (Path(exe).exists() or shutil.which(exe)) else None


def render_overlay(kubectl: str, overlay: Path) -> list[dict]:
    proc = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr or proc.stdout).strip())
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def discover_overlays(k8s_dir: Path) -> list[Path]:
    base = k8s_dir / "overlays"
    return sorted(p.parent for p in base.glob("*/kustomization.yaml")) if base.is_dir() else []
