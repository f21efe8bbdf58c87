"""A file-based model registry: immutable numbered versions plus movable aliases.

Layout under the registry root::

    <root>/<model-name>/v0001/            a copy of the trained model folder (weights, config, ...)
    <root>/<model-name>/v0001/meta.json   metrics, tags, creation time (written last)
    <root>/<model-name>/aliases.json      {"champion": "v0003", "challenger": "v0004"}

Versions are written to a temporary folder and renamed into place, and aliases.json is replaced
atomically, so a reader (the model server polling for a new champion) never sees a half-written
version. A lock file serialises writers (two pipeline runs registering at once).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from riskops.settings import MODEL_NAME

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    path: Path
    created_at: str
    metrics: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)

    @property
    def number(self) -> int:
        return int(self.version.lstrip("v"))


class RegistryError(LookupError):
    pass


class ModelRegistry:
    def __init__(self, root: Path | str, name: str = MODEL_NAME) -> None:
        self.root = Path(root)
        self.name = name
        self.model_root = self.root / name

    # -- writing ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.model_root.mkdir(parents=True, exist_ok=True)
        with open(self.model_root / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def register(
        self, model_dir: Path | str, metrics: dict | None = None, tags: dict | None = None
    ) -> ModelVersion:
        """Copy a trained model folder in as the next version and return it."""
        src = Path(model_dir)
        if not src.is_dir():
            raise RegistryError(f"model folder not found: {src}")
        with self._lock():
            number = max((v.number for v in self.list_versions()), default=0) + 1
            version = f"v{number:04d}"
            tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.model_root))
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            meta = {
                "name": self.name,
                "version": version,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "metrics": metrics or {},
                "tags": tags or {},
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
            os.rename(tmp, self.model_root / version)
        return self.get(version)

    def set_alias(self, alias: str, version: str) -> None:
        self.get(version)  # must exist
        with self._lock():
            aliases = self.aliases()
            aliases[alias] = version
            self._write_aliases(aliases)

    def delete_alias(self, alias: str) -> None:
        with self._lock():
            aliases = self.aliases()
            aliases.pop(alias, None)
            self._write_aliases(aliases)

    def _write_aliases(self, aliases: dict[str, str]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".aliases-", dir=self.model_root)
        with os.fdopen(fd, "w") as fh:
            json.dump(aliases, fh, indent=2, sort_keys=True)
        os.replace(tmp, self.model_root / "aliases.json")

    # -- reading ----------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        p = self.model_root / "aliases.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def list_versions(self) -> list[ModelVersion]:
        if not self.model_root.exists():
            return []
        versions = []
        for d in sorted(self.model_root.glob("v[0-9]*")):
            if (d / "meta.json").exists():
                versions.append(self._read(d))
        return versions

    def get(self, version: str) -> ModelVersion:
        d = self.model_root / version
        if not (d / "meta.json").exists():
            known = ", ".join(v.version for v in self.list_versions()) or "none"
            raise RegistryError(f"{self.name} has no version {version!r} (known: {known})")
        return self._read(d)

    def by_alias(self, alias: str) -> ModelVersion | None:
        version = self.aliases().get(alias)
        return self.get(version) if version else None

    def champion(self) -> ModelVersion | None:
        return self.by_alias(CHAMPION)

    def resolve(self, ref: str | None) -> ModelVersion:
        """'v0003', an alias such as 'champion', or None for the champion."""
        ref = ref or CHAMPION
        if ref.startswith("v") and ref[1:].isdigit():
            return self.get(ref)
        mv = self.by_alias(ref)
        if mv is None:
            raise RegistryError(
                f"{self.name} has no {ref!r} model in {self.root}; train one with `riskops pipeline run`"
            )
        return mv

    def _read(self, d: Path) -> ModelVersion:
        meta = json.loads((d / "meta.json").read_text())
        return ModelVersion(
            name=meta["name"],
            version=meta["version"],
            path=d,
            created_at=meta["created_at"],
            metrics=meta.get("metrics", {}),
            tags=meta.get("tags", {}),
        )
