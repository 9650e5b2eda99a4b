"""The seed's post-processing pattern: PredictionLog → plain rows ``(key, input, output)``.

With no flags it asks the x5 model the bundled maths questions and writes the answers as
JSON lines (``--format=csv`` for CSV); ``--predictions`` reads a TFRecord of
PredictionLogs instead (what ``pipelines.batch_scoring --output_format=tfrecord``
writes), and ``--output_table=PROJECT:DATASET.TABLE`` also writes BigQuery rows::

    python -m pipelines.postprocess
    python -m pipelines.postprocess --predictions=gs://b/logs*.tfrecord --format=csv \\
        --output=gs://b/rows --runner=DataflowRunner --project=P --region=R \\
        --temp_location=gs://b/tmp

The row conversion is the library's ``beam_infer.PredictionLogToRows``; the sinks
(``to_flat_row``: input/output as JSON text, one type per column, for CSV, BigQuery and
Parquet; ``format_row``: the seed's ``key is ... input is ... output is``; ``WriteRows``)
live in the shared helper module ``pipelines.formats``, which the other jobs use too, and
are also reachable here.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import apache_beam as beam
import tensorflow as tf
from apache_beam.typehints import typehints
from tensorflow_serving.apis import prediction_log_pb2

import beam_infer as bi
from pipelines import bigquery_preflight, jobs, model_flags, models
from pipelines.formats import (  # noqa: F401 - also reachable as pipelines.postprocess.<name>
    BIGQUERY_SCHEMA,
    CSV_COLUMNS,
    PARQUET_COLUMNS,
    ROW_FORMATS,
    WriteRows,
    csv_line,
    format_row,
    to_flat_row,
    write_to_bigquery,
)


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default=os.path.join("work", "postprocess"),
                        help="Where the demo model is built when --predictions is not given.")
    parser.add_argument("--predictions",
                        help="TFRecord pattern of PredictionLogs; default: score the bundled "
                             "questions with the x5 model.")
    model_flags.add_model_flags(parser, model_help="Model for the default input; default: y = 5x.")
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
        spec = model_flags.model_spec(args, lambda: models.five_model(args.work_dir))
        logs = (pipeline
                | "ReadQuestions" >> beam.Create(models.read_questions())
                | "CountIn" >> jobs.CountElements(jobs.ELEMENTS_IN)
                | "ToKeyedExamples" >> beam.MapTuple(
                    lambda key, value: (key.encode(), models.make_example(value))
                ).with_output_types(typehints.Tuple[bytes, tf.train.Example])
                | "RunInference" >> bi.RunInference(spec))
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
