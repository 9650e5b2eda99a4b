"""The seed's first pattern: TFRecord of Examples -> RunInference -> print the answers.

With no flags it builds the ``y = 5x`` model and an input file under ``--work_dir``, so
it runs anywhere::

    python -m pipelines.basic
    python -m pipelines.basic --model_path=gs://b/model --input=gs://b/in*.tfrecord \\
        --runner=DataflowRunner --project=P --region=R --temp_location=gs://b/tmp
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import apache_beam as beam
import tensorflow as tf
from apache_beam.runners.runner import PipelineResult

import beam_infer as bi
from pipelines import jobs, model_flags, models
from pipelines.formats import PredictionProcessor

QUESTIONS = (105.0, 108.0, 1000.0, 1013.0)


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default=os.path.join("work", "basic"),
                        help="Where the demo model and input are built when not given.")
    model_flags.add_model_flags(parser, model_help="SavedModel path; default: build y = 5x.")
    parser.add_argument("--input", help="TFRecord file pattern of tf.train.Example; "
                                        "default: write the seed's four questions.")
    parser.add_argument("--output", help="Text output prefix; default: <work_dir>/output.")
    return parser.parse_known_args(argv)


def prepare_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Builds the demo model and input under ``work_dir`` for flags left unset."""
    os.makedirs(args.work_dir, exist_ok=True)
    if not args.input:
        args.input = models.write_examples(
            os.path.join(args.work_dir, "questions.tfrecord"), QUESTIONS)
    if not args.output:
        args.output = os.path.join(args.work_dir, "output")
    return args


def run(argv: Sequence[str] | None = None, save_main_session: bool = True,
        test_pipeline: beam.Pipeline | None = None) -> PipelineResult:
    args, pipeline_args = parse_args(argv)
    jobs.check_services(args, pipeline_args)
    args = prepare_defaults(args)
    return jobs.run_job(lambda pipeline: build(pipeline, args),
                        jobs.job_options(pipeline_args, save_main_session), test_pipeline,
                        job="pipelines.basic", outputs=[args.output])


def build(pipeline: beam.Pipeline, args: argparse.Namespace) -> beam.PCollection:
    """ReadExamples -> RunInference -> ProcessPredictions -> Print/WriteResults."""
    spec = model_flags.model_spec(args, lambda: models.five_model(args.work_dir))
    lines = (
        pipeline
        | "ReadExamples" >> beam.io.ReadFromTFRecord(
            args.input, coder=beam.coders.ProtoCoder(tf.train.Example))
        | "CountIn" >> jobs.CountElements(jobs.ELEMENTS_IN)
        | "RunInference" >> bi.RunInference(spec)
        | "ProcessPredictions" >> beam.ParDo(PredictionProcessor())
    )
    jobs.print_and_write(lines, args.output)
    return lines


if __name__ == "__main__":
    jobs.main(run)
