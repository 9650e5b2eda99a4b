"""Streaming scoring: a live versioned model, latency-bounded batching, results out.

On Dataflow it reads serialized ``tf.train.Example``s from Pub/Sub and publishes one
serialized ``PredictionLog`` per element::

    python -m pipelines.streaming --model_path=gs://b/models/five \\
        --input_subscription=projects/P/subscriptions/S --output_topic=projects/P/topics/T \\
        --dead_letter_topic=projects/P/topics/D \\
        --runner=DataflowRunner --project=P --region=R --temp_location=gs://b/tmp

With ``--dead_letter_topic``, a message that cannot be scored (not an Example, or one
the model cannot read) is published there as one JSON dead letter (``stage``,
``error_type``, ``message``, ``record_base64``: the message as it came) and the stream
goes on; without it such a message fails the job. Locally the same flags run on the
DirectRunner against the Pub/Sub emulator (``PUBSUB_EMULATOR_HOST``; see the README).

With no Pub/Sub flags it scores a generated stream (``--rate`` elements per second for
``--duration_secs``) and writes ``x=... y=... version=... latency_ms=...`` lines to
files ``<--output>-*.txt``, as they are scored. ``--model_path`` is a TF Serving-style
base path; copy a new numbered version into it while the job runs and scoring switches
to it within ``--poll_interval_secs`` plus its load time. Without ``--model_path`` it
builds version 1 of the ``y = 5x`` model under ``--work_dir``.

Locally the job runs on Beam's FnApiRunner unless ``--runner`` says otherwise: the
DirectRunner hands pipelines with processing-time timers (latency-bounded batching) to
its bundle-based engine, which cannot run the generated stream (``PeriodicImpulse``).
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Iterator, Sequence

import apache_beam as beam
import tensorflow as tf
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from tensorflow_serving.apis import prediction_log_pb2

import beam_infer as bi
from pipelines import jobs, model_flags, models
from pipelines.formats import dead_letter_json

SENT_AT = "sent_at_micros"  # rides in each Example; the model reads only "x"


def make_timed_example(index: int, sent_at: float) -> tf.train.Example:
    """The demo Example for ``x = index``, stamped with when it entered the pipeline."""
    example = models.make_example(float(index))
    example.features.feature[SENT_AT].int64_list.value.append(int(sent_at * 1e6))
    return example


class GenerateExamples(beam.DoFn):
    """Turns ``PeriodicImpulse`` firings into numbered, time-stamped Examples."""

    def __init__(self, start: float, rate: float):
        self._start = start
        self._rate = rate

    def process(self, fired_at: float) -> Iterator[tf.train.Example]:
        index = round((float(fired_at) - self._start) * self._rate)
        yield make_timed_example(index, time.time())


class FormatResult(beam.DoFn):
    """``x=.. y=.. version=.. latency_ms=..``: what was asked, answered, by whom, how fast."""

    def process(self, log: prediction_log_pb2.PredictionLog) -> Iterator[str]:
        done = time.time()
        predict_log = log.predict_log
        example = tf.train.Example.FromString(predict_log.request.inputs["examples"].string_val[0])
        feature = example.features.feature
        latency_ms = (done - feature[SENT_AT].int64_list.value[0] / 1e6) * 1e3
        yield (f"x={feature['x'].float_list.value[0]:g} "
               f"y={predict_log.response.outputs['output_0'].float_val[0]:g} "
               f"version={predict_log.response.model_spec.version.value} "
               f"latency_ms={latency_ms:.2f}")


class AppendLines(beam.DoFn):
    """Appends each line to ``<prefix>-<unique>.txt`` as it arrives (local streaming sink).

    Beam's file sinks write an unbounded stream per window pane; the local demo wants the
    lines as they are scored, so each DoFn instance appends to its own file.
    """

    def __init__(self, prefix: str):
        self._prefix = prefix
        self._file = None

    def setup(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self._prefix)), exist_ok=True)
        self._file = open(f"{self._prefix}-{uuid.uuid4().hex}.txt", "a")  # noqa: SIM115

    def process(self, line: str) -> None:
        self._file.write(line + "\n")

    def finish_bundle(self) -> None:
        self._file.flush()

    def teardown(self) -> None:
        if self._file is not None:
            self._file.close()


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default=os.path.join("work", "streaming"),
                        help="Where the demo model and outputs go when not given.")
    model_flags.add_model_flags(parser, model_help="Versioned base path; default: build "
                                                   "<work_dir>/models/five/1 (y = 5x).")
    parser.add_argument("--input_subscription", help="Pub/Sub subscription of serialized "
                                                     "tf.train.Example (Dataflow).")
    parser.add_argument("--output_topic", help="Pub/Sub topic for serialized PredictionLogs.")
    parser.add_argument("--dead_letter_topic",
                        help="Pub/Sub topic for messages that cannot be scored, as JSON dead "
                             "letters; without it such a message fails the job.")
    parser.add_argument("--output", help="Local text output prefix; default "
                                         "<work_dir>/output.")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="Generated elements per second (local stream).")
    parser.add_argument("--duration_secs", type=float, default=30.0,
                        help="How long the generated stream runs.")
    parser.add_argument("--poll_interval_secs", type=float, default=1.0,
                        help="How often workers look for a new model version.")
    parser.add_argument("--max_batch_size", type=int, default=64)
    parser.add_argument("--max_batch_duration_secs", type=float, default=0.05,
                        help="Latency bound of batching: a batch waits at most this long.")
    args, rest = parser.parse_known_args(argv)
    if bool(args.input_subscription) != bool(args.output_topic):
        parser.error("--input_subscription and --output_topic go together (Pub/Sub in and "
                     f"out); got input_subscription={args.input_subscription!r}, "
                     f"output_topic={args.output_topic!r}.")
    if args.dead_letter_topic and not args.input_subscription:
        parser.error("--dead_letter_topic needs --input_subscription and --output_topic "
                     "(dead letters of the Pub/Sub stream); got "
                     f"dead_letter_topic={args.dead_letter_topic!r} without them.")
    return args, rest


def model_spec(args: argparse.Namespace) -> bi.ModelSpec | bi.EndpointSpec:
    batching = bi.BatchConfig(max_batch_size=args.max_batch_size,
                              max_batch_duration_secs=args.max_batch_duration_secs)
    if model_flags.uses_endpoint(args):  # the server follows versions itself
        return model_flags.model_spec(args, lambda: "", batching=batching)
    return bi.ModelSpec(model_path=args.model_path, poll_interval_secs=args.poll_interval_secs,
                        batching=batching, **model_flags.thread_fields(args))


def build_pubsub(pipeline: beam.Pipeline, args: argparse.Namespace) -> None:
    """Pub/Sub in, RunInference, Pub/Sub out; dead letters to their own topic if given."""
    examples = (pipeline
                | "ReadExamples" >> beam.io.ReadFromPubSub(subscription=args.input_subscription)
                | "CountIn" >> jobs.CountElements(jobs.ELEMENTS_IN))
    inference = bi.RunInference(model_spec(args))
    if args.dead_letter_topic:
        logs, failed = examples | "RunInference" >> inference.with_dead_letters()
        _ = (failed
             | "FormatDeadLetters" >> beam.Map(
                 lambda letter: dead_letter_json(letter).encode()).with_output_types(bytes)
             | "WriteDeadLetters" >> beam.io.WriteToPubSub(args.dead_letter_topic))
    else:
        logs = examples | "RunInference" >> inference
    _ = (logs
         | "CountOut" >> jobs.CountElements(jobs.ELEMENTS_OUT)
         | "Serialize" >> beam.Map(lambda log: log.SerializeToString()).with_output_types(bytes)
         | "WriteLogs" >> beam.io.WriteToPubSub(args.output_topic))


def build_local(pipeline: beam.Pipeline, args: argparse.Namespace) -> None:
    """A generated stream, RunInference, text lines out."""
    start = time.time()
    _ = (pipeline
         | "GenerateStream" >> PeriodicImpulse(start, start + args.duration_secs,
                                               fire_interval=1.0 / args.rate)
         | "MakeExamples" >> beam.ParDo(GenerateExamples(start, args.rate))
         | "CountIn" >> jobs.CountElements(jobs.ELEMENTS_IN)
         | "RunInference" >> bi.RunInference(model_spec(args))
         | "FormatResults" >> beam.ParDo(FormatResult())
         | "CountOut" >> jobs.CountElements(jobs.ELEMENTS_OUT)
         | "WriteResults" >> beam.ParDo(AppendLines(args.output)))


def prepare_defaults(args: argparse.Namespace) -> argparse.Namespace:
    if not args.model_path and not args.endpoint:
        args.model_path = os.path.join(args.work_dir, "models", "five")
        first = os.path.join(args.model_path, "1")
        if not os.path.exists(os.path.join(first, "saved_model.pb")):
            models.build_multiplier_model(first, 5.0)
            bi.write_warmup_requests(first, [models.make_example(1.0)])
    if not args.output:
        args.output = os.path.join(args.work_dir, "output")
    return args


def run(argv: Sequence[str] | None = None, save_main_session: bool = True,
        test_pipeline: beam.Pipeline | None = None) -> beam.runners.runner.PipelineResult:
    args, pipeline_args = parse_args(argv)
    jobs.check_services(args, pipeline_args,
                        pubsub_topics=(args.output_topic, args.dead_letter_topic),
                        pubsub_subscriptions=(args.input_subscription,))
    args = prepare_defaults(args)
    options = jobs.job_options(pipeline_args, save_main_session)
    standard = options.view_as(StandardOptions)
    if args.input_subscription:
        standard.streaming = True
    elif not standard.runner:
        standard.runner = "FnApiRunner"
    build = build_pubsub if args.input_subscription else build_local
    outputs = [args.output_topic, args.dead_letter_topic] if args.input_subscription \
        else [f"{args.output}-*.txt"]
    return jobs.run_job(lambda pipeline: build(pipeline, args), options, test_pipeline,
                        job="pipelines.streaming", outputs=outputs)


if __name__ == "__main__":
    jobs.main(run)
