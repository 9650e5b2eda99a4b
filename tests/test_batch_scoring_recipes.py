"""The scheduling recipes of docs/batch_scoring.md: the cron line runs as written, the Airflow
DAG and the Flex Template pass only flags the job (or Beam) takes, and the in-pipeline
commit step survives a retried bundle."""

from __future__ import annotations

import ast
import datetime
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import batch_scoring, finish, run_report
from pipelines.templates import batch_scoring_flex
from tests.support import model_zoo

REPO = pathlib.Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "batch_scoring.md").read_text()
TEMPLATES = REPO / "pipelines" / "templates"


def _job_flags() -> set[str]:
    return {option.lstrip("-") for action in batch_scoring.build_parser()._actions
            for option in action.option_strings if option.startswith("--")} - {"help"}


def _beam_flags() -> set[str]:
    return set(PipelineOptions([]).get_all_options())


def test_every_flex_template_parameter_is_a_flag_of_the_job():
    metadata = json.loads((TEMPLATES / "batch_scoring_metadata.json").read_text())
    names = [p["name"] for p in metadata["parameters"]]
    assert len(names) == len(set(names))
    assert set(names) <= _job_flags(), set(names) - _job_flags()
    assert {"input", "input_table", "query", "model_path", "output", "output_table",
            "failed_output", "max_failure_rate", "run_date"} <= set(names)
    required = [p["name"] for p in metadata["parameters"] if not p["isOptional"]]
    assert required == ["model_path"]
    for parameter in metadata["parameters"]:
        assert parameter["label"] and parameter["helpText"]
        for regex in parameter.get("regexes", []):
            re.compile(regex)
    run_date = next(p for p in metadata["parameters"] if p["name"] == "run_date")
    assert re.fullmatch(run_date["regexes"][0], "2024-05-01")


def test_the_flex_image_runs_the_entry_point_that_commits_in_the_pipeline(monkeypatch):
    dockerfile = (TEMPLATES / "flex_template.Dockerfile").read_text()
    py_file = re.search(r"^ENV FLEX_TEMPLATE_PYTHON_PY_FILE=(\S+)$", dockerfile, re.M).group(1)
    # The root Dockerfile copies the repository's pipelines/ to /opt/beam_infer/pipelines.
    assert "WORKDIR /opt/beam_infer" in (REPO / "Dockerfile").read_text()
    assert (REPO / py_file.removeprefix("/opt/beam_infer/")).is_file()
    python = f"python{sys.version_info.major}{sys.version_info.minor}"
    assert f"dataflow-templates-base/{python}-template-launcher-base" in dockerfile
    seen = []
    monkeypatch.setattr(batch_scoring, "main", lambda argv, prog: seen.append(argv) or 0)
    assert batch_scoring_flex.main(["--input=gs://b/in.csv", "--commit=after_run"]) == 0
    assert seen == [["--input=gs://b/in.csv", "--commit=after_run", "--commit=in_pipeline"]]
    args, _ = batch_scoring.parse_args(seen[0])
    assert args.commit == "in_pipeline"  # the last one wins


def _dag_operator() -> ast.Call:
    tree = ast.parse((REPO / "docs" / "recipes" / "airflow_batch_scoring.py").read_text())
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "id", None) == "BeamRunPythonPipelineOperator"]
    assert len(calls) == 1
    return calls[0]


def test_the_airflow_dag_compiles_and_passes_only_flags_the_job_or_beam_take():
    source = (REPO / "docs" / "recipes" / "airflow_batch_scoring.py").read_text()
    compile(source, "airflow_batch_scoring.py", "exec")
    keywords = {k.arg: k.value for k in _dag_operator().keywords}
    assert ast.literal_eval(keywords["py_file"]) == "pipelines.batch_scoring"
    assert ast.literal_eval(keywords["py_options"]) == ["-m"]
    options = keywords["pipeline_options"]
    names = {ast.literal_eval(key) for key in options.keys}
    assert names <= _job_flags() | _beam_flags(), names - _job_flags() - _beam_flags()
    values = {ast.literal_eval(k): v for k, v in zip(options.keys, options.values, strict=True)}
    assert ast.literal_eval(values["run_date"]) == "{{ ds }}"
    assert "{{run_date}}" in ast.unparse(values["output"])  # {run_date} once formatted


def test_the_airflow_dag_loads_in_airflow_where_it_is_installed():
    pytest.importorskip("airflow.providers.apache.beam.operators.beam",
                        reason="Airflow and its Beam provider are not installed here")
    namespace: dict = {}
    exec(compile((REPO / "docs" / "recipes" / "airflow_batch_scoring.py").read_text(),
                 "dag", "exec"), namespace)
    assert namespace["dag"].dag_id == "beam_infer_batch_scoring"


def test_the_documented_cron_line_runs_and_commits_yesterdays_partition(tmp_path, zoo):
    (line,) = re.findall(r"```crontab\n(.+?)\n```", DOC, re.S)
    fields = line.split(None, 5)
    assert fields[:5] == ["15", "3", "*", "*", "*"]
    command = fields[5].replace("\\%", "%").replace("/srv/scoring", str(tmp_path))
    if shutil.which("beam-infer") is None:  # not pip-installed: the same entry point
        command = command.replace("beam-infer", f"{sys.executable} -m beam_infer", 1)
    yesterday = (datetime.datetime.now(datetime.UTC).date()
                 - datetime.timedelta(days=1)).isoformat()
    events = tmp_path / "data" / "events" / f"dt={yesterday}"
    events.mkdir(parents=True)
    (events / "part-0.jsonl").write_text('{"id": "a", "x": [1.0]}\n{"id": "b", "x": [2.0]}\n')
    model_zoo.keras3_export(tmp_path / "models" / "churn")
    (tmp_path / "logs").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    log = (tmp_path / "logs" / "score.log").read_text()
    assert done.returncode == 0, log[-3000:]
    assert "read 2, scored 2, failed 0" in log
    partition = tmp_path / "data" / "scores" / f"dt={yesterday}"
    manifest = json.loads((partition / "_part.manifest.json").read_text())
    assert (manifest["run_date"], manifest["counts"]["written"]) == (yesterday, 2)


def _plan(tmp_path, run_id: str) -> finish.CommitPlan:
    return finish.CommitPlan(
        run_id=run_id, run_date="2024-05-01", source="--input=x", input={}, model={},
        signature={}, columns={}, predictions=None, table=None, failures=None,
        manifest_path=str(tmp_path / "_part.manifest.json"), max_failure_rate=0.0,
        started_at="2024-05-01T00:00:00+00:00", started_epoch=0.0)


def test_a_retried_commit_step_does_not_commit_twice(tmp_path):
    counts = dict(inputs=1, convert_failed=0, scored=1, failed_by_stage={}, written_files=1,
                  written_table=0, load_jobs=[], copy_jobs=[])
    done = _plan(tmp_path, "r1")
    (tmp_path / "_part.manifest.json").write_text(json.dumps(
        {"run_id": "r1", "status": "succeeded", "exit_code": 0}))
    assert list(finish.CommitRunFn(done).process(None, **counts)) == [done.manifest_path]
    refused = _plan(tmp_path, "r2")
    (tmp_path / "_part.manifest.failed.json").write_text(json.dumps(
        {"run_id": "r2", "status": "failed", "exit_code": 3, "reason": "2 of 2 rows failed"}))
    with pytest.raises(run_report.TooManyFailuresError, match=r"^2 of 2 rows failed$"):
        list(finish.CommitRunFn(refused).process(None, **counts))
