"""Where the seed's question jobs read from: ``(key, value)`` rows as ``(key, Example)``.

Shared job helpers (not a job): ``pipelines.keyed``, ``branching`` and ``cascade`` (and
``batch_scoring``'s table check) import them from here, so no job imports another. Rows
need a ``key`` (STRING) and a ``value`` (FLOAT64) column, from ``--input`` (CSV or JSON
lines), ``--input_table`` or ``--query`` (BigQuery, standard SQL).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from typing import Any

import apache_beam as beam
import tensorflow as tf
from apache_beam.typehints import typehints

import beam_infer as bi
from pipelines import jobs, model_flags, models, tables

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


def add_two_model_parser(job: str, first: str, second: str) -> argparse.ArgumentParser:
    """The flags of a job that scores the questions with two models (branching, cascade)."""
    parser = argparse.ArgumentParser(description=f"The seed's {job} pattern.")
    parser.add_argument("--work_dir", default=os.path.join("work", job),
                        help="Where the demo models and outputs go when not given.")
    parser.add_argument("--five_model", help=f"The {first} SavedModel; default: build y = 5x.")
    parser.add_argument("--ten_model", help=f"The {second} SavedModel; default: build y = 10x.")
    parser.add_argument("--five_endpoint", help=f"The {first} model behind a serving endpoint "
                                                "instead of --five_model (URL; see --endpoint "
                                                "of the single-model jobs).")
    parser.add_argument("--ten_endpoint", help=f"The {second} model behind a serving endpoint "
                                               "instead of --ten_model.")
    model_flags.add_credential_flags(parser)
    model_flags.add_thread_flags(parser)
    add_question_flags(parser)
    parser.add_argument("--output", help="Text output prefix; default: <work_dir>/output.")
    parser.add_argument("--rows_output", help="JSON lines prefix; default: <work_dir>/rows.")
    return parser


def two_model_specs(args: argparse.Namespace
                    ) -> tuple[bi.ModelSpec | bi.EndpointSpec, bi.ModelSpec | bi.EndpointSpec]:
    """The x5 and x10 specs from ``--five_model``/``--ten_model`` (or their ``--*_endpoint``),
    building the demo models for the ones left unset."""
    built = models.ensure_demo_models(args.work_dir) if not (
        (args.five_model or args.five_endpoint) and (args.ten_model or args.ten_endpoint)) \
        else {}
    return tuple(model_flags.model_spec(args, lambda name=name: built[name],
                                        model_flag=f"{prefix}_model",
                                        endpoint_flag=f"{prefix}_endpoint")
                 for prefix, name in (("five", models.FIVE), ("ten", models.TEN)))


def read_questions(pipeline: beam.Pipeline, args: argparse.Namespace) -> beam.PCollection:
    """``ReadQuestions`` | ``ToKeyedExamples`` from the question flags: (bytes, Example)."""
    return (pipeline
            | "ReadQuestions" >> ReadQuestions(
                input_pattern=args.input, table=args.input_table, query=args.query)
            | "CountIn" >> jobs.CountElements(jobs.ELEMENTS_IN)
            | "ToKeyedExamples" >> beam.Map(keyed_example).with_output_types(
                typehints.Tuple[bytes, tf.train.Example]))


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
