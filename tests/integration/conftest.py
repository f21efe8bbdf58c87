"""Fixtures of the integration tests: the real model server, and the files read from ../shared.

The model server is started one way for every module that talks to it over HTTP.

A home (synthetic history, Feast repo, tiny model as champion) is built once per session; each module
serves its own copy, so a module that changes state (policy, champion, online store) changes only its
own. A module asks for other server settings by overriding `server_settings`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.k8s import kserve_crd_schemas
from support.servers import Served, build_home, running_server

from riskops.settings import Paths, paths


@pytest.fixture(scope="session")
def built_home(tmp_path_factory) -> tuple[Paths, Path]:
    """The home every served copy starts from, and the champion's model folder (read-only)."""
    return build_home(tmp_path_factory.mktemp("built"))


@pytest.fixture(scope="module")
def served_home(tmp_path_factory, built_home) -> Paths:
    """This module's own copy of the built home."""
    root = tmp_path_factory.mktemp("served")
    shutil.copytree(built_home[0].root, root / "home")
    return paths(root / "home")


@pytest.fixture(scope="module")
def server_settings() -> tuple[str, ...]:
    """`--set` items for this module's server on top of `support.servers.BASE_SETTINGS`."""
    return ()


@pytest.fixture(scope="module")
def served(served_home, server_settings, built_home) -> Iterator[Served]:
    """`python -m serving` over this module's home, ready; stopped after the module's last test."""
    with running_server(served_home.root.parent, served_home, built_home[1], *server_settings) as server:
        yield server


@pytest.fixture(scope="session")
def kserve_crd() -> dict[str, dict]:
    """KServe's InferenceService CRD schema (../shared/k8s-schemas); missing: a failure naming it."""
    return kserve_crd_schemas()
