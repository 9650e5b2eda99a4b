"""The seed's sequential (cascade) pattern: x5, then x10 on the x5 answer.

The first model's output becomes the second model's input; the original input rides
along in the key, so the last step still knows what was asked::

    python -m pipelines.cascade
    python -m pipelines.cascade --five_model=gs://b/five/1 --ten_model=gs://b/ten/1 ...

Prints ``key is first_question original input is 105.0 input is [525.0] output is
5250.0``; ``--output`` receives the lines, ``--rows_output`` JSON-lines rows with an
``original_input`` field.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
import tensorflow as tf
from apache_beam.runners.runner import PipelineResult
from apache_beam.typehints import typehints
from tensorflow_serving.apis import prediction_log_pb2

import beam_infer as bi
from pipelines import bigquery_preflight, formats, jobs, models, question_rows

CarriedKey = tuple[bytes, float]  # (original key, original input)


def chain_to_next(element: tuple[bytes, prediction_log_pb2.PredictionLog]
                  ) -> tuple[CarriedKey, tf.train.Example]:
    """``(key, x5 log)`` → ``((key, original input), Example of the x5 answer)``.

    Example:
        >>> (key, original), example = chain_to_next((b"q1", five_log))
    """
    key, log = element
    predict_log = log.predict_log
    original = models.example_value(predict_log.request.inputs[models.INPUT_ALIAS].string_val[0])
    answer = predict_log.response.outputs[models.OUTPUT_ALIAS].float_val[0]
    return (key, original), models.make_example(answer)


def to_cascade_row(element: tuple[CarriedKey, prediction_log_pb2.PredictionLog]
                   ) -> dict[str, Any]:
    """The final row: the x10 log's row, keyed by the original key, with its first input."""
    (key, original), log = element
    return {**bi.prediction_log_to_row(log, key=key), "original_input": original}


def format_cascade_row(row: Mapping[str, Any]) -> str:
    line = formats.format_row(row)
    head = f"key is {row['key']} "
    return f"{head}original input is {row['original_input']} {line.removeprefix(head)}"


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    return question_rows.add_two_model_parser("cascade", "first", "second").parse_known_args(argv)


def build(pipeline: beam.Pipeline, args: argparse.Namespace) -> beam.PCollection:
    """Applies the job's steps and returns the final rows."""
    five, ten = question_rows.two_model_specs(args)
    rows = (
        question_rows.read_questions(pipeline, args)
        | "MultiplyFive" >> bi.RunInference(five)
        | "ChainToNext" >> beam.Map(chain_to_next).with_output_types(
            typehints.Tuple[typehints.Tuple[bytes, float], tf.train.Example])
        | "MultiplyTen" >> bi.RunInference(ten)
        | "ToRows" >> beam.Map(to_cascade_row)
    )
    lines = rows | "Format" >> beam.Map(format_cascade_row)
    jobs.print_and_write(lines, args.output or os.path.join(args.work_dir, "output"))
    _ = rows | "WriteRows" >> formats.WriteRows(
        args.rows_output or os.path.join(args.work_dir, "rows"), fmt="jsonl", num_shards=1)
    return rows


def run(argv: Sequence[str] | None = None, save_main_session: bool = True,
        test_pipeline: beam.Pipeline | None = None) -> PipelineResult:
    args, pipeline_args = parse_args(argv)
    options = jobs.job_options(pipeline_args, save_main_session)
    bigquery_preflight.require_credentials(
        "pipelines.cascade", bigquery_preflight.bigquery_flags(args), options, test_pipeline)
    # After the BigQuery check, whose message names the flags that need BigQuery.
    jobs.check_services(args, pipeline_args)
    os.makedirs(args.work_dir, exist_ok=True)
    return jobs.run_job(lambda pipeline: build(pipeline, args), options, test_pipeline,
                        job="pipelines.cascade", outputs=[
                            args.output or os.path.join(args.work_dir, "output"),
                            args.rows_output or os.path.join(args.work_dir, "rows")])


if __name__ == "__main__":
    jobs.main(run)
