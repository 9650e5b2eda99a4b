"""pipelines.batch_scoring end to end: every input and output format, counts of failures."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from pipelines import batch_scoring, models

SUMMARY = re.compile(r"read (\d+), scored (\d+), failed (\d+), elapsed [\d.]+ s, "
                     r"[\d.]+ elements/s")


def _jsonl(directory, prefix: str) -> list[dict]:
    return [json.loads(line) for path in sorted(directory.glob(prefix + "*"))
            for line in path.read_text().splitlines()]


def _counts(capsys) -> tuple[int, int, int]:
    match = SUMMARY.search(capsys.readouterr().out)
    assert match, "no summary line printed"
    return tuple(int(g) for g in match.groups())


def test_default_job_scores_the_bundled_questions_and_prints_a_summary(tmp_path, capsys):
    batch_scoring.run([f"--work_dir={tmp_path}"])
    assert _counts(capsys) == (4, 4, 0)
    outputs = sorted(r["output"]["output_0"][0] for r in _jsonl(tmp_path, "scores"))
    assert outputs == [525.0, 540.0, 5000.0, 5065.0]


def test_csv_with_keys_fails_only_the_rows_that_cannot_be_scored(tmp_path, zoo, capsys):
    source = tmp_path / "in.csv"
    source.write_text("id,x\na,1.5\nb,2\nc,oops\nd,4\n")
    # One batch holds all four rows: only the bad one fails, the others are scored.
    result = batch_scoring.run([
        f"--input={source}", f"--model_path={zoo.ten}", "--key_column=id",
        "--max_batch_size=64", f"--output={tmp_path}/out", f"--failed_output={tmp_path}/bad",
        "--max_failure_rate=0.25", f"--work_dir={tmp_path}", "--model_version=2"])
    assert _counts(capsys) == (4, 3, 1)
    summary = batch_scoring.summarize(result, 2.0)
    assert (summary.read, summary.scored, summary.failed) == (4, 3, 1)
    assert summary.elements_per_sec == 1.5
    rows = {r["key"]: r for r in _jsonl(tmp_path, "out")}
    assert {k: r["output"]["output_0"] for k, r in rows.items()} == {
        "a": [15.0], "b": [20.0], "d": [40.0]}
    assert rows["a"]["input"] == {"x": [1.5]} and rows["a"]["model_version"] == "2"
    (failure,) = _jsonl(tmp_path, "bad")
    assert "oops" in failure["element"] and failure["element"].startswith("('c', ")
    assert failure["stage"] == "validate"
    assert failure["error"] == (
        "InputError: feature 'x' holds bytes values (bytes_list); signature "
        "'serving_default' parses it as float (float, 1 value). Write it as "
        "tf.train.Feature(float_list=...).")


def test_feature_types_reject_bad_cells_before_the_model(tmp_path, zoo, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text('{"x": 1}\n{"x": "abc"}\n')
    batch_scoring.run([f"--input={source}", f"--model_path={zoo.five}",
                       "--feature_types=x:float", f"--output={tmp_path}/out",
                       f"--failed_output={tmp_path}/bad", "--max_failure_rate=0.5",
                       f"--work_dir={tmp_path}"])
    assert _counts(capsys) == (2, 1, 1)
    assert [r["output"] for r in _jsonl(tmp_path, "out")] == [{"output_0": [5.0]}]
    (failure,) = _jsonl(tmp_path, "bad")
    assert failure["stage"] == "convert"
    assert failure["error"].startswith("column 'x' holds 'abc', which cannot be a float feature")


def test_parquet_in_parquet_out(tmp_path, zoo, capsys):
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["p", "q"], "x": [2.0, 3.0]}), source)
    batch_scoring.run([f"--input={source}", f"--model_path={zoo.five}", "--key_column=id",
                       "--output_format=parquet", f"--output={tmp_path}/out",
                       f"--work_dir={tmp_path}"])
    assert _counts(capsys) == (2, 2, 0)
    (path,) = tmp_path.glob("out*.parquet")
    table = pq.read_table(path)
    assert table.schema == batch_scoring.PARQUET_SCHEMA
    rows = {r["key"]: json.loads(r["output"]) for r in table.to_pylist()}
    assert rows == {"p": {"output_0": [10.0]}, "q": {"output_0": [15.0]}}


def test_tfrecord_in_prediction_logs_out(tmp_path, zoo, capsys):
    source = models.write_examples(str(tmp_path / "in.tfrecord"), [1.0, 7.0])
    batch_scoring.run([f"--input={source}", f"--model_path={zoo.ten}",
                       "--output_format=tfrecord", f"--output={tmp_path}/logs",
                       f"--work_dir={tmp_path}"])
    assert _counts(capsys) == (2, 2, 0)
    (path,) = tmp_path.glob("logs*.tfrecord")
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(path))]
    assert sorted(log.predict_log.response.outputs["output_0"].float_val[0] for log in logs) \
        == [10.0, 70.0]


def test_key_column_on_tfrecord_input_fails_at_build(tmp_path, zoo):
    source = models.write_examples(str(tmp_path / "in.tfrecord"), [1.0])
    with pytest.raises(ValueError) as error:
        batch_scoring.run([f"--input={source}", f"--model_path={zoo.five}", "--key_column=id",
                           f"--work_dir={tmp_path}"])
    assert str(error.value) == (
        f"--key_column=id needs a table input (csv, jsonl, parquet); {source!r} is a "
        "TFRecord of Examples, which has no columns. Drop --key_column or convert the input.")


def test_unknown_input_extension_says_how_to_name_the_format(tmp_path, zoo):
    with pytest.raises(ValueError, match=r"cannot tell the format of '.*in\.txt' from its "
                                         r"extension; name the file \.csv, \.jsonl"):
        batch_scoring.run([f"--input={tmp_path}/in.txt", f"--model_path={zoo.five}",
                           f"--work_dir={tmp_path}"])
