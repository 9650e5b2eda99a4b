"""The seed's branching pattern: the same questions to the x5 and x10 models, flattened.

Each branch runs its own ``RunInference`` step; the results are flattened into one
collection of rows, each tagged with the model that produced it::

    python -m pipelines.branching
    python -m pipelines.branching --five_model=gs://b/five/1 --ten_model=gs://b/ten/1 \\
        --input_table=P:maths.maths_problems_1 --runner=DataflowRunner ...

Prints ``model is x5 key is first_question input is [105.0] output is 525.0`` and the
same for ``x10``; ``--output`` receives the lines, ``--rows_output`` JSON-lines rows.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.runners.runner import PipelineResult

import beam_infer as bi
from pipelines import bigquery_preflight, formats, jobs, question_rows


def tag_model(row: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The row with a ``model`` field naming the branch that answered it."""
    return {**row, "model": model}


def format_tagged_row(row: Mapping[str, Any]) -> str:
    """``model is x5 key is ... input is ... output is ...``."""
    return f"model is {row['model']} {formats.format_row(row)}"


class ScoreWithModel(beam.PTransform):
    """``(key, Example)`` → rows tagged ``model``: one branch of the pattern.

    Args:
        model: The tag written to each row (e.g. ``"x5"``).
        spec: The model to run.

    Example:
        >>> five = questions | "x5" >> ScoreWithModel(model="x5", spec=five_spec)
    """

    def __init__(self, *, model: str, spec: bi.ModelSpec):
        super().__init__()
        self._model = model
        self._inference = bi.RunInference(spec)

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return (pcoll
                | "RunInference" >> self._inference
                | "ToRows" >> bi.PredictionLogToRows()
                | "TagModel" >> beam.Map(tag_model, self._model))


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    return question_rows.add_two_model_parser("branching", "x5", "x10").parse_known_args(argv)


def build(pipeline: beam.Pipeline, args: argparse.Namespace) -> beam.PCollection:
    """Applies the job's steps and returns the flattened, tagged rows."""
    five, ten = question_rows.two_model_specs(args)
    questions = question_rows.read_questions(pipeline, args)
    rows = (
        (questions | "MultiplyFive" >> ScoreWithModel(model="x5", spec=five),
         questions | "MultiplyTen" >> ScoreWithModel(model="x10", spec=ten))
        | "Flatten" >> beam.Flatten()
    )
    lines = rows | "Format" >> beam.Map(format_tagged_row)
    jobs.print_and_write(lines, args.output or os.path.join(args.work_dir, "output"))
    _ = rows | "WriteRows" >> formats.WriteRows(
        args.rows_output or os.path.join(args.work_dir, "rows"), fmt="jsonl", num_shards=1)
    return rows


def run(argv: Sequence[str] | None = None, save_main_session: bool = True,
        test_pipeline: beam.Pipeline | None = None) -> PipelineResult:
    args, pipeline_args = parse_args(argv)
    options = jobs.job_options(pipeline_args, save_main_session)
    bigquery_preflight.require_credentials(
        "pipelines.branching", bigquery_preflight.bigquery_flags(args), options, test_pipeline)
    # After the BigQuery check, whose message names the flags that need BigQuery.
    jobs.check_services(args, pipeline_args)
    os.makedirs(args.work_dir, exist_ok=True)
    return jobs.run_job(lambda pipeline: build(pipeline, args), options, test_pipeline,
                        job="pipelines.branching", outputs=[
                            args.output or os.path.join(args.work_dir, "output"),
                            args.rows_output or os.path.join(args.work_dir, "rows")])


if __name__ == "__main__":
    jobs.main(run)
