"""How the jobs write what they score: rows, the seed's text lines, dead letters.

Shared job helpers (not a job): ``pipelines.keyed``, ``branching``, ``cascade``,
``postprocess``, ``basic``, ``dead_letters``, ``streaming`` and ``batch_scoring`` import
them from here, so no job imports another. Rows are what ``beam_infer.PredictionLogToRows``
gives; ``to_flat_row`` makes input/output JSON text (one type per column, for CSV,
BigQuery and Parquet), ``format_row`` prints the seed's ``key is ... input is ... output
is``, ``WriteRows`` writes JSON lines or CSV, ``PredictionProcessor`` is the seed's
``input is [...] output is [...]`` DoFn and ``dead_letter_json`` one JSON line per dead
letter.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

import beam_infer as bi

ROW_FORMATS = ("jsonl", "csv")
CSV_COLUMNS = ("key", "input", "output", "model_version")
# input and output are JSON text: one column type whatever the model's features are.
BIGQUERY_SCHEMA = "key:STRING,input:STRING,output:STRING,model_version:STRING"
PARQUET_COLUMNS = CSV_COLUMNS


def to_flat_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row from ``PredictionLogToRows`` with ``input`` and ``output`` as JSON text.

    Example:
        >>> to_flat_row({"key": "q1", "input": {"x": [105.0]},
        ...              "output": {"output_0": [525.0]}, "model_version": None})["output"]
        '{"output_0": [525.0]}'
    """
    return {
        "key": None if row["key"] is None else str(row["key"]),
        "input": json.dumps(row["input"], sort_keys=True),
        "output": json.dumps(row["output"], sort_keys=True),
        "model_version": row["model_version"],
    }


def csv_line(row: Mapping[str, Any]) -> str:
    """One CSV line (no newline) of a flat row, columns ``CSV_COLUMNS``."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(
        ["" if row[c] is None else row[c] for c in CSV_COLUMNS])
    return buffer.getvalue()


def _single(values: Any) -> Any:
    """A one-item mapping or list reduced to its item, as the seed prints answers."""
    while isinstance(values, dict) and len(values) == 1:
        values = next(iter(values.values()))
    return values


def format_row(row: Mapping[str, Any]) -> str:
    """The seed's line: ``key is first_question input is [105.0] output is 525.0``.

    A single input feature prints as its value list, a single output as its value.
    """
    output = _single(row["output"])
    if isinstance(output, list) and len(output) == 1:
        output = output[0]
    return f"key is {row['key']} input is {_single(row['input'])} output is {output}"


class WriteRows(beam.PTransform):
    """Writes rows from ``PredictionLogToRows`` as JSON lines or CSV (with a header).

    Args:
        output: Output path prefix on any Beam filesystem.
        fmt: ``"jsonl"`` or ``"csv"``.
        num_shards: Output files; 0 lets the runner decide.

    Example:
        >>> rows | WriteRows("gs://bucket/answers", fmt="csv")
    """

    def __init__(self, output: str, *, fmt: str, num_shards: int = 0):
        super().__init__()
        if fmt not in ROW_FORMATS:
            raise ValueError(f"WriteRows writes {', '.join(ROW_FORMATS)}; got {fmt!r}.")
        self._output, self._fmt, self._num_shards = output, fmt, num_shards

    def expand(self, rows: beam.PCollection) -> beam.pvalue.PDone:
        if self._fmt == "jsonl":
            lines = rows | "ToJson" >> beam.Map(lambda r: json.dumps(r, sort_keys=True))
            header = None
        else:
            lines = rows | "ToCsv" >> beam.Map(lambda r: csv_line(to_flat_row(r)))
            header = ",".join(CSV_COLUMNS)
        return lines | "WriteText" >> beam.io.WriteToText(
            self._output, file_name_suffix=f".{self._fmt}", header=header,
            num_shards=self._num_shards)


def write_to_bigquery(rows: beam.PCollection, table: str) -> Any:
    """Appends rows to a BigQuery table (created if needed) with ``BIGQUERY_SCHEMA``."""
    return (rows
            | "ToBigQueryRows" >> beam.Map(to_flat_row)
            | "WriteToBigQuery" >> beam.io.WriteToBigQuery(
                table, schema=BIGQUERY_SCHEMA,
                create_disposition=beam.io.BigQueryDisposition.CREATE_IF_NEEDED,
                write_disposition=beam.io.BigQueryDisposition.WRITE_APPEND))


class PredictionProcessor(beam.DoFn):
    """The seed's post-processing DoFn: ``input is [...] output is [...]``."""

    def process(self, element: prediction_log_pb2.PredictionLog) -> Iterator[str]:
        predict_log = element.predict_log
        input_value = tf.train.Example.FromString(
            predict_log.request.inputs["examples"].string_val[0])
        output_value = predict_log.response.outputs["output_0"].float_val
        yield (f"input is [{input_value.features.feature['x'].float_list.value}] "
               f"output is {output_value}")


def dead_letter_json(letter: bi.DeadLetter) -> str:
    """One JSON line per dead letter; the record is base64 so any bytes survive."""
    element = letter.element
    record = base64.b64encode(element).decode() if isinstance(element, bytes) else repr(element)
    return json.dumps({"stage": letter.stage.value, "error_type": letter.error_type,
                       "message": letter.message, "record_base64": record}, sort_keys=True)
