"""pipelines.batch_scoring with any model: tensor signatures, several inputs, every input
format, per-row errors; the numbers are those of per-element ``bi.RunInference``."""

from __future__ import annotations

import json

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

import beam_infer as bi
from pipelines import batch_scoring, run_report
from tests.support.beam_helpers import run_collect

QUIET = ["--progress_secs=0"]


def _jsonl(directory, prefix: str) -> list[dict]:
    return [json.loads(line) for path in sorted(directory.glob(prefix + "*.jsonl"))
            for line in path.read_text().splitlines()]


def _per_element(model_path: str, elements: list, tmp_path) -> dict:
    """What per-element ``bi.RunInference`` gives each keyed element: ``{key: output}``."""
    spec = bi.ModelSpec(model_path=model_path)
    outputs, _ = run_collect(lambda p: {"rows": (
        p | beam.Create(elements) | bi.RunInference(spec) | bi.PredictionLogToRows())},
        str(tmp_path / "per_element"))
    return {row["key"]: row["output"] for row in outputs["rows"]}


def test_keras3_export_from_json_lines_matches_per_element_run_inference(tmp_path, zoo):
    values = {f"r{i}": [0.37 * i - 1.5] for i in range(12)}
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": k, "x": v, "note": "extra column"}) + "\n"
                              for k, v in values.items()))
    assert batch_scoring.main([
        f"--input={source}", f"--model_path={zoo.keras3_dense}", "--key_column=id",
        "--max_batch_size=5", f"--output={tmp_path}/out", f"--work_dir={tmp_path}",
        *QUIET]) == 0
    rows = {r["key"]: r for r in _jsonl(tmp_path, "out")}
    expected = _per_element(zoo.keras3_dense, [(k, {"x": v}) for k, v in values.items()],
                            tmp_path)
    assert {k: r["output"] for k, r in rows.items()} == expected
    assert expected["r2"] == {"output_0": [5 * (tf.constant(0.37 * 2 - 1.5).numpy())]}
    assert rows["r0"]["input"] == {"x": [-1.5]}
    fingerprint = run_report.fingerprint(zoo.keras3_dense)
    assert {r["model_fingerprint"] for r in rows.values()} == {fingerprint}


def test_two_input_model_from_parquet_matches_per_element_run_inference(tmp_path, zoo):
    ids = [f"p{i}" for i in range(9)]
    table = pa.table({
        "id": ids,
        "x": [[0.5 * i, 1.0 - i] for i in range(9)],
        "count": [i % 4 for i in range(9)],
        "label": [f"item-{i}" for i in range(9)],
    })
    source = tmp_path / "in.parquet"
    pq.write_table(table, source)
    assert batch_scoring.main([
        f"--input={source}", f"--model_path={zoo.tensors}", "--key_column=id",
        "--output_format=parquet", f"--output={tmp_path}/out", f"--work_dir={tmp_path}",
        "--model_version=7", *QUIET]) == 0
    (path,) = tmp_path.glob("out-*.parquet")
    written = pq.read_table(path)
    assert written.schema == batch_scoring.PARQUET_SCHEMA
    rows = {r["key"]: r for r in written.to_pylist()}
    elements = [(r["id"], {"x": r["x"], "count": r["count"], "label": r["label"]})
                for r in table.to_pylist()]
    expected = _per_element(zoo.tensors, elements, tmp_path)
    assert {k: json.loads(r["output"]) for k, r in rows.items()} == expected
    assert expected["p3"] == {"doubled": [3.0, -4.0], "shout": "ITEM-3",
                              "total": 5 * (1.5 - 2.0) * 3}
    assert {r["model_version"] for r in rows.values()} == {"7"}
    assert {r["model_fingerprint"] for r in rows.values()} == {
        run_report.fingerprint(zoo.tensors)}


def test_csv_columns_feed_tensor_inputs_and_bad_cells_fail_alone(tmp_path, zoo):
    source = tmp_path / "in.csv"
    source.write_text('id,features,count,label\na,"[1, 2]",3,x\nb,oops,1,y\nc,"[0.5, 0.5]",2,z\n')
    assert batch_scoring.main([
        f"--input={source}", f"--model_path={zoo.tensors}", "--key_column=id",
        "--input_map=x=features", f"--output={tmp_path}/out", f"--failed_output={tmp_path}/bad",
        "--max_failure_rate=0.5", f"--work_dir={tmp_path}", *QUIET]) == 0
    rows = {r["key"]: r["output"]["total"] for r in _jsonl(tmp_path, "out")}
    assert rows == {"a": 45.0, "c": 10.0}
    (failure,) = _jsonl(tmp_path, "bad")
    assert failure == {
        "key": "b", "element": "b,oops,1,y", "stage": "convert",
        "error": "column 'features' holds the text 'oops', which is not a JSON list; input "
                 "'x' of signature 'serving_default' expects a list of 2 float32 values "
                 "(x: float32[?,2]), written in a CSV cell as JSON, e.g. \"[1.0, 2.0]\"."}


def test_tfrecord_examples_feed_a_tensor_signature_by_feature_name(tmp_path, zoo):
    from pipelines import models

    source = models.write_examples(str(tmp_path / "in.tfrecord"), [1.0, 2.0, 3.0])
    assert batch_scoring.main([f"--input={source}", f"--model_path={zoo.keras3_dense}",
                               f"--output={tmp_path}/out", f"--work_dir={tmp_path}",
                               *QUIET]) == 0
    assert sorted(r["output"]["output_0"][0] for r in _jsonl(tmp_path, "out")) == [
        5.0, 10.0, 15.0]


def test_lines_that_are_not_json_objects_fail_one_by_one(tmp_path, zoo):
    source = tmp_path / "in.jsonl"
    source.write_text('{"x": [1.0]}\n{"x": [2.0\n[3.0]\n\n{"x": [4.0]}\n')
    assert batch_scoring.main([
        f"--input={source}", f"--model_path={zoo.keras3_dense}", f"--output={tmp_path}/out",
        f"--failed_output={tmp_path}/bad", "--max_failure_rate=0.5",
        f"--work_dir={tmp_path}", *QUIET]) == 0
    assert sorted(r["output"]["output_0"][0] for r in _jsonl(tmp_path, "out")) == [5.0, 20.0]
    failures = sorted(_jsonl(tmp_path, "bad"), key=lambda f: f["element"])
    assert [(f["element"], f["stage"]) for f in failures] == [
        ("[3.0]", "convert"), ('{"x": [2.0', "convert")]
    assert failures[0]["error"].startswith("the record is a list, not an object of columns")
    assert failures[1]["error"].startswith("the line is not JSON (Expecting ")


def test_a_column_the_signature_needs_is_checked_when_the_pipeline_is_built(tmp_path, zoo,
                                                                            capsys):
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["a"], "x": [[1.0, 2.0]], "count": [1]}), source)
    assert batch_scoring.main([f"--input={source}", f"--model_path={zoo.tensors}",
                               "--key_column=id", f"--output={tmp_path}/out",
                               f"--work_dir={tmp_path}", *QUIET]) == 2
    assert capsys.readouterr().err == (
        f"python -m pipelines.batch_scoring: error: --input {source} has no column 'label' "
        "(for input label: string[?]); its columns: id, x, count. Name columns after the "
        "signature's input aliases, or map them with --input_map ALIAS=COLUMN (and "
        "--key_column=COLUMN).\n")
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob("_*"))


def test_variable_length_inputs_are_padded_when_asked(tmp_path, zoo):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "tokens": [1, 2, 3]}\n{"id": "b", "tokens": [4]}\n')
    assert batch_scoring.main([
        f"--input={source}", f"--model_path={zoo.tokens}", "--key_column=id",
        "--pad_variable_length_inputs", "--max_batch_size=8", f"--output={tmp_path}/out",
        f"--work_dir={tmp_path}", *QUIET]) == 0
    rows = {r["key"]: r for r in _jsonl(tmp_path, "out")}
    assert {k: (r["output"]["total"], r["output"]["length"]) for k, r in rows.items()} == {
        "a": (6, 3), "b": (4, 1)}
    assert rows["b"]["input"] == {"tokens": [4]}  # the row's own value, unpadded
