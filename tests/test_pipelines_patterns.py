"""The seed's keyed, branching, cascade and post-processing jobs end to end on DirectRunner."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import re
import subprocess
import sys

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

import beam_infer as bi
from pipelines import basic, branching, cascade, dead_letters, jobs, keyed, models, postprocess

REPO = pathlib.Path(__file__).resolve().parents[1]
KEYED_ANSWERS = [
    "key is first_question input is [105.0] output is 525.0",
    "key is second_question input is [108.0] output is 540.0",
    "key is third_question input is [1000.0] output is 5000.0",
    "key is fourth_question input is [1013.0] output is 5065.0",
]


def _lines(path) -> list[str]:
    return sorted(path.read_text().splitlines())


def _jsonl(directory, prefix: str) -> list[dict]:
    return [json.loads(line) for path in sorted(directory.glob(prefix + "*"))
            for line in path.read_text().splitlines()]


def test_keyed_job_answers_the_bundled_questions(tmp_path, capsys):
    keyed.run([f"--work_dir={tmp_path}"])
    assert _lines(tmp_path / "output") == sorted(KEYED_ANSWERS)
    printed = capsys.readouterr().out
    assert all(answer in printed for answer in KEYED_ANSWERS)
    assert (tmp_path / "five_model" / "saved_model.pb").exists()


def test_readme_run_command_prints_the_four_answers_and_a_summary_quietly(tmp_path):
    # `python -m pipelines.keyed` as README runs it: a fresh directory, no flags, and no
    # TF_CPP_MIN_LOG_LEVEL of the user's: TensorFlow's and Beam's start-up lines stay quiet.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-m", "pipelines.keyed"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(line for line in done.stdout.splitlines() if line.startswith("key is ")) \
        == sorted(KEYED_ANSWERS)
    assert (tmp_path / "work" / "keyed" / "output").exists()
    *_, summary = done.stdout.splitlines()
    assert re.fullmatch(r"pipelines\.keyed: 4 in, 4 out, 0 failed, [\d.]+ s; outputs: "
                        r"work/keyed/output", summary)
    assert done.stderr == ""


def test_a_failing_job_ends_in_one_error_line_and_verbose_shows_the_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    command = [sys.executable, "-m", "pipelines.keyed", f"--model_path={tmp_path}/nope",
               f"--work_dir={tmp_path}"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 1
    assert done.stderr == (
        f"pipelines.keyed: error: ModelPathError: model path '{tmp_path}/nope' does not "
        f"exist: SavedModel file does not exist at: {tmp_path}/nope/"
        "{saved_model.pbtxt|saved_model.pb}. Point model_path at a SavedModel directory (the "
        "folder that holds saved_model.pb and variables/). (rerun with --verbose for the "
        "traceback)\n")
    verbose = subprocess.run([*command, "--verbose"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300, check=False)
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr
    assert verbose.stderr.endswith(done.stderr)


def test_job_error_lines_cut_beams_step_names_and_give_a_hint():
    error = ValueError("row 'a' is not a number [while running 'ToKeyedExamples']")
    assert jobs.error_line("pipelines.keyed", error) == (
        "pipelines.keyed: error: ValueError: row 'a' is not a number (check the job's flags "
        "and input (--help lists the flags); rerun with --verbose for the traceback)")
    assert jobs.error_line("pipelines.basic", FileNotFoundError("no /x")).endswith(
        "(check the path and that this machine can read it; rerun with --verbose for the "
        "traceback)")


@pytest.mark.parametrize(("job", "argv", "summary"), [
    (basic, [], r"pipelines\.basic: 4 in, 4 out, 0 failed, [\d.]+ s; outputs: .*/output"),
    (branching, [], r"pipelines\.branching: 4 in, 8 out, 0 failed, [\d.]+ s; outputs: "
                    r".*/output, .*/rows"),
    (cascade, [], r"pipelines\.cascade: 4 in, 4 out, 0 failed, [\d.]+ s; outputs: "
                  r".*/output, .*/rows"),
    (postprocess, [], r"pipelines\.postprocess: 4 in, 4 out, 0 failed, [\d.]+ s; "
                      r"outputs: .*/rows"),
    (dead_letters, [], r"pipelines\.dead_letters: 8 in, 4 out, 4 failed, [\d.]+ s; "
                       r"outputs: .*/output\.predictions, .*/output\.dead_letters"),
])
def test_every_job_closes_with_one_summary_line(tmp_path, capsys, job, argv, summary):
    job.run([f"--work_dir={tmp_path}", *argv])
    *_, last = capsys.readouterr().out.splitlines()
    assert re.fullmatch(summary, last), last


def test_keyed_job_reads_json_lines_and_a_given_model(tmp_path, zoo):
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"key": "a", "value": 2}\n{"key": "b", "value": 3.5}\n')
    keyed.run([f"--work_dir={tmp_path}", f"--input={questions}", f"--model_path={zoo.ten}",
               f"--output={tmp_path}/answers"])
    assert _lines(tmp_path / "answers") == [
        "key is a input is [2.0] output is 20.0",
        "key is b input is [3.5] output is 35.0",
    ]
    assert not (tmp_path / "five_model").exists()


def test_keyed_example_converts_a_bigquery_row():
    key, example = keyed.keyed_example({"key": "first_question", "value": 105.0})
    assert key == b"first_question"
    assert example == models.make_example(105.0)
    assert keyed.keyed_example({"key": b"raw", "value": "7"})[0] == b"raw"


def test_keyed_example_says_which_column_is_missing():
    with pytest.raises(ValueError) as error:
        keyed.keyed_example({"key": "q", "amount": 1.0})
    assert str(error.value) == (
        "a question row needs columns 'key' and 'value'; 'value' missing or empty in "
        "{'key': 'q', 'amount': 1.0}. Select them in --query or rename the table's columns.")
    with pytest.raises(ValueError, match="question 'q' has value 'abc', which is not a number"):
        keyed.keyed_example({"key": "q", "value": "abc"})


def _labels(pipeline: beam.Pipeline) -> set[str]:
    return {t.unique_name for t in pipeline.to_runner_api().components.transforms.values()}


@pytest.mark.parametrize("source", ["--input_table=proj:maths.maths_problems_1",
                                    "--query=SELECT key, value FROM maths.maths_problems_1"])
def test_keyed_graph_builds_with_bigquery_flags(tmp_path, zoo, source):
    # BigQuery cannot be reached here: build the graph (no run) and check its steps.
    args, _ = keyed.parse_args([source, "--output_table=proj:maths.answers",
                                f"--model_path={zoo.five}", f"--work_dir={tmp_path}"])
    pipeline = beam.Pipeline(options=PipelineOptions(
        ["--project=proj", "--temp_location=gs://bucket/tmp"]))
    keyed.build(pipeline, args)
    labels = _labels(pipeline)
    assert {"ReadQuestions/ReadFromBigQuery", "ToKeyedExamples", "RunInference",
            "ToRows", "ToBigQueryRows", "WriteToBigQuery"} <= labels
    assert "ReadQuestions/ReadFile" not in labels


def test_keyed_rejects_a_malformed_table_name_at_build(tmp_path, zoo):
    args, _ = keyed.parse_args(["--output_table=answers", f"--model_path={zoo.five}",
                                f"--work_dir={tmp_path}"])
    with pytest.raises(ValueError) as error:
        keyed.build(beam.Pipeline(), args)
    assert str(error.value) == (
        "--output_table must be PROJECT:DATASET.TABLE (or DATASET.TABLE); got 'answers'. "
        "Example: --output_table=my-project:maths.maths_problems_1")


def test_bigquery_rows_match_the_schema():
    row = {"key": "q", "input": {"x": [1.0]}, "output": {"output_0": [5.0]},
           "model_version": "1"}
    flat = postprocess.to_flat_row(row)
    schema_fields = [f.split(":")[0] for f in postprocess.BIGQUERY_SCHEMA.split(",")]
    assert list(flat) == schema_fields
    assert flat == {"key": "q", "input": '{"x": [1.0]}', "output": '{"output_0": [5.0]}',
                    "model_version": "1"}
    assert all(isinstance(v, str) for v in flat.values())


def test_branching_job_tags_each_answer_with_its_model(tmp_path):
    branching.run([f"--work_dir={tmp_path}"])
    lines = _lines(tmp_path / "output")
    assert len(lines) == 8
    assert "model is x5 key is third_question input is [1000.0] output is 5000.0" in lines
    assert "model is x10 key is third_question input is [1000.0] output is 10000.0" in lines
    rows = _jsonl(tmp_path, "rows")
    answers = {(r["model"], r["key"]): r["output"]["output_0"][0] for r in rows}
    questions = dict(models.read_questions())
    assert answers == {**{("x5", k): 5 * v for k, v in questions.items()},
                       **{("x10", k): 10 * v for k, v in questions.items()}}


def test_cascade_job_feeds_the_first_answer_to_the_second_model(tmp_path):
    cascade.run([f"--work_dir={tmp_path}"])
    assert "key is first_question original input is 105.0 input is [525.0] output is 5250.0" \
        in _lines(tmp_path / "output")
    rows = {r["key"]: r for r in _jsonl(tmp_path, "rows")}
    for key, value in models.read_questions():
        assert rows[key]["original_input"] == value
        assert rows[key]["input"] == {"x": [5 * value]}
        assert rows[key]["output"] == {"output_0": [50 * value]}


def test_postprocess_job_writes_json_lines_and_csv(tmp_path):
    postprocess.run([f"--work_dir={tmp_path}", "--model_version=1"])
    rows = sorted(_jsonl(tmp_path, "rows"), key=lambda r: r["input"]["x"])
    assert [(r["key"], r["output"]["output_0"], r["model_version"]) for r in rows] == [
        ("first_question", [525.0], "1"), ("second_question", [540.0], "1"),
        ("third_question", [5000.0], "1"), ("fourth_question", [5065.0], "1")]

    postprocess.run([f"--work_dir={tmp_path}", "--format=csv", f"--output={tmp_path}/table"])
    (path,) = tmp_path.glob("table*.csv")
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(postprocess.CSV_COLUMNS)
    by_key = {r["key"]: r for r in table}
    assert json.loads(by_key["fourth_question"]["output"]) == {"output_0": [5065.0]}
    assert json.loads(by_key["fourth_question"]["input"]) == {"x": [1013.0]}
    assert by_key["fourth_question"]["model_version"] == ""


def test_postprocess_job_reads_prediction_logs_written_by_another_job(tmp_path, zoo):
    handler = bi.SavedModelHandler(bi.ModelSpec(model_path=zoo.ten))
    examples = [models.make_example(v) for v in (1.0, 2.0)]
    with tf.io.TFRecordWriter(str(tmp_path / "logs.tfrecord")) as writer:
        for log in handler.run_inference(examples, handler.load_model()):
            writer.write(log.SerializeToString())
    postprocess.run([f"--predictions={tmp_path}/logs.tfrecord", f"--output={tmp_path}/rows",
                     f"--work_dir={tmp_path}"])
    rows = sorted(_jsonl(tmp_path, "rows"), key=lambda r: r["input"]["x"])
    assert [(r["key"], r["input"], r["output"]) for r in rows] == [
        (None, {"x": [1.0]}, {"output_0": [10.0]}), (None, {"x": [2.0]}, {"output_0": [20.0]})]
    assert not (tmp_path / "five_model").exists()
