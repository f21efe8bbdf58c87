"""docs/architecture.md draws the layers from the import graph: the checked-in diagram is what
tools/architecture_diagram.py generates from the code now (`make architecture` redraws it), and
every function its walks name exists."""

from __future__ import annotations

import importlib
import re

import architecture_diagram as ad
import pytest


def test_the_checked_in_diagram_is_the_current_import_graph():
    doc = ad.DOC.read_text()
    assert ad.with_diagram(doc, ad.diagram()) == doc, "docs/architecture.md is stale: run `make architecture`"


def test_the_diagram_has_every_layer_and_arrows_only_between_its_nodes():
    text = ad.diagram()
    for layer, _ in ad.LAYERS:
        assert f"  subgraph {layer}\n" in text
    declared = {line.split("[")[0].strip() for line in text.splitlines() if '["' in line}
    assert {"cli", "pipelines", "components", "serving", "feature_repo", "riskops_training"} <= declared
    arrows = [line.split(" --> ") for line in text.splitlines() if " --> " in line]
    assert arrows and all(a.strip() in declared and b.strip() in declared for a, b in arrows)


def test_the_markers_are_required_once_and_in_order():
    doc = f"intro\n{ad.BEGIN}\nold\n{ad.END}\nafter\n"
    assert ad.with_diagram(doc, "new") == f"intro\n{ad.BEGIN}\nnew\n{ad.END}\nafter\n"
    for broken in ("no markers", f"{ad.END}\n{ad.BEGIN}", f"{ad.BEGIN}\n{ad.BEGIN}\n{ad.END}"):
        with pytest.raises(ValueError, match="marker"):
            ad.with_diagram(broken, "new")


def _resolves(dotted: str) -> bool:
    """Whether `package.module.name[.attr]` imports and resolves."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for name in parts[i:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


def test_every_function_the_walks_name_exists():
    walks = ad.DOC.read_text().split("## Three walks through the code", 1)[1]
    names = set(re.findall(r"`((?:riskops|serving|components|pipelines|cli)\.[A-Za-z0-9_.]+)`", walks))
    assert len(names) > 50
    assert [n for n in sorted(names) if not _resolves(n)] == []
