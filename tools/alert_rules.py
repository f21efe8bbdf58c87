#!/usr/bin/env python3
"""The platform's Prometheus alert rules: extract, check and unit-test them (what CI runs).

    .venv/bin/python tools/alert_rules.py          # exit 0 = all good, 1 = problems found

The rules live in one PrometheusRule object (k8s/base/monitoring/prometheusrule.yaml) that the
Prometheus Operator loads; promtool reads only plain rule files, i.e. the object's `spec`. So:

* `write_rules_file(dest)` writes that spec as a plain rules file (optionally with every `for:`
  shortened: an integration test against a real Prometheus sees an alert fire in seconds while the
  expressions stay the real ones);
* `check()` writes it into a temporary folder as `riskops.rules.yaml`, next to a copy of
  rules_test.yaml (whose `rule_files` names exactly that file), runs `promtool check rules` and
  `promtool test rules` for real, and checks what promtool does not: every alert has a severity
  (page | ticket) and summary / description / runbook / runbook_url annotations, its runbook_url
  points at docs/operations.md#<alert name, lower-cased>, and the unit tests hold at least one case
  where it fires and one where it stays quiet.

promtool comes with the OS package `prometheus` (tools/install_os_packages.sh installs it).
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RULE_FILE = REPO_ROOT / "k8s" / "base" / "monitoring" / "prometheusrule.yaml"
DEFAULT_TEST_FILE = REPO_ROOT / "k8s" / "base" / "monitoring" / "rules_test.yaml"
DEFAULT_DOCS = REPO_ROOT / "docs" / "operations.md"
RULES_FILE_NAME = "riskops.rules.yaml"  # what rules_test.yaml's rule_files names
RUNBOOK_BASE = "https://github.com/riskops/riskops/blob/main/docs/operations.md#"
REQUIRED_ANNOTATIONS = ("summary", "description", "runbook", "runbook_url")
SEVERITIES = ("page", "ticket")
# kube-prometheus-stack's default ruleSelector: a PrometheusRule without it is never loaded
REQUIRED_OBJECT_LABELS = {"release": "prometheus"}
OS_PACKAGE = "prometheus"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL expressions) as literal blocks, as a person would write them."""


_Dumper.add_representer(
    str,
    lambda dumper, s: dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None),
)


def _load_object(path: Path) -> dict:
    obj = yaml.safe_load(Path(path).read_text())
    if not isinstance(obj, dict) or obj.get("kind") != "PrometheusRule":
        raise ValueError(f"{path}: expected one PrometheusRule object, got {type(obj).__name__}")
    return obj


def load_rule_groups(path: Path | str = DEFAULT_RULE_FILE) -> dict:
    """The PrometheusRule's spec: ``{"groups": [...]}``, a plain Prometheus rules file's content."""
    spec = _load_object(Path(path)).get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("groups"), list):
        raise ValueError(f"{path}: the PrometheusRule has no spec.groups list")
    return spec


def write_rules_file(
    dest: Path | str, for_override: str | None = None, source: Path | str = DEFAULT_RULE_FILE
) -> Path:
    """Write the plain rules file for `source` to `dest` (its folder is created); returns `dest`.

    With `for_override` (e.g. "5s") every rule that has a `for:` gets that value instead; rules
    without one (they fire at once) are left as they are.
    """
    spec = copy.deepcopy(load_rule_groups(source))
    if for_override is not None:
        for group in spec["groups"]:
            for rule in group.get("rules", []):
                if "for" in rule:
                    rule["for"] = for_override
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.dump(spec, Dumper=_Dumper, sort_keys=False, width=1000))
    return dest


def _alert_rules(spec: dict) -> list[dict]:
    return [r for g in spec["groups"] for r in g.get("rules", []) if "alert" in r]


def alert_names(path: Path | str = DEFAULT_RULE_FILE) -> list[str]:
    """Distinct alert names in file order (an alert may have several rules, e.g. a page and a ticket)."""
    return list(dict.fromkeys(r["alert"] for r in _alert_rules(load_rule_groups(path))))


def _object_problems(obj: dict) -> list[str]:
    meta = obj.get("metadata") or {}
    problems = []
    if obj.get("apiVersion") != "monitoring.coreos.com/v1":
        problems.append(f"apiVersion is {obj.get('apiVersion')!r}, expected monitoring.coreos.com/v1")
    if "namespace" in meta:
        problems.append("metadata.namespace is set: leave it to kustomize")
    labels = meta.get("labels") or {}
    for key, value in REQUIRED_OBJECT_LABELS.items():
        if labels.get(key) != value:
            problems.append(
                f"metadata.labels.{key} must be {value!r} (Prometheus' ruleSelector), not {labels.get(key)!r}"
            )
    return problems


def _rule_problems(spec: dict) -> list[str]:
    """Severity and annotations of every alerting rule."""
    problems = []
    for rule in _alert_rules(spec):
        name = rule["alert"]
        severity = (rule.get("labels") or {}).get("severity")
        if severity not in SEVERITIES:
            problems.append(
                f"{name}: labels.severity is {severity!r}, expected one of {', '.join(SEVERITIES)}"
            )
        annotations = rule.get("annotations") or {}
        for key in REQUIRED_ANNOTATIONS:
            if not str(annotations.get(key, "")).strip():
                problems.append(f"{name}: annotation {key!r} is missing or empty")
        url = annotations.get("runbook_url")
        if url and url != RUNBOOK_BASE + name.lower():
            problems.append(f"{name}: runbook_url should be {RUNBOOK_BASE + name.lower()}, not {url}")
    return problems


def _doc_anchors(docs: Path) -> set[str]:
    """GitHub's anchors for the Markdown headings of `docs` (lower-cased, punctuation dropped)."""
    anchors = set()
    for line in docs.read_text().splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def _coverage(test_file: Path, names: list[str]) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """Problems, and per alert (firing cases, quiet cases) in the promtool unit tests."""
    doc = yaml.safe_load(test_file.read_text()) or {}
    problems = []
    if doc.get("rule_files") != [RULES_FILE_NAME]:
        problems.append(
            f"{test_file.name}: rule_files must be [{RULES_FILE_NAME}] (the file this tool extracts), "
            f"not {doc.get('rule_files')!r}"
        )
    counts = {name: [0, 0] for name in names}
    for test in doc.get("tests") or []:
        for case in test.get("alert_rule_test") or []:
            name = case.get("alertname")
            if name not in counts:
                problems.append(f"{test_file.name}: a case tests {name!r}, which is no alert of the rules")
                continue
            counts[name][0 if case.get("exp_alerts") else 1] += 1
    for name, (firing, quiet) in counts.items():
        if not firing:
            problems.append(
                f"{name}: no unit test case where it fires (exp_alerts with its labels/annotations)"
            )
        if not quiet:
            problems.append(
                f"{name}: no unit test case where it stays quiet (exp_alerts: [] close to firing)"
            )
    return problems, {k: (f, q) for k, (f, q) in counts.items()}


def _promtool(exe: str, args: list[str], what: str) -> list[str]:
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)
    if proc.returncode == 0:
        return []
    out = (proc.stdout + proc.stderr).strip()
    return [f"{what} failed (exit {proc.returncode}):\n{out[-4000:]}"]


def check(
    promtool: str = "promtool",
    rule_file: Path | str = DEFAULT_RULE_FILE,
    test_file: Path | str = DEFAULT_TEST_FILE,
    docs: Path | str = DEFAULT_DOCS,
    say: Callable[[str], None] = lambda _: None,
) -> list[str]:
    """Every problem of the alert rules and their unit tests (empty: all good); `say` gets progress lines."""
    rule_file, test_file, docs = Path(rule_file), Path(test_file), Path(docs)
    try:
        obj = _load_object(rule_file)
        spec = load_rule_groups(rule_file)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        return [f"cannot read the rules: {exc}"]
    problems = _object_problems(obj) + _rule_problems(spec)
    names = alert_names(rule_file)
    n_rules = sum(len(g.get("rules", [])) for g in spec["groups"])
    say(f"{rule_file}: {len(spec['groups'])} groups, {n_rules} rules, {len(names)} alerts")

    if docs.exists():
        missing = [n for n in names if n.lower() not in _doc_anchors(docs)]
        problems += [f"{n}: {docs.name} has no heading '{n}' (its runbook_url anchor)" for n in missing]
        say(f"runbook anchors: {len(names) - len(missing)}/{len(names)} found in {docs}")
    else:
        problems.append(f"{docs} does not exist: every alert's runbook_url points at a heading there")

    try:
        cover_problems, counts = _coverage(test_file, names)
    except (OSError, yaml.YAMLError) as exc:
        return problems + [f"cannot read the unit tests {test_file}: {exc}"]
    problems += cover_problems
    say(f"{test_file}: " + ", ".join(f"{n} {f} firing/{q} quiet" for n, (f, q) in counts.items()))

    exe = shutil.which(promtool)
    if exe is None:
        return problems + [
            f"promtool not found ({promtool!r}): install the OS package `{OS_PACKAGE}` "
            "(bash tools/install_os_packages.sh, or `make os-packages`)"
        ]
    with tempfile.TemporaryDirectory(prefix="riskops-rules-") as tmp:
        rules = write_rules_file(Path(tmp) / RULES_FILE_NAME, source=rule_file)
        tests = Path(tmp) / test_file.name
        shutil.copyfile(test_file, tests)
        found = _promtool(exe, ["check", "rules", str(rules)], "promtool check rules")
        say(f"promtool check rules: {'ok' if not found else 'FAILED'}")
        problems += found
        if not found:  # unit tests of rules that do not load only repeat the same error
            found = _promtool(exe, ["test", "rules", str(tests)], "promtool test rules")
            say(f"promtool test rules: {'ok' if not found else 'FAILED'}")
            problems += found
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULE_FILE, help="the PrometheusRule manifest")
    parser.add_argument("--tests", type=Path, default=DEFAULT_TEST_FILE, help="promtool unit tests")
    parser.add_argument("--promtool", default="promtool", help="promtool binary (default: from PATH)")
    parser.add_argument(
        "--write", type=Path, metavar="FILE", help="only write the plain rules file to FILE and exit"
    )
    parser.add_argument("--for-override", metavar="DURATION", help="with --write: every `for:` set to this")
    args = parser.parse_args(argv)
    if args.write:
        print(write_rules_file(args.write, args.for_override, source=args.rules))
        return 0
    problems = check(args.promtool, args.rules, args.tests, say=print)
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    print(f"alert rules: {len(problems)} problem(s)" if problems else "alert rules: all checks passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
