"""The main job, the seed's keyed pattern: (key, value) rows → (key, PredictionLog) → answers.

With no flags it reads the bundled maths questions (the seed's BigQuery table
``maths.maths_problems_1`` as a CSV file), builds the ``y = 5x`` model if missing, and
prints and writes ``key is first_question input is [105.0] output is 525.0``::

    python -m pipelines.keyed
    python -m pipelines.keyed --input_table=P:maths.maths_problems_1 \\
        --output_table=P:maths.answers --model_path=gs://b/models/five/1 \\
        --runner=DataflowRunner --project=P --region=R --temp_location=gs://b/tmp

Rows need a ``key`` (STRING) and a ``value`` (FLOAT64) column, from ``--input`` (CSV or
JSON lines), ``--input_table`` or ``--query`` (BigQuery, standard SQL). The key rides
through RunInference untouched; ``--output_table`` appends ``(key, input, output,
model_version)`` rows to BigQuery.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.runners.runner import PipelineResult

import beam_infer as bi
from pipelines import bigquery_preflight, formats, jobs, model_flags, models
from pipelines.question_rows import (  # noqa: F401 - also reachable as pipelines.keyed.<name>
    KEY_COLUMN,
    VALUE_COLUMN,
    ReadQuestions,
    add_question_flags,
    add_two_model_parser,
    check_table,
    keyed_example,
    read_questions,
    two_model_specs,
)


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default=os.path.join("work", "keyed"),
                        help="Where the demo model and output go when not given.")
    model_flags.add_model_flags(
        parser, model_help="SavedModel on any Beam filesystem; default: build y = 5x.")
    add_question_flags(parser)
    parser.add_argument("--output", help="Text output prefix; default: <work_dir>/output.")
    parser.add_argument("--output_table",
                        help="BigQuery table to append (key, input, output, model_version).")
    parser.add_argument("--model_version", help="Written to output rows; default: none.")
    return parser.parse_known_args(argv)


def build(pipeline: beam.Pipeline, args: argparse.Namespace) -> beam.PCollection:
    """Applies the job's steps to ``pipeline`` and returns the output rows.

    Kept apart from ``run`` so the graph can be built (and checked) without running it.
    """
    check_table("--output_table", args.output_table)
    spec = model_flags.model_spec(args, lambda: models.five_model(args.work_dir))
    rows = (
        read_questions(pipeline, args)
        | "RunInference" >> bi.RunInference(spec)
        | "ToRows" >> bi.PredictionLogToRows(model_version=args.model_version)
    )
    lines = rows | "Format" >> beam.Map(formats.format_row)
    jobs.print_and_write(lines, args.output or os.path.join(args.work_dir, "output"))
    if args.output_table:
        formats.write_to_bigquery(rows, args.output_table)
    return rows


def run(argv: Sequence[str] | None = None, save_main_session: bool = True,
        test_pipeline: beam.Pipeline | None = None) -> PipelineResult:
    args, pipeline_args = parse_args(argv)
    options = jobs.job_options(pipeline_args, save_main_session)
    bigquery_preflight.require_credentials(
        "pipelines.keyed", bigquery_preflight.bigquery_flags(args), options, test_pipeline)
    # After the BigQuery check, whose message names the flags that need BigQuery.
    jobs.check_services(args, pipeline_args)
    os.makedirs(args.work_dir, exist_ok=True)
    return jobs.run_job(lambda pipeline: build(pipeline, args), options, test_pipeline,
                        job="pipelines.keyed", outputs=outputs(args))


def outputs(args: argparse.Namespace) -> list[str | None]:
    """Where the job writes, for its summary line."""
    return [args.output or os.path.join(args.work_dir, "output"), args.output_table]


if __name__ == "__main__":
    jobs.main(run)
