"""Scoring a TFRecord file with corrupt records: predictions and dead letters, nothing lost.

Reads the records as raw bytes (so a corrupt one is not a read error), scores them with
``RunInference(spec).with_dead_letters()``, writes the answers like ``pipelines.basic``
does and every record that could not be scored as one JSON line saying where and why.
With no flags it builds the ``y = 5x`` model and an input holding good and bad records
under ``--work_dir``::

    python -m pipelines.dead_letters
    python -m pipelines.dead_letters --model_path=gs://b/model --input=gs://b/in*.tfrecord \\
        --runner=DataflowRunner --project=P --region=R --temp_location=gs://b/tmp
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import apache_beam as beam
import tensorflow as tf

import beam_infer as bi
from pipelines import jobs, model_flags, models
from pipelines.formats import PredictionProcessor, dead_letter_json

GOOD_VALUES = (105.0, 108.0, 1000.0, 1013.0)


def bad_records() -> list[bytes]:
    """Records a real export can hold: garbage, a truncated proto, the wrong features."""
    wrong_kind = tf.train.Example(features=tf.train.Features(feature={
        models.FEATURE: tf.train.Feature(int64_list=tf.train.Int64List(value=[7]))}))
    no_x = tf.train.Example(features=tf.train.Features(feature={
        "y": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))}))
    return [b"\x00not a proto\xff", models.make_example(3.0).SerializeToString()[:-3],
            wrong_kind.SerializeToString(), no_x.SerializeToString()]


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default=os.path.join("work", "dead_letters"),
                        help="Where the demo model and input are built when not given.")
    model_flags.add_model_flags(parser, model_help="SavedModel path; default: build y = 5x.")
    parser.add_argument("--input", help="TFRecord file pattern of serialized tf.train.Example; "
                                        "default: good and corrupt demo records.")
    parser.add_argument("--output", help="Output prefix; default: <work_dir>/output. "
                                         "Writes <output>.predictions and <output>.dead_letters.")
    return parser.parse_known_args(argv)


def prepare_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Builds the demo model and input under ``work_dir`` for flags left unset."""
    os.makedirs(args.work_dir, exist_ok=True)
    if not args.input:
        args.input = os.path.join(args.work_dir, "mixed.tfrecord")
        with tf.io.TFRecordWriter(args.input) as writer:
            for value, bad in zip(GOOD_VALUES, bad_records(), strict=True):
                writer.write(models.make_example(value).SerializeToString())
                writer.write(bad)
    if not args.output:
        args.output = os.path.join(args.work_dir, "output")
    return args


def build(pipeline: beam.Pipeline, args: argparse.Namespace) -> None:
    spec = model_flags.model_spec(args, lambda: models.five_model(args.work_dir))
    predictions, failed = (
        pipeline
        | "ReadRecords" >> beam.io.ReadFromTFRecord(args.input)
        | "CountIn" >> jobs.CountElements(jobs.ELEMENTS_IN)
        | "RunInference" >> bi.RunInference(spec).with_dead_letters()
    )
    _ = (predictions
         | "ProcessPredictions" >> beam.ParDo(PredictionProcessor())
         | "CountOut" >> jobs.CountElements(jobs.ELEMENTS_OUT)
         | "WritePredictions" >> beam.io.WriteToText(args.output + ".predictions",
                                                     shard_name_template=""))
    _ = (failed
         | "FormatDeadLetters" >> beam.Map(dead_letter_json)
         | "WriteDeadLetters" >> beam.io.WriteToText(args.output + ".dead_letters",
                                                     shard_name_template=""))


def run(argv: Sequence[str] | None = None, save_main_session: bool = True,
        test_pipeline: beam.Pipeline | None = None) -> beam.runners.runner.PipelineResult:
    args, pipeline_args = parse_args(argv)
    jobs.check_services(args, pipeline_args)
    args = prepare_defaults(args)
    return jobs.run_job(lambda pipeline: build(pipeline, args),
                        jobs.job_options(pipeline_args, save_main_session), test_pipeline,
                        job="pipelines.dead_letters",
                        outputs=[args.output + ".predictions", args.output + ".dead_letters"])


if __name__ == "__main__":
    jobs.main(run)
