"""The metrics table in docs/metrics.md is the one in beam_infer/_metrics.py."""

from __future__ import annotations

import ast
import pathlib
import re

from beam_infer import _metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _documented() -> dict[str, tuple[str, str]]:
    rows = re.findall(r"^\| `([^`]+)` \| (\w+) \| (.+?) \|$",
                      (ROOT / "docs" / "metrics.md").read_text(), flags=re.MULTILINE)
    return {name: (kind, meaning) for name, kind, meaning in rows}


def test_every_metric_is_documented_with_its_kind_and_meaning():
    assert _documented() == {**_metrics.BEAM_METRICS, **_metrics.METRICS}


def test_only_the_metrics_module_updates_metrics():
    """Metric names live in one module: no other library module calls Beam's Metrics."""
    for path in sorted((ROOT / "beam_infer").rglob("*.py")):
        if path.name == "_metrics.py":
            continue
        tree = ast.parse(path.read_text())
        names = {node.attr for node in ast.walk(tree)
                 if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                 and node.value.id == "Metrics"}
        assert not names, f"{path.relative_to(ROOT)} updates metrics itself: {names}"
