"""The library's modules keep to their own names: no module reaches into another's privates.

A private name (``_x``) is a module's own business; another module that needs it asks for
a public one instead, so a change inside one module cannot silently break another.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "beam_infer"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _reaches(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text())
    modules: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("beam_infer"):
            for alias in node.names:
                is_module = (PACKAGE.joinpath(*node.module.split(".")[1:], f"{alias.name}.py")
                             .exists() or PACKAGE.joinpath(*node.module.split(".")[1:],
                                                           alias.name).is_dir())
                if is_module:
                    modules.add(alias.asname or alias.name)
                elif _private(alias.name):
                    found.append(f"from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in modules and _private(node.attr):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_library_module_uses_another_modules_private_names():
    reaches = {str(path.relative_to(ROOT)): found for path in sorted(PACKAGE.rglob("*.py"))
               if (found := _reaches(path))}
    assert reaches == {}
