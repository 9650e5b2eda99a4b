"""The documentation builds without a warning, and the README's links lead somewhere.

``mkdocs build --strict`` fails on a broken link, a missing anchor, a page missing from the
navigation and a docstring the API reference cannot render, so CI catches them; it runs
here so that the README's one test command covers it.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_site_builds_strict(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, (
        "mkdocs build --strict failed (mkdocs, mkdocs-material and mkdocstrings come with "
        "pip install -r requirements-test.txt):\n" + done.stderr[-5000:])
    api = (tmp_path / "api" / "index.html").read_text()
    # EndpointSpec is imported lazily (beam_infer.__getattr__): the reference still has it.
    for name in ("RunInferencePerModel", "CreateModelHandler", "ModelSpec",
                 "write_warmup_requests", "strict_input_casts", "TFModelHandlerNumpy",
                 'id="beam_infer.EndpointSpec"', 'id="beam_infer.BearerToken"'):
        assert name in api, f"{name} is missing from the API reference"


def _nav_files(entries) -> list[str]:
    files = []
    for entry in entries:
        for value in entry.values():
            files += _nav_files(value) if isinstance(value, list) else [value]
    return files


def test_every_page_is_in_the_navigation_and_batch_scoring_keeps_its_slot():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text().replace("!!python", "#"))
    nav = _nav_files(config["nav"])
    pages = sorted(p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md"))
    assert sorted(nav) == pages
    assert {"Scheduled batch scoring": "batch_scoring.md"} in config["nav"][3]["Jobs"]


def test_readme_is_short_and_its_links_exist():
    assert len(README.encode()) < 10_000
    for target in LINK.findall(README):
        if target.startswith(("http://", "https://", "#")):
            continue
        path = target.split("#", 1)[0]
        assert (REPO / path).exists(), f"README links to {target}, which does not exist"


def test_readme_keeps_the_two_set_up_commands_and_ci_runs_the_test_one():
    commands = re.findall(r"```bash\n(.+?)\n```", README)
    assert commands[:2] == [
        "pip install -r requirements.txt -e . && python -m pipelines.keyed",
        "pip install -r requirements-test.txt -e . && python -m ruff check . && python -m pytest",
    ]
    ci = (REPO / ".ci" / "run").read_text().rstrip().replace("pip install -q ", "pip install ")
    assert ci.endswith(commands[1])


def test_the_sections_error_messages_point_at_are_still_there():
    for heading in ("## Trying the cloud paths locally", "### BigQuery against a local emulator"):
        assert heading in README
    cloud = (REPO / "docs" / "cloud-locally.md").read_text()
    for command in ("gcp-storage-emulator start", "python -m pipelines.emulators copy",
                    "gcloud beta emulators pubsub start", "python -m tests.emulators.bigquery"):
        assert command in cloud
