"""The seed's post-processing pattern: PredictionLog → plain rows ``(key, input, output)``.

With no flags it asks the x5 model the bundled maths questions and writes the answers as
JSON lines (``--format=csv`` for CSV); ``--predictions`` reads a TFRecord of
PredictionLogs instead (what ``pipelines.batch_scoring --output_format=tfrecord``
writes), and ``--output_table=PROJECT:DATASET.TABLE`` also writes BigQuery rows::

    python -m pipelines.postprocess
    python -m pipelines.postprocess --predictions=gs://b/logs*.tfrecord --format=csv \\
        --output=gs://b/rows --runner=DataflowRunner --project=P --region=R \\
        --temp_location=gs://b/tmp

The row conversion is the library's ``beam_infer.PredictionLogToRows``; this module adds
the sinks: ``to_flat_row`` (input/output as JSON text, one type per column, for CSV,
BigQuery and Parquet), ``format_row`` (the seed's ``key is ... input is ... output is``)
and ``WriteRows``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
import tensorflow as tf
from apache_beam.typehints import typehints
from tensorflow_serving.apis import prediction_log_pb2

import beam_infer as bi
from pipelines import bigquery_preflight, jobs, models

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


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default=os.path.join("work", "postprocess"),
                        help="Where the demo model is built when --predictions is not given.")
    parser.add_argument("--predictions",
                        help="TFRecord pattern of PredictionLogs; default: score the bundled "
                             "questions with the x5 model.")
    parser.add_argument("--model_path", help="Model for the default input; default: y = 5x.")
    parser.add_argument("--format", default="jsonl", choices=ROW_FORMATS)
    parser.add_argument("--output", help="Output prefix; default: <work_dir>/rows.")
    parser.add_argument("--output_table", help="Also append rows to PROJECT:DATASET.TABLE.")
    parser.add_argument("--model_version", help="Written to rows whose log has no version.")
    return parser.parse_known_args(argv)


def build(pipeline: beam.Pipeline, args: argparse.Namespace) -> None:
    if args.predictions:
        logs = (pipeline
                | "ReadPredictionLogs" >> beam.io.ReadFromTFRecord(
                    args.predictions,
                    coder=beam.coders.ProtoCoder(prediction_log_pb2.PredictionLog))
                | "CountIn" >> jobs.CountElements(jobs.ELEMENTS_IN))
    else:
        os.makedirs(args.work_dir, exist_ok=True)
        model_path = args.model_path or models.five_model(args.work_dir)
        logs = (pipeline
                | "ReadQuestions" >> beam.Create(models.read_questions())
                | "CountIn" >> jobs.CountElements(jobs.ELEMENTS_IN)
                | "ToKeyedExamples" >> beam.MapTuple(
                    lambda key, value: (key.encode(), models.make_example(value))
                ).with_output_types(typehints.Tuple[bytes, tf.train.Example])
                | "RunInference" >> bi.RunInference(bi.ModelSpec(model_path=model_path)))
    rows = (logs
            | "ToRows" >> bi.PredictionLogToRows(model_version=args.model_version)
            | "CountOut" >> jobs.CountElements(jobs.ELEMENTS_OUT))
    _ = rows | "WriteRows" >> WriteRows(args.output or os.path.join(args.work_dir, "rows"),
                                        fmt=args.format)
    if args.output_table:
        write_to_bigquery(rows, args.output_table)


def run(argv: Sequence[str] | None = None, save_main_session: bool = True,
        test_pipeline: beam.Pipeline | None = None) -> beam.runners.runner.PipelineResult:
    args, pipeline_args = parse_args(argv)
    options = jobs.job_options(pipeline_args, save_main_session)
    bigquery_preflight.require_credentials(
        "pipelines.postprocess", ["--output_table"] if args.output_table else [], options,
        test_pipeline)
    # After the BigQuery check, whose message names the flags that need BigQuery.
    jobs.check_services(args, pipeline_args)
    return jobs.run_job(lambda pipeline: build(pipeline, args), options, test_pipeline,
                        job="pipelines.postprocess", outputs=[
                            args.output or os.path.join(args.work_dir, "rows"),
                            args.output_table])


if __name__ == "__main__":
    jobs.main(run)
