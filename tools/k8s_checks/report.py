"""The validation report: every check that ran and every problem found (where: what)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Report:
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    isvc_schema_source: str | None = None
    rendered: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def check(self, line: str) -> None:
        self.checked.append(line)

    def problem(self, where: str, msg: str) -> None:
        self.problems.append(f"{where}: {msg}")


def object_id(obj: dict) -> str:
    md = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')}/{md.get('name', '?')}"
