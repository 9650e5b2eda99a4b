"""The jobs' BigQuery paths against local-bigquery (``tests/emulators/bigquery.py``).

Real pipelines on the DirectRunner, scoring with a real ``y = 5x`` SavedModel. Each test gets its
own dataset. What the jobs wrote is read back from the emulator with google-cloud-bigquery.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.typehints import typehints
from google.cloud import bigquery

import beam_infer as bi
from pipelines import keyed, models, postprocess
from tests.emulators import bigquery as emulators
from tests.emulators import bigquery_venv

BUNDLED = [("first_question", 105.0), ("second_question", 108.0),
           ("third_question", 1000.0), ("fourth_question", 1013.0)]


@pytest.fixture(scope="module")
def five_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return models.build_multiplier_model(str(tmp_path_factory.mktemp("bq") / "five"), 5.0)


def _create(emulator: emulators.LocalBigQuery, dataset: str, name: str, schema: str,
            rows: Sequence[dict]) -> str:
    """Creates ``dataset.name`` with ``schema`` (``col:TYPE,...``) holding ``rows``."""
    client = emulator.client()
    fields = [bigquery.SchemaField(*field.split(":")) for field in schema.split(",")]
    table = client.create_table(bigquery.Table(f"{emulator.project}.{dataset}.{name}", fields))
    if rows:
        assert client.insert_rows_json(table, list(rows)) == []
    return emulator.table(dataset, name)


def _questions(emulator: emulators.LocalBigQuery, dataset: str,
               questions: Sequence[tuple[str, float]]) -> str:
    return _create(emulator, dataset, "questions", "key:STRING,value:FLOAT64",
                   [{"key": k, "value": v} for k, v in questions])


def _rows(emulator: emulators.LocalBigQuery, table: str) -> list[dict]:
    query = f"SELECT * FROM `{table.replace(':', '.')}` ORDER BY key"
    return [dict(row.items()) for row in emulator.client().query(query).result()]


def _schema(emulator: emulators.LocalBigQuery, table: str) -> str:
    fields = emulator.client().get_table(table.replace(":", ".")).schema
    return ",".join(f"{f.name}:{f.field_type}" for f in fields)


def _scored(questions: Sequence[tuple[str, float]], version: str | None = None) -> list[dict]:
    """The rows the x5 model's answers should become, with the documented schema."""
    return sorted(({"key": k, "input": json.dumps({"x": [v]}),
                    "output": json.dumps({"output_0": [5 * v]}), "model_version": version}
                   for k, v in questions), key=lambda r: r["key"])


@pytest.mark.emulators
def test_keyed_scores_an_input_table_into_an_output_table(bigquery_beam, dataset, five_model,
                                                          tmp_path):
    questions = [("a", 1.0), ("b", 2.5), ("c", -4.0)]
    answers = bigquery_beam.table(dataset, "answers")
    keyed.run([f"--input_table={_questions(bigquery_beam, dataset, questions)}",
               f"--output_table={answers}", f"--model_path={five_model}", "--model_version=1",
               f"--work_dir={tmp_path}", f"--output={tmp_path}/answers",
               *bigquery_beam.pipeline_args()])
    assert _rows(bigquery_beam, answers) == _scored(questions, "1")
    assert _schema(bigquery_beam, answers) == postprocess.BIGQUERY_SCHEMA
    assert sorted((tmp_path / "answers").read_text().splitlines()) == [
        "key is a input is [1.0] output is 5.0",
        "key is b input is [2.5] output is 12.5",
        "key is c input is [-4.0] output is -20.0",
    ]


@pytest.mark.emulators
def test_keyed_scores_the_rows_a_query_returns(bigquery_beam, dataset, five_model, tmp_path):
    table = _questions(bigquery_beam, dataset, [("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0)])
    answers = bigquery_beam.table(dataset, "answers")
    keyed.run([f"--query=SELECT key, value FROM `{table.replace(':', '.')}` WHERE value > 2",
               f"--output_table={answers}", f"--model_path={five_model}",
               f"--work_dir={tmp_path}", f"--output={tmp_path}/answers",
               *bigquery_beam.pipeline_args()])
    assert _rows(bigquery_beam, answers) == _scored([("c", 3.0), ("d", 4.0)])


@pytest.mark.emulators
def test_keyed_appends_the_bundled_answers_to_an_existing_table(bigquery_beam, dataset,
                                                                five_model, tmp_path):
    earlier = {"key": "earlier", "input": '{"x": [0.0]}', "output": '{"output_0": [0.0]}',
               "model_version": "0"}
    answers = _create(bigquery_beam, dataset, "answers", postprocess.BIGQUERY_SCHEMA, [earlier])
    keyed.run([f"--output_table={answers}", f"--model_path={five_model}",
               f"--work_dir={tmp_path}", f"--output={tmp_path}/answers",
               *bigquery_beam.pipeline_args()])
    assert _rows(bigquery_beam, answers) == sorted(
        [earlier, *_scored(BUNDLED)], key=lambda r: r["key"])


@pytest.mark.emulators
def test_postprocess_writes_the_rows_to_bigquery(bigquery_beam, dataset, five_model, tmp_path):
    answers = bigquery_beam.table(dataset, "rows")
    postprocess.run([f"--output_table={answers}", f"--model_path={five_model}",
                     "--model_version=7", f"--work_dir={tmp_path}", f"--output={tmp_path}/rows",
                     *bigquery_beam.pipeline_args()])
    assert _rows(bigquery_beam, answers) == _scored(BUNDLED, "7")
    assert _schema(bigquery_beam, answers) == postprocess.BIGQUERY_SCHEMA


@pytest.mark.emulators
def test_direct_read_and_streaming_inserts_reach_the_emulator(bigquery_beam, dataset,
                                                              five_model):
    # The jobs use EXPORT and FILE_LOADS; this covers the other two patched clients.
    table = _questions(bigquery_beam, dataset, [("a", 2.0), ("b", 8.0)])
    answers = bigquery_beam.table(dataset, "answers")
    with beam.Pipeline(options=PipelineOptions(bigquery_beam.pipeline_args())) as pipeline:
        _ = (pipeline
             | beam.io.ReadFromBigQuery(table=table,
                                        method=beam.io.ReadFromBigQuery.Method.DIRECT_READ)
             | beam.Map(keyed.keyed_example).with_output_types(
                 typehints.Tuple[bytes, tf.train.Example])
             | bi.RunInference(bi.ModelSpec(model_path=five_model))
             | bi.PredictionLogToRows()
             | beam.Map(postprocess.to_flat_row)
             | beam.io.WriteToBigQuery(
                 answers, schema=postprocess.BIGQUERY_SCHEMA,
                 method=beam.io.WriteToBigQuery.Method.STREAMING_INSERTS))
    assert _rows(bigquery_beam, answers) == _scored([("a", 2.0), ("b", 8.0)])


def test_beam_is_put_back_after_the_block():
    from apache_beam.internal.gcp import auth
    from apache_beam.io.gcp import bigquery as beam_bigquery
    from apache_beam.io.gcp import bigquery_tools

    from pipelines import bigquery_preflight

    def state() -> tuple:
        return (bigquery_tools.BigQueryWrapper.__dict__["_bigquery_client"],
                bigquery_tools.gcp_bigquery, beam_bigquery.bq_storage,
                auth._Credentials._credentials_init, auth._Credentials._credentials,
                bigquery_preflight.find_credentials)

    before = state()
    nowhere = emulators.LocalBigQuery("p", "http://127.0.0.1:9", "127.0.0.1:9",
                                      "http://127.0.0.1:9", "b")
    with emulators.beam_pointed_at(nowhere):
        during = state()
        assert bigquery_tools.gcp_bigquery.SchemaField is bigquery.SchemaField
    assert all(a is not b for a, b in zip(before[:3], during[:3], strict=True))
    assert state() == before


def test_a_missing_python_313_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.delenv(bigquery_venv.PYTHON313_ENV, raising=False)
    monkeypatch.setattr(bigquery_venv, "PYENV_PYTHON313", tmp_path / "3.13.0" / "python3.13")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(bigquery_venv.Python313NotFoundError) as error:
        bigquery_venv.find_python313()
    assert str(error.value) == (
        f"local-bigquery needs Python 3.13 and none was found; looked at "
        f"{tmp_path}/3.13.0/python3.13 (absent); python3.13 on PATH (absent). Install one "
        "(e.g. `pyenv install 3.13.0`) or set BEAM_INFER_PYTHON313=/path/to/python3.13.")
