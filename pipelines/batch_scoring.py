"""A scheduled batch scoring job: a table of features → any SavedModel → predictions.

Input is a TFRecord of ``tf.train.Example``s, CSV, JSON lines or Parquet (one feature per
column, by column name); output is JSON lines or Parquet rows ``(key, input, output,
model_version)``, or a TFRecord of ``PredictionLog``s. Elements that cannot be turned into
an Example, or that the model cannot score, are counted one by one (and written to
``--failed_output`` with their stage and reason, if given) instead of failing the job; the
other elements of their batch are scored as usual. At the end it prints::

    read 4, scored 4, failed 0, elapsed 2.31 s, 1.7 elements/s

With no flags it scores the bundled questions with the y = 5x model::

    python -m pipelines.batch_scoring
    python -m pipelines.batch_scoring --input=gs://b/in/*.parquet --model_path=gs://b/m/3 \\
        --output=gs://b/out/scores --output_format=parquet --key_column=id \\
        --runner=DataflowRunner --project=P --region=R --temp_location=gs://b/tmp

The counts come from Beam metrics (namespace ``beam_infer``), so they are right on any
runner that reports metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult
from tensorflow_serving.apis import prediction_log_pb2

import beam_infer as bi
from pipelines import jobs, models, postprocess, tables

OUTPUT_FORMATS = ("jsonl", "parquet", "tfrecord")
READ = "batch_scoring_read_elements"
SCORED = "batch_scoring_scored_elements"
FAILED = "batch_scoring_failed_elements"
PARQUET_SCHEMA = pa.schema([(name, pa.string()) for name in postprocess.PARQUET_COLUMNS])
FAILED_TAG = "failed"


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a scoring run did, from the job's metrics."""

    read: int
    scored: int
    failed: int
    elapsed_secs: float

    @property
    def elements_per_sec(self) -> float:
        return self.scored / self.elapsed_secs if self.elapsed_secs > 0 else 0.0

    def __str__(self) -> str:
        return (f"read {self.read}, scored {self.scored}, failed {self.failed}, "
                f"elapsed {self.elapsed_secs:.2f} s, {self.elements_per_sec:.1f} elements/s")


class ToExampleFn(beam.DoFn):
    """Counts each input element and turns rows into (keyed) Examples.

    Rows that cannot be converted go to the ``failed`` output as ``(row, "convert", error text)``.
    """

    def __init__(self, *, key_column: str | None, feature_types: Mapping[str, str]):
        self._key_column = key_column
        self._feature_types = dict(feature_types)
        self._read = Metrics.counter(bi.METRICS_NAMESPACE, READ)
        self._failed = Metrics.counter(bi.METRICS_NAMESPACE, FAILED)

    def process(self, element: Any) -> Iterator[Any]:
        self._read.inc()
        if isinstance(element, bytes):  # a serialized Example from TFRecord: as is
            yield element
            return
        try:
            example = tables.row_to_example(
                element, exclude=[self._key_column] if self._key_column else [],
                feature_types=self._feature_types)
            if self._key_column is None:
                yield example
                return
            key = element.get(self._key_column)
            if key is None:
                raise ValueError(f"key column {self._key_column!r} is missing or empty")
            yield key, example
        except ValueError as e:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(FAILED_TAG, (repr(element), "convert", str(e)))


class CountScored(beam.DoFn):
    def __init__(self) -> None:
        self._scored = Metrics.counter(bi.METRICS_NAMESPACE, SCORED)

    def process(self, element: Any) -> Iterator[Any]:
        self._scored.inc()
        yield element


class CountDeadLetters(beam.DoFn):
    """Each ``bi.DeadLetter`` of the model step → ``(element, stage, "Type: message")``."""

    def __init__(self) -> None:
        self._failed = Metrics.counter(bi.METRICS_NAMESPACE, FAILED)

    def process(self, letter: bi.DeadLetter) -> Iterator[tuple[str, str, str]]:
        self._failed.inc()
        yield (repr(letter.element)[:1000], letter.stage.value,
               f"{letter.error_type}: {letter.message}")


def parse_args(argv: Sequence[str] | None, *, prog: str | None = None
               ) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                     epilog="Any other flag (--runner, --project, ...) "
                                            "goes to Beam's PipelineOptions.")
    parser.add_argument("--work_dir", default=os.path.join("work", "batch_scoring"),
                        help="Where the demo model, input and output go when not given.")
    parser.add_argument("--input", help="File pattern to score; default: the bundled "
                                        "questions as a TFRecord of Examples.")
    parser.add_argument("--input_format", choices=tables.FORMATS,
                        help="Default: from the input's extension.")
    parser.add_argument("--model_path", help="SavedModel on any Beam filesystem; "
                                             "default: build y = 5x.")
    parser.add_argument("--signature_name", action="append", default=[],
                        help="Signature to run (repeat for multi-inference); "
                             "default: serving_default.")
    parser.add_argument("--tag", action="append", default=[],
                        help="MetaGraph tag (repeat for several); default: serve.")
    parser.add_argument("--key_column", help="Column passed through as the row key.")
    parser.add_argument("--feature_types",
                        help="Column types overriding the inferred ones, e.g. x:float,id:int.")
    parser.add_argument("--max_batch_size", type=int, help="Largest model call.")
    parser.add_argument("--output", help="Output prefix; default: <work_dir>/scores.")
    parser.add_argument("--output_format", choices=OUTPUT_FORMATS, default="jsonl")
    parser.add_argument("--failed_output",
                        help="JSON lines prefix for elements that failed, with the error.")
    parser.add_argument("--model_version", help="Written to output rows.")
    return parser.parse_known_args(argv)


def prepare_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Builds the demo model and input under ``work_dir`` for flags left unset."""
    os.makedirs(args.work_dir, exist_ok=True)
    if not args.model_path:
        args.model_path = models.five_model(args.work_dir)
    if not args.input:
        args.input = models.write_examples(
            os.path.join(args.work_dir, "questions.tfrecord"),
            [value for _, value in models.read_questions()])
    if not args.output:
        args.output = os.path.join(args.work_dir, "scores")
    return args


def build(pipeline: beam.Pipeline, args: argparse.Namespace) -> None:
    """Applies the job's steps to ``pipeline``; configuration errors raise here."""
    fmt = tables.detect_format(args.input, args.input_format)
    if fmt == "tfrecord" and args.key_column:
        raise ValueError(
            f"--key_column={args.key_column} needs a table input (csv, jsonl, parquet); "
            f"{args.input!r} is a TFRecord of Examples, which has no columns. Drop "
            "--key_column or convert the input.")
    spec = bi.ModelSpec(
        model_path=args.model_path, signature_names=tuple(args.signature_name),
        tags=tuple(args.tag), batching=bi.BatchConfig(max_batch_size=args.max_batch_size))
    feature_types = tables.parse_feature_types(args.feature_types)

    if fmt == "tfrecord":
        records = pipeline | "ReadExamples" >> beam.io.ReadFromTFRecord(args.input)
    else:
        records = pipeline | "ReadRows" >> tables.ReadRows(args.input, fmt=fmt)
    converted = records | "ToExamples" >> beam.ParDo(ToExampleFn(
        key_column=args.key_column, feature_types=feature_types)).with_outputs(
            FAILED_TAG, main="examples")
    # (key, Example) pairs when --key_column is set: keys pass through to the outputs.
    logs, dead_letters = (converted.examples
                          | "RunInference" >> bi.RunInference(spec).with_dead_letters())
    scored = logs | "CountScored" >> beam.ParDo(CountScored())
    failed_elements = dead_letters | "CountDeadLetters" >> beam.ParDo(CountDeadLetters())
    _write_predictions(scored, args)
    if args.failed_output:
        _ = ((converted[FAILED_TAG], failed_elements)
             | "FlattenFailures" >> beam.Flatten()
             | "FailureToJson" >> beam.MapTuple(
                 lambda element, stage, error: json.dumps(
                     {"element": element, "stage": stage, "error": error}))
             | "WriteFailures" >> beam.io.WriteToText(
                 args.failed_output, file_name_suffix=".jsonl"))


def _write_predictions(logs: beam.PCollection, args: argparse.Namespace) -> None:
    if args.output_format == "tfrecord":
        # A PredictionLog has no key field: keyed input keeps only the logs here.
        _ = (logs
             | "DropKeys" >> beam.Map(lambda e: e[1] if isinstance(e, tuple) else e)
             | "WritePredictionLogs" >> beam.io.WriteToTFRecord(
                 args.output, coder=beam.coders.ProtoCoder(prediction_log_pb2.PredictionLog),
                 file_name_suffix=".tfrecord"))
        return
    rows = logs | "ToRows" >> bi.PredictionLogToRows(model_version=args.model_version)
    if args.output_format == "jsonl":
        _ = rows | "WriteRows" >> postprocess.WriteRows(args.output, fmt="jsonl")
    else:
        _ = (rows
             | "ToFlatRows" >> beam.Map(postprocess.to_flat_row)
             | "WriteParquet" >> beam.io.WriteToParquet(
                 args.output, PARQUET_SCHEMA, file_name_suffix=".parquet"))


def summarize(result: PipelineResult, elapsed_secs: float) -> Summary:
    """The run's read/scored/failed counters (committed, else attempted) and time."""
    def total(name: str) -> int:
        query = result.metrics().query(
            MetricsFilter().with_namespace(bi.METRICS_NAMESPACE).with_name(name))
        return int(sum((c.committed if c.committed is not None else c.attempted) or 0
                       for c in query["counters"]))

    return Summary(read=total(READ), scored=total(SCORED), failed=total(FAILED),
                   elapsed_secs=elapsed_secs)


def run(argv: Sequence[str] | None = None, save_main_session: bool = True,
        test_pipeline: beam.Pipeline | None = None) -> PipelineResult:
    """Runs the job, prints the summary and returns the ``PipelineResult``."""
    args, pipeline_args = parse_args(argv)
    jobs.check_services(args, pipeline_args)
    args = prepare_defaults(args)
    start = time.perf_counter()
    result = jobs.run_job(lambda pipeline: build(pipeline, args),
                          jobs.job_options(pipeline_args, save_main_session), test_pipeline)
    print(f"{summarize(result, time.perf_counter() - start)}; outputs: "
          f"{', '.join(filter(None, (args.output, args.failed_output)))}")
    return result


if __name__ == "__main__":
    jobs.main(run)
