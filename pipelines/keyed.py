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
import re
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
import tensorflow as tf
from apache_beam.runners.runner import PipelineResult
from apache_beam.typehints import typehints

import beam_infer as bi
from pipelines import bigquery_preflight, jobs, models, postprocess, tables

KEY_COLUMN = "key"
VALUE_COLUMN = "value"
_TABLE = re.compile(r"^([\w.:-]+[:.])?\w+\.[\w$-]+$")


def keyed_example(row: Mapping[str, Any]) -> tuple[bytes, tf.train.Example]:
    """A ``{"key", "value"}`` row as ``(key bytes, Example with x=value)``, as the seed does.

    Raises:
        ValueError: the row lacks a column or the value is not a number.

    Example:
        >>> keyed_example({"key": "first_question", "value": 105.0})[0]
        b'first_question'
    """
    missing = [c for c in (KEY_COLUMN, VALUE_COLUMN) if row.get(c) is None]
    if missing:
        raise ValueError(
            f"a question row needs columns {KEY_COLUMN!r} and {VALUE_COLUMN!r}; "
            f"{', '.join(repr(c) for c in missing)} missing or empty in {dict(row)!r}. "
            "Select them in --query or rename the table's columns."
        )
    key = row[KEY_COLUMN]
    try:
        value = float(row[VALUE_COLUMN])
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"question {key!r} has value {row[VALUE_COLUMN]!r}, which is not a number; "
            "the value column must be FLOAT64 (or numeric text)."
        ) from e
    key_bytes = key if isinstance(key, bytes) else str(key).encode("utf-8")
    return key_bytes, models.make_example(value)


def check_table(flag: str, table: str | None) -> None:
    """Fails pipeline construction on a table name BigQuery IO would reject at run time."""
    if table is not None and not _TABLE.match(table):
        raise ValueError(
            f"{flag} must be PROJECT:DATASET.TABLE (or DATASET.TABLE); got {table!r}. "
            f"Example: {flag}=my-project:maths.maths_problems_1"
        )


def add_question_flags(parser: argparse.ArgumentParser) -> None:
    """``--input`` | ``--input_table`` | ``--query``: where question rows come from."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", default=models.QUESTIONS_CSV,
                        help="CSV or JSON lines file pattern with key and value columns; "
                             "default: the bundled maths questions.")
    source.add_argument("--input_table", help="BigQuery table PROJECT:DATASET.TABLE to read.")
    source.add_argument("--query", help="BigQuery standard SQL returning key and value.")


def bigquery_flags(args: argparse.Namespace) -> list[str]:
    """The BigQuery flags among ``args`` that were given, e.g. ``["--input_table"]``."""
    return [f"--{name}" for name in ("input_table", "query", "output_table")
            if getattr(args, name, None)]


def add_two_model_parser(job: str, first: str, second: str) -> argparse.ArgumentParser:
    """The flags of a job that scores the questions with two models (branching, cascade)."""
    parser = argparse.ArgumentParser(description=f"The seed's {job} pattern.")
    parser.add_argument("--work_dir", default=os.path.join("work", job),
                        help="Where the demo models and outputs go when not given.")
    parser.add_argument("--five_model", help=f"The {first} SavedModel; default: build y = 5x.")
    parser.add_argument("--ten_model", help=f"The {second} SavedModel; default: build y = 10x.")
    add_question_flags(parser)
    parser.add_argument("--output", help="Text output prefix; default: <work_dir>/output.")
    parser.add_argument("--rows_output", help="JSON lines prefix; default: <work_dir>/rows.")
    return parser


def two_model_specs(args: argparse.Namespace) -> tuple[bi.ModelSpec, bi.ModelSpec]:
    """The x5 and x10 specs from ``--five_model``/``--ten_model``, building demos if unset."""
    built = models.ensure_demo_models(args.work_dir) if not (
        args.five_model and args.ten_model) else {}
    return (bi.ModelSpec(model_path=args.five_model or built[models.FIVE]),
            bi.ModelSpec(model_path=args.ten_model or built[models.TEN]))


def read_questions(pipeline: beam.Pipeline, args: argparse.Namespace) -> beam.PCollection:
    """``ReadQuestions`` | ``ToKeyedExamples`` from the question flags: (bytes, Example)."""
    return (pipeline
            | "ReadQuestions" >> ReadQuestions(
                input_pattern=args.input, table=args.input_table, query=args.query)
            | "CountIn" >> jobs.CountElements(jobs.ELEMENTS_IN)
            | "ToKeyedExamples" >> beam.Map(keyed_example).with_output_types(
                typehints.Tuple[bytes, tf.train.Example]))


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default=os.path.join("work", "keyed"),
                        help="Where the demo model and output go when not given.")
    parser.add_argument("--model_path",
                        help="SavedModel on any Beam filesystem; default: build y = 5x.")
    add_question_flags(parser)
    parser.add_argument("--output", help="Text output prefix; default: <work_dir>/output.")
    parser.add_argument("--output_table",
                        help="BigQuery table to append (key, input, output, model_version).")
    parser.add_argument("--model_version", help="Written to output rows; default: none.")
    return parser.parse_known_args(argv)


class ReadQuestions(beam.PTransform):
    """Question rows from BigQuery (table or query) or a local/remote CSV/JSONL file."""

    def __init__(self, *, input_pattern: str | None = None, table: str | None = None,
                 query: str | None = None):
        super().__init__()
        check_table("--input_table", table)
        self._pattern, self._table, self._query = input_pattern, table, query
        if not (table or query):
            self._read_file = tables.ReadRows(input_pattern, fmt=tables.detect_format(
                input_pattern))

    def expand(self, pcoll: beam.pvalue.PBegin) -> beam.PCollection:
        if self._table:
            return pcoll | "ReadFromBigQuery" >> beam.io.ReadFromBigQuery(table=self._table)
        if self._query:
            return pcoll | "ReadFromBigQuery" >> beam.io.ReadFromBigQuery(
                query=self._query, use_standard_sql=True)
        return pcoll | "ReadFile" >> self._read_file


def build(pipeline: beam.Pipeline, args: argparse.Namespace) -> beam.PCollection:
    """Applies the job's steps to ``pipeline`` and returns the output rows.

    Kept apart from ``run`` so the graph can be built (and checked) without running it.
    """
    check_table("--output_table", args.output_table)
    model_path = args.model_path or models.five_model(args.work_dir)
    spec = bi.ModelSpec(model_path=model_path)
    rows = (
        read_questions(pipeline, args)
        | "RunInference" >> bi.RunInference(spec)
        | "ToRows" >> bi.PredictionLogToRows(model_version=args.model_version)
    )
    lines = rows | "Format" >> beam.Map(postprocess.format_row)
    jobs.print_and_write(lines, args.output or os.path.join(args.work_dir, "output"))
    if args.output_table:
        postprocess.write_to_bigquery(rows, args.output_table)
    return rows


def run(argv: Sequence[str] | None = None, save_main_session: bool = True,
        test_pipeline: beam.Pipeline | None = None) -> PipelineResult:
    args, pipeline_args = parse_args(argv)
    options = jobs.job_options(pipeline_args, save_main_session)
    bigquery_preflight.require_credentials("pipelines.keyed", bigquery_flags(args), options,
                                           test_pipeline)
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
