"""A scheduled batch scoring job: a table of features → any SavedModel → predictions.

Input is files (``--input``: CSV, JSON lines, Parquet, or a TFRecord of
``tf.train.Example``s) or BigQuery (``--input_table`` / ``--query``). The job reads the
model's signature and maps columns onto it (``pipelines.columns``): Example-parsing
signatures get one feature per column; tensor signatures (Keras 3 ``model.export()``,
several inputs) read the column named after each input alias, or the one
``--input_map alias=column`` names. Output is JSON lines or Parquet rows
``(key, input, output, model_version, model_fingerprint)``, a TFRecord of
``PredictionLog``s (``--output``), and/or BigQuery rows (``--output_table``).

Every row ends scored or failed: rows that cannot be converted, and elements the model
cannot score (``bi.RunInference(spec).with_dead_letters()``), are counted one by one and
written to ``--failed_output`` with their stage and reason; the rest of their batch is
scored. At the end it prints::

    read 4, scored 4, failed 0, elapsed 2.31 s, 1.7 elements/s

Reruns replace: ``{run_date}`` / ``{run_date_nodash}`` in paths, tables and the query take
``--run_date`` (default: today, UTC). Outputs are written aside and committed only when
the run succeeds (``pipelines.staging``), then a JSON manifest is written last
(``--manifest``, default ``<output dir>/_<output name>.manifest.json``). ``main`` returns
the exit codes of ``pipelines.run_report``: 0 ok, 1 error, 2 usage, 3 too many failures
(``--max_failure_rate``), 4 nothing scored.

With no flags it scores the bundled questions with the y = 5x model::

    python -m pipelines.batch_scoring
    python -m pipelines.batch_scoring --input='gs://b/in/dt={run_date}/*.parquet' \\
        --model_path=gs://b/m/3 --output='gs://b/scores/dt={run_date}/part' \\
        --output_format=parquet --key_column=id \\
        --failed_output='gs://b/failed/dt={run_date}/part' \\
        --runner=DataflowRunner --project=P --region=R --temp_location=gs://b/tmp

The counts come from Beam metrics (namespace ``beam_infer``), so they are right on any
runner that reports metrics. docs/batch_scoring.md has the scheduling recipes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.runners.runner import PipelineResult, PipelineState
from tensorflow_serving.apis import prediction_log_pb2

import beam_infer as bi
from pipelines import (
    bigquery_preflight,
    finish,
    formats,
    jobs,
    model_flags,
    models,
    progress,
    run_report,
    services,
    tables,
)
from pipelines.run_report import Summary
from pipelines.scoring_config import DEFAULT_MAX_FAILURE_RATE, Job, configure
from pipelines.scoring_steps import (
    BIGQUERY_SCHEMA,
    FAILED,
    FAILED_TAG,
    PARQUET_SCHEMA,
    READ,
    SCORED,
    WRITTEN,
    CountDeadLetters,
    CountScored,
    CountWritten,
    ToModelInputFn,
    failed_counter,
    failure_json,
    flat_row,
    stamp_log,
    with_lineage,
)

OUTPUT_FORMATS = ("jsonl", "parquet", "tfrecord")
DEFAULT_PROGRESS_SECS = 60.0
PROG = "python -m pipelines.batch_scoring"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The job's own flags; every other flag goes to Beam's PipelineOptions."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.splitlines()[0],
        epilog="Any other flag (--runner, --project, ...) goes to Beam's PipelineOptions. "
               "Exit codes: 0 ok, 1 error, 2 usage, 3 too many failures, 4 nothing scored.")
    parser.add_argument("--work_dir", default=os.path.join("work", "batch_scoring"),
                        help="Where the demo model, input and output go when not given.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", help="File pattern to score ({run_date} allowed); default: "
                                        "the bundled questions as a TFRecord of Examples.")
    source.add_argument("--input_table", help="BigQuery table PROJECT:DATASET.TABLE to score.")
    source.add_argument("--query", help="BigQuery standard SQL whose rows are scored.")
    parser.add_argument("--input_format", choices=tables.FORMATS,
                        help="Default: from the input's extension.")
    model_flags.add_model_flags(parser, model_help="SavedModel (or a base path of numbered "
                                                   "versions) on any Beam filesystem; default: "
                                                   "build y = 5x.")
    parser.add_argument("--signature_name", action="append", default=[],
                        help="Signature to run (repeat for multi-inference); "
                             "default: serving_default.")
    parser.add_argument("--tag", action="append", default=[],
                        help="MetaGraph tag (repeat for several); default: serve.")
    parser.add_argument("--key_column", help="Column passed through as the row key.")
    parser.add_argument("--input_map", action="append", default=[], metavar="ALIAS=COLUMN",
                        help="Feed COLUMN to the signature input ALIAS (repeat, or "
                             "comma-separate); default: columns named after the aliases.")
    parser.add_argument("--feature_types",
                        help="Example signatures: column types overriding the inferred "
                             "ones, e.g. x:float,id:int.")
    parser.add_argument("--max_batch_size", type=int, help="Largest model call.")
    parser.add_argument("--pad_variable_length_inputs", action="store_true",
                        help="Pad variable-length tensor inputs to each batch's largest.")
    parser.add_argument("--output", help="Output prefix ({run_date} allowed); default: "
                                         "<work_dir>/scores unless --output_table is set.")
    parser.add_argument("--output_format", choices=OUTPUT_FORMATS, default="jsonl")
    parser.add_argument("--num_shards", type=int, default=0,
                        help="Output files per output; default 0: the runner decides.")
    parser.add_argument("--output_table",
                        help="BigQuery table (or TABLE$YYYYMMDD partition) to replace with "
                             "this run's rows, e.g. P:ds.scores${run_date_nodash}.")
    parser.add_argument("--failed_output",
                        help="JSON lines prefix for rows that failed, with stage and reason.")
    parser.add_argument("--max_failure_rate", type=float,
                        help="Largest share of failed rows a successful run may have; "
                             f"default: 0 without --failed_output, {DEFAULT_MAX_FAILURE_RATE} "
                             "with it.")
    parser.add_argument("--run_date", help="YYYY-MM-DD for {run_date} in paths, tables and "
                                           "the query; default: today (UTC).")
    parser.add_argument("--manifest", help="Where the run's JSON manifest goes; default: "
                                           "<output dir>/_<output name>.manifest.json.")
    parser.add_argument("--model_version", help="Written to output rows when the served "
                                                "model names no version.")
    parser.add_argument("--progress_secs", type=float, default=DEFAULT_PROGRESS_SECS,
                        help="Seconds between progress lines; 0 turns them off.")
    parser.add_argument("--commit", choices=finish.COMMIT_MODES, default="after_run",
                        help="after_run: this process waits for the job, commits and exits "
                             "with the run's code; in_pipeline: the job's last step commits "
                             "(for launchers that do not wait, e.g. Flex Templates).")
    return parser


def parse_args(argv: Sequence[str] | None, *, prog: str | None = None
               ) -> tuple[argparse.Namespace, list[str]]:
    return build_parser(prog).parse_known_args(argv)


def prepare_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Builds the demo model and input under ``work_dir`` for flags left unset."""
    os.makedirs(args.work_dir, exist_ok=True)
    if not args.model_path and not args.endpoint:
        args.model_path = models.five_model(args.work_dir)
    if not (args.input or args.input_table or args.query):
        args.input = models.write_examples(
            os.path.join(args.work_dir, "questions.tfrecord"),
            [value for _, value in models.read_questions()])
    if not (args.output or args.output_table):
        args.output = os.path.join(args.work_dir, "scores")
    return args


def build(pipeline: beam.Pipeline, job: Job) -> None:
    """Applies the job's steps to ``pipeline``, every output written to its staging place;
    with ``--commit=in_pipeline`` a last step commits them (``finish.CommitRunFn``)."""
    records = _read(pipeline, job)
    converted = records | "ToModelInputs" >> beam.ParDo(ToModelInputFn(
        job.mapping, parse={"jsonl": "json", "csv": "csv"}.get(job.fmt or ""),
        header=job.header, typed_cells=job.mapping.feed == "examples",
        run_id=job.run_id)).with_outputs(FAILED_TAG, main="inputs")
    # (key, input) pairs when --key_column is set: keys pass through to the outputs.
    logs, dead_letters = (converted.inputs
                          | "RunInference" >> job.transform.with_dead_letters())
    scored = logs | "CountScored" >> beam.ParDo(CountScored(job.run_id))
    failed = dead_letters | "CountDeadLetters" >> beam.ParDo(CountDeadLetters(job.run_id))
    sinks = _write_predictions(scored, job)
    if job.failures is not None:
        sinks["failures"] = (
            (converted[FAILED_TAG], failed)
            | "FlattenFailures" >> beam.Flatten()
            | "FailureToJson" >> beam.Map(failure_json)
            | "WriteFailures" >> beam.io.WriteToText(
                job.failures.staging_prefix, file_name_suffix=job.failures.suffix,
                num_shards=job.num_shards))
    if job.commit == "in_pipeline":
        _commit_in_pipeline(pipeline, job, converted, scored, failed, sinks)


def _commit_in_pipeline(pipeline: beam.Pipeline, job: Job, converted: Any,
                        scored: beam.PCollection, failed: beam.PCollection,
                        sinks: dict[str, Any]) -> None:
    """``CommitRun``: counts computed by the pipeline, and every write, as side inputs."""
    def count(pcoll: beam.PCollection | None, label: str) -> Any:
        if pcoll is None:
            pcoll = pipeline | f"No{label}" >> beam.Create([])
        return beam.pvalue.AsSingleton(pcoll | label >> beam.combiners.Count.Globally())

    def listed(pcoll: Any, label: str) -> Any:
        if pcoll is None:
            pcoll = pipeline | f"No{label}" >> beam.Create([])
        return beam.pvalue.AsList(pcoll)

    table = sinks.get("table")
    load_jobs = table.destination_load_jobid_pairs if table is not None else None
    copy_jobs = table.destination_copy_jobid_pairs if table is not None else None
    by_stage = (failed
                | "FailureStages" >> beam.Map(lambda record: record["stage"])
                | "CountByStage" >> beam.combiners.Count.PerElement())
    _ = (pipeline
         | "CommitOnce" >> beam.Create([None])
         | "CommitRun" >> beam.ParDo(
             finish.CommitRunFn(job.plan),
             inputs=count(converted.inputs, "CountInputs"),
             convert_failed=count(converted[FAILED_TAG], "CountConvertFailures"),
             scored=count(scored, "CountScoredRows"),
             failed_by_stage=beam.pvalue.AsDict(by_stage),
             written_files=count(sinks.get("written_files"), "CountWrittenFileRows"),
             written_table=count(sinks.get("written_table"), "CountWrittenTableRows"),
             load_jobs=listed(load_jobs, "LoadJobs"), copy_jobs=listed(copy_jobs, "CopyJobs"),
             files_written=listed(sinks.get("files"), "FilesWritten"),
             failures_written=listed(sinks.get("failures"), "FailuresWritten")))


def _read(pipeline: beam.Pipeline, job: Job) -> beam.PCollection:
    if job.input_table:
        return pipeline | "ReadFromBigQuery" >> beam.io.ReadFromBigQuery(table=job.input_table)
    if job.query:
        return pipeline | "ReadFromBigQuery" >> beam.io.ReadFromBigQuery(
            query=job.query, use_standard_sql=True)
    if job.fmt == "tfrecord":
        return pipeline | "ReadExamples" >> beam.io.ReadFromTFRecord(job.pattern)
    if job.fmt == "parquet":
        return pipeline | "ReadParquet" >> beam.io.ReadFromParquet(job.pattern)
    # Text lines are parsed by ToModelInputs, so a line that does not parse fails alone.
    return pipeline | "ReadLines" >> beam.io.ReadFromText(
        job.pattern, skip_header_lines=1 if job.fmt == "csv" else 0)


def _write_predictions(logs: beam.PCollection, job: Job) -> dict[str, Any]:
    """Writes the predictions; returns what each write gave (for ``CommitRun``)."""
    lineage = job.lineage
    sinks: dict[str, Any] = {}
    if job.predictions is not None and job.output_format == "tfrecord":
        sinks["written_files"] = (logs
                                  | "StampLogs" >> beam.Map(stamp_log, lineage)
                                  | "CountWrittenFiles" >> beam.ParDo(CountWritten("files")))
        sinks["files"] = sinks["written_files"] | "WritePredictionLogs" >> \
            beam.io.WriteToTFRecord(
                job.predictions.staging_prefix,
                coder=beam.coders.ProtoCoder(prediction_log_pb2.PredictionLog),
                file_name_suffix=job.predictions.suffix, num_shards=job.num_shards)
    needs_rows = job.table is not None or (job.predictions is not None
                                           and job.output_format != "tfrecord")
    if not needs_rows:
        return sinks
    rows = (logs
            | "ToRows" >> bi.PredictionLogToRows(model_version=lineage.version)
            | "AddLineage" >> beam.Map(with_lineage, lineage))
    if job.predictions is not None and job.output_format == "jsonl":
        sinks["written_files"] = rows | "CountWrittenFiles" >> beam.ParDo(CountWritten("files"))
        sinks["files"] = sinks["written_files"] | "WriteRows" >> formats.WriteRows(
            job.predictions.staging_prefix, fmt="jsonl", num_shards=job.num_shards)
    elif job.predictions is not None and job.output_format == "parquet":
        sinks["written_files"] = (rows
                                  | "ToFlatRows" >> beam.Map(flat_row)
                                  | "CountWrittenFiles" >> beam.ParDo(CountWritten("files")))
        sinks["files"] = sinks["written_files"] | "WriteParquet" >> beam.io.WriteToParquet(
            job.predictions.staging_prefix, PARQUET_SCHEMA,
            file_name_suffix=job.predictions.suffix, num_shards=job.num_shards)
    if job.table is not None:
        sinks["written_table"] = (rows
                                  | "ToBigQueryRows" >> beam.Map(flat_row)
                                  | "CountWrittenTable" >> beam.ParDo(CountWritten("table")))
        sinks["table"] = sinks["written_table"] | "WriteToBigQuery" >> beam.io.WriteToBigQuery(
            job.table.staging_spec, schema=BIGQUERY_SCHEMA,
            method=beam.io.WriteToBigQuery.Method.FILE_LOADS,
            create_disposition=beam.io.BigQueryDisposition.CREATE_IF_NEEDED,
            write_disposition=beam.io.BigQueryDisposition.WRITE_TRUNCATE)
    return sinks


def summarize(result: PipelineResult, elapsed_secs: float) -> Summary:
    """The run's read/scored/failed counters (committed, else attempted) and time."""
    def total(name: str) -> int:
        return run_report.counter_total(result, bi.METRICS_NAMESPACE, name)

    return Summary(read=total(READ), scored=total(SCORED), failed=total(FAILED),
                   elapsed_secs=elapsed_secs,
                   failed_by_stage={s: total(failed_counter(s)) for s in run_report.STAGES})


def run(argv: Sequence[str] | None = None, save_main_session: bool = True,
        test_pipeline: beam.Pipeline | None = None) -> PipelineResult:
    """Runs the job, commits its outputs, prints the summary; returns the ``PipelineResult``.

    With ``--commit=in_pipeline`` the pipeline's last step commits instead, and ``run``
    returns once the runner does (at once for Dataflow) without waiting for the job.

    Raises:
        run_report.UsageError: a configuration mistake, found before anything ran.
        run_report.RunError: the run did not succeed (``TooManyFailuresError``,
            ``NothingScoredError``, or a commit that failed); nothing was committed but
            ``--failed_output``, for too many failures.
    """
    args, pipeline_args = parse_args(argv)
    options = jobs.job_options(pipeline_args, save_main_session)
    # BigQuery first: its flags say more precisely what needs credentials.
    bigquery_preflight.require_credentials(
        "pipelines.batch_scoring", bigquery_preflight.bigquery_flags(args), options,
        test_pipeline)
    jobs.check_services(args, pipeline_args)
    args = prepare_defaults(args)
    start = time.perf_counter()
    job = configure(args, options)
    pipeline = test_pipeline or beam.Pipeline(options=options)
    try:
        build(pipeline, job)
    except ValueError as e:
        raise run_report.UsageError(str(e)) from e
    if job.commit == "in_pipeline":
        with progress.Progress(job.run_id, every_secs=job.progress_secs,
                               expected=job.expected, counters=(SCORED, FAILED)):
            result = pipeline.run()
        if result.state == PipelineState.DONE:  # in-process runners end here
            print(summarize(result, time.perf_counter() - start))
            print(f"committed by the pipeline's last step; manifest {job.plan.manifest_path}")
        else:
            print(f"submitted; the job's last step commits and writes "
                  f"{job.plan.manifest_path} (or {job.plan.failed_manifest_path})")
        return result
    committed = False
    try:
        with progress.Progress(job.run_id, every_secs=job.progress_secs,
                               expected=job.expected, counters=(SCORED, FAILED)) as live:
            result = pipeline.run()
            live.attach(result)
            state = result.wait_until_finish()
        if state not in (None, PipelineState.DONE):
            raise run_report.RunError(f"the pipeline ended in state {state}; nothing was "
                                      "committed.")
        summary = summarize(result, time.perf_counter() - start)
        print(summary)
        written = {sink: run_report.counter_total(result, bi.METRICS_NAMESPACE,
                                                  f"{WRITTEN}_{sink}")
                   for sink in ("files", "table")}
        document = finish.finish(job.plan, summary, written)
        committed = True
        print(f"{finish.describe(document)}; manifest {job.plan.manifest_path}")
    finally:
        if not committed:
            finish.discard(job.plan)
    return result


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Runs the job and returns its exit code (see ``pipelines.run_report``).

    Example:
        >>> main(["--input=in.csv", "--model_path=/models/five/1", "--output=out"])
        0
    """
    try:
        run(argv)
    except SystemExit as e:  # argparse: --help (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else run_report.EXIT_USAGE
    except run_report.UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return run_report.EXIT_USAGE
    except run_report.RunError as e:
        print(f"{prog}: failed ({run_report.EXIT_CODES[e.exit_code]}): {e}", file=sys.stderr)
        return e.exit_code
    except (services.ServiceError, bigquery_preflight.MissingCredentialsError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return run_report.EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - a scheduler needs an exit code, not a crash
        traceback.print_exc()
        print(f"{prog}: error: {type(e).__name__}; nothing was committed.", file=sys.stderr)
        return run_report.EXIT_ERROR
    return run_report.EXIT_OK


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(main())
