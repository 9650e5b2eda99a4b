"""pipelines.batch_scoring with BigQuery in and out, against local-bigquery
(``tests/emulators/bigquery.py``): Beam's BigQuery IO reads the input table or query and loads a
staging table; the commit replaces the run's table with one copy job (WRITE_TRUNCATE)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from google.cloud import bigquery

from pipelines import batch_scoring, run_report
from tests.emulators import bigquery as emulators

DATE = "2024-05-01"
pytestmark = pytest.mark.emulators


def _create(emulator: emulators.LocalBigQuery, dataset: str, name: str,
            fields: Sequence[bigquery.SchemaField], rows: Sequence[dict]) -> str:
    client = emulator.client()
    table = client.create_table(bigquery.Table(f"{emulator.project}.{dataset}.{name}", fields))
    if rows:
        assert client.insert_rows_json(table, list(rows)) == []
    return emulator.table(dataset, name)


def _features(emulator, dataset, rows: Sequence[dict]) -> str:
    return _create(emulator, dataset, "features", [
        bigquery.SchemaField("id", "STRING"), bigquery.SchemaField("x", "FLOAT64", "REPEATED"),
        bigquery.SchemaField("dt", "STRING")], rows)


def _rows(emulator, table: str) -> list[dict]:
    query = f"SELECT * FROM `{table.replace(':', '.')}` ORDER BY key"
    return [dict(row.items()) for row in emulator.client().query(query).result()]


def _tables(emulator, dataset: str) -> list[str]:
    return sorted(t.table_id for t in emulator.client().list_tables(dataset))


def _score(emulator, tmp_path, *flags: str) -> int:
    return batch_scoring.main([*flags, f"--run_date={DATE}", f"--work_dir={tmp_path}",
                               "--progress_secs=0", *emulator.pipeline_args()])


def test_a_tensor_model_scores_an_input_table_into_a_dated_table_and_reruns_replace(
        bigquery_beam, dataset, zoo, tmp_path):
    source = _features(bigquery_beam, dataset, [
        {"id": "a", "x": [1.0], "dt": DATE}, {"id": "b", "x": [2.5], "dt": DATE}])
    output = f"{bigquery_beam.project}:{dataset}.scores_{{run_date_nodash}}"
    flags = [f"--input_table={source}", "--key_column=id", f"--output_table={output}"]
    assert _score(bigquery_beam, tmp_path, *flags, f"--model_path={zoo.keras3_dense}") == 0
    table = bigquery_beam.table(dataset, "scores_20240501")
    fingerprint = run_report.fingerprint(zoo.keras3_dense)
    assert _rows(bigquery_beam, table) == [
        {"key": "a", "input": json.dumps({"x": [1.0]}), "output": json.dumps(
            {"output_0": [5.0]}), "model_version": None, "model_fingerprint": fingerprint},
        {"key": "b", "input": json.dumps({"x": [2.5]}), "output": json.dumps(
            {"output_0": [12.5]}), "model_version": None, "model_fingerprint": fingerprint}]
    fields = bigquery_beam.client().get_table(table.replace(":", ".")).schema
    assert ",".join(f"{f.name}:{f.field_type}" for f in fields) == batch_scoring.BIGQUERY_SCHEMA
    manifest = json.loads((tmp_path / f"_{dataset}.scores_20240501.manifest.json").read_text())
    assert manifest["outputs"] == {"table": {"table": table, "rows": 2,
                                             "write_disposition": "WRITE_TRUNCATE"}}
    assert manifest["input"] == {"table": source, "count": 2}

    # The same date again, scored by another model: the table holds this run's rows only.
    other = str(tmp_path / "ten")
    from tests.support import model_zoo

    model_zoo.keras3_export(other, factor=10.0)
    assert _score(bigquery_beam, tmp_path, *flags, f"--model_path={other}") == 0
    assert [(r["key"], json.loads(r["output"])) for r in _rows(bigquery_beam, table)] == [
        ("a", {"output_0": [10.0]}), ("b", {"output_0": [25.0]})]
    assert _tables(bigquery_beam, dataset) == ["features", "scores_20240501"]  # no staging


def test_a_query_with_the_run_date_feeds_an_example_model(bigquery_beam, dataset, zoo,
                                                          tmp_path):
    source = _create(bigquery_beam, dataset, "questions", [
        bigquery.SchemaField("key", "STRING"), bigquery.SchemaField("x", "FLOAT64"),
        bigquery.SchemaField("dt", "STRING")], [
        {"key": "a", "x": 1.0, "dt": DATE}, {"key": "b", "x": 2.0, "dt": "2024-04-30"},
        {"key": "c", "x": 3.0, "dt": DATE}])
    query = (f"SELECT key, x FROM `{source.replace(':', '.')}` WHERE dt = '{{run_date}}'")
    answers = bigquery_beam.table(dataset, "answers")
    assert _score(bigquery_beam, tmp_path, f"--query={query}", "--key_column=key",
                  f"--output_table={answers}", f"--model_path={zoo.five}",
                  f"--output={tmp_path}/files/part") == 0
    assert [(r["key"], json.loads(r["output"])["output_0"]) for r in
            _rows(bigquery_beam, answers)] == [("a", [5.0]), ("c", [15.0])]
    manifest = json.loads((tmp_path / "files" / "_part.manifest.json").read_text())
    assert manifest["input"]["query"].endswith(f"WHERE dt = '{DATE}'")
    assert manifest["outputs"]["table"]["rows"] == manifest["outputs"]["predictions"]["rows"] == 2


def test_a_failed_rerun_leaves_the_table_as_it_was_and_no_staging_table(
        bigquery_beam, dataset, zoo, tmp_path):
    output = bigquery_beam.table(dataset, "scores")
    good = _features(bigquery_beam, dataset, [{"id": "a", "x": [1.0], "dt": DATE}])
    assert _score(bigquery_beam, tmp_path, f"--input_table={good}", "--key_column=id",
                  f"--output_table={output}", f"--model_path={zoo.keras3_dense}") == 0
    before = _rows(bigquery_beam, output)
    bad = _create(bigquery_beam, dataset, "bad", [
        bigquery.SchemaField("id", "STRING"), bigquery.SchemaField("x", "FLOAT64", "REPEATED")],
        [{"id": "a", "x": [1.0, 2.0]}])  # two values for an input of shape [1]
    assert _score(bigquery_beam, tmp_path, f"--input_table={bad}", "--key_column=id",
                  f"--output_table={output}", f"--model_path={zoo.keras3_dense}") == 3
    assert _rows(bigquery_beam, output) == before
    assert _tables(bigquery_beam, dataset) == ["bad", "features", "scores"]


def test_an_input_table_without_the_signatures_column_fails_at_build(
        bigquery_beam, dataset, zoo, tmp_path, capsys):
    source = _create(bigquery_beam, dataset, "wrong", [bigquery.SchemaField("id", "STRING"),
                                                       bigquery.SchemaField("y", "FLOAT64")],
                     [{"id": "a", "y": 1.0}])
    assert _score(bigquery_beam, tmp_path, f"--input_table={source}", "--key_column=id",
                  f"--output_table={bigquery_beam.table(dataset, 'out')}",
                  f"--model_path={zoo.keras3_dense}") == 2
    assert capsys.readouterr().err == (
        f"python -m pipelines.batch_scoring: error: --input_table {source} has no column 'x' "
        "(for input x: float32[?,1]); its columns: id, y. Name columns after the signature's "
        "input aliases, or map them with --input_map ALIAS=COLUMN (and --key_column=COLUMN).\n")
    assert _tables(bigquery_beam, dataset) == ["wrong"]


def test_the_pipelines_last_step_commits_the_table_after_the_load(bigquery_beam, dataset, zoo,
                                                                  tmp_path):
    source = _features(bigquery_beam, dataset, [
        {"id": "a", "x": [1.0], "dt": DATE}, {"id": "b", "x": [3.0], "dt": DATE}])
    output = bigquery_beam.table(dataset, "scores")
    for _ in range(2):  # the rerun replaces the table
        assert _score(bigquery_beam, tmp_path, f"--input_table={source}", "--key_column=id",
                      f"--output_table={output}", f"--model_path={zoo.keras3_dense}",
                      "--commit=in_pipeline") == 0
    assert [(r["key"], json.loads(r["output"])) for r in _rows(bigquery_beam, output)] == [
        ("a", {"output_0": [5.0]}), ("b", {"output_0": [15.0]})]
    assert _tables(bigquery_beam, dataset) == ["features", "scores"]
