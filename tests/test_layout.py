"""Who imports whom: the library never imports the jobs, and no job imports another job.

Read from the source with ``ast`` (nothing is imported), so the rules hold for code paths
no test runs. A *job* is a module of ``pipelines/`` with a ``python -m pipelines.<job>``
entry point (an ``if __name__ == "__main__":`` block); every other module there is a
shared job helper (see ``pipelines/__init__.py``).
"""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "beam_infer"
JOBS_PACKAGE = ROOT / "pipelines"

#: The jobs, as ``pipelines/__init__.py`` and docs/jobs.md list them.
JOBS = frozenset({"basic", "batch_scoring", "branching", "cascade", "dead_letters",
                  "emulators", "keyed", "postprocess", "streaming"})


def _tree(path: pathlib.Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imported_modules(path: pathlib.Path, package: str) -> set[str]:
    """Every module ``path`` imports, absolute (``from pipelines import x`` -> ``pipelines.x``)."""
    found: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _has_main_block(path: pathlib.Path) -> bool:
    for node in _tree(path).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = [n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)]
            strings = [n.value for n in ast.walk(node.test) if isinstance(n, ast.Constant)]
            if names == ["__name__"] and strings == ["__main__"]:
                return True
    return False


def _is_pipelines(module: str) -> bool:
    return module == "pipelines" or module.startswith("pipelines.")


def test_the_library_never_imports_the_jobs_package():
    offenders = {}
    for path in sorted(LIBRARY.rglob("*.py")):
        package = ".".join(path.relative_to(ROOT).parent.parts)
        bad = sorted(m for m in _imported_modules(path, package) if _is_pipelines(m))
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert not offenders, (
        f"beam_infer imports the checkout's jobs: {offenders}. The jobs are not installed "
        "with the library (docs/packaging.md); move what the library needs into it.")


def test_the_library_names_a_job_module_only_where_beam_infer_score_launches_it():
    # beam-infer score runs pipelines.batch_scoring from a checkout by name, as python -m
    # does (beam_infer/_cli.py, _checkout_job); no other library code refers to a job.
    named = {}
    for path in sorted(LIBRARY.rglob("*.py")):
        strings = {node.value for node in ast.walk(_tree(path))
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)
                   and re.fullmatch(r"pipelines(\.\w+)+", node.value)}
        if strings:
            named[str(path.relative_to(ROOT))] = sorted(strings)
    assert named == {"beam_infer/_cli.py": ["pipelines.batch_scoring"]}


def test_the_jobs_are_the_modules_with_an_entry_point():
    modules = {path.stem for path in JOBS_PACKAGE.glob("*.py") if path.stem != "__init__"}
    assert modules >= JOBS
    assert {m for m in modules if _has_main_block(JOBS_PACKAGE / f"{m}.py")} == JOBS


def test_no_module_of_the_jobs_package_imports_a_job():
    # Jobs import beam_infer and the shared helpers; a helper importing a job would bring
    # one job into another through it, so helpers are held to the same rule.
    job_modules = {f"pipelines.{job}" for job in JOBS}
    offenders = {}
    for path in sorted(JOBS_PACKAGE.glob("*.py")):
        bad = sorted(_imported_modules(path, "pipelines") & job_modules
                     - {f"pipelines.{path.stem}"})
        if bad:
            offenders[path.stem] = bad
    assert not offenders, (
        f"modules of pipelines/ import jobs: {offenders}. Move what they share into a helper "
        "module (pipelines/jobs.py, formats.py, question_rows.py, ...).")


def test_the_scan_sees_every_spelling_of_an_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import pipelines.keyed\nfrom pipelines import basic as b\n"
                      "from . import streaming\nfrom .formats import WriteRows\n"
                      "def f():\n    import pipelines\n")
    assert _imported_modules(source, "pipelines") >= {
        "pipelines.keyed", "pipelines.basic", "pipelines.streaming", "pipelines.formats",
        "pipelines"}
