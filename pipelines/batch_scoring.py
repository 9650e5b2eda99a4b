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
import dataclasses
import datetime
import logging
import os
import posixpath
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions
from apache_beam.runners.runner import PipelineResult, PipelineState
from tensorflow_serving.apis import prediction_log_pb2

import beam_infer as bi
from pipelines import (
    bigquery_preflight,
    columns,
    jobs,
    keyed,
    models,
    postprocess,
    progress,
    run_report,
    services,
    staging,
    tables,
)
from pipelines.run_report import Summary
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
    Lineage,
    ToModelInputFn,
    failed_counter,
    failure_json,
    flat_row,
    stamp_log,
    with_lineage,
)

OUTPUT_FORMATS = ("jsonl", "parquet", "tfrecord")
DEFAULT_MAX_FAILURE_RATE = 0.01  # with --failed_output; without it, any failure fails
DEFAULT_PROGRESS_SECS = 60.0
PROG = "python -m pipelines.batch_scoring"
__all__ = ["BIGQUERY_SCHEMA", "PARQUET_SCHEMA", "Summary", "build", "main", "parse_args",
           "run", "summarize"]


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
    parser.add_argument("--model_path", help="SavedModel (or a base path of numbered "
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
    return parser


def parse_args(argv: Sequence[str] | None, *, prog: str | None = None
               ) -> tuple[argparse.Namespace, list[str]]:
    return build_parser(prog).parse_known_args(argv)


def prepare_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Builds the demo model and input under ``work_dir`` for flags left unset."""
    os.makedirs(args.work_dir, exist_ok=True)
    if not args.model_path:
        args.model_path = models.five_model(args.work_dir)
    if not (args.input or args.input_table or args.query):
        args.input = models.write_examples(
            os.path.join(args.work_dir, "questions.tfrecord"),
            [value for _, value in models.read_questions()])
    if not (args.output or args.output_table):
        args.output = os.path.join(args.work_dir, "scores")
    return args


@dataclasses.dataclass(frozen=True)
class Job:
    """Everything a run needs, resolved and checked while the pipeline is built."""

    run_id: str
    run_date: datetime.date
    source: str  # for messages: "--input=..." or "--input_table=..."
    input: dict[str, Any]  # for the manifest
    fmt: str | None  # file format; None for BigQuery
    pattern: str | None
    input_table: str | None
    query: str | None
    header: list[str]
    expected: int | None
    transform: bi.RunInference
    mapping: columns.RowMapping
    lineage: Lineage
    model: dict[str, Any]
    output_format: str
    num_shards: int
    predictions: staging.FileOutput | None
    table: staging.TableOutput | None
    failures: staging.FileOutput | None
    manifest_path: str
    max_failure_rate: float
    progress_secs: float

    @property
    def failed_manifest_path(self) -> str:
        return self.manifest_path.removesuffix(".json") + ".failed.json"


def configure(args: argparse.Namespace, options: PipelineOptions) -> Job:
    """Resolves the run's flags against the model and the input.

    Raises:
        run_report.UsageError: a flag, or what it points at, is wrong.
        run_report.NothingScoredError: no input file matches.
    """
    try:
        return _configure(args, options)
    except (run_report.UsageError, run_report.NothingScoredError):
        raise
    except ValueError as e:  # ours, and bi.ConfigurationError
        raise run_report.UsageError(str(e)) from e


def _configure(args: argparse.Namespace, options: PipelineOptions) -> Job:
    run_date = staging.parse_run_date(args.run_date)
    run_id = staging.new_run_id()
    max_failure_rate = _max_failure_rate(args)
    for flag, value in (("--num_shards", args.num_shards),
                        ("--progress_secs", args.progress_secs)):
        if value < 0:
            raise ValueError(f"{flag} must be 0 or more; got {value:g}.")
    pattern = staging.fill(args.input, run_date)
    input_table = staging.fill(args.input_table, run_date)
    query = staging.fill(args.query, run_date)
    keyed.check_table("--input_table", input_table)
    fmt = tables.detect_format(pattern, args.input_format) if pattern else None
    if fmt == "tfrecord" and args.key_column:
        raise ValueError(
            f"--key_column={args.key_column} needs a table input (csv, jsonl, parquet); "
            f"{pattern!r} is a TFRecord of Examples, which has no columns. Drop "
            "--key_column or convert the input.")
    files = tables.match_files(pattern) if pattern else []
    if pattern and not files:
        raise run_report.NothingScoredError(
            f"no file matches --input={pattern} (run date {run_date}): nothing to score, so "
            "nothing was committed. Check that the input for this date has landed.")

    spec = bi.ModelSpec(
        model_path=args.model_path, signature_names=tuple(args.signature_name),
        tags=tuple(args.tag), batching=bi.BatchConfig(max_batch_size=args.max_batch_size),
        pad_variable_length_inputs=args.pad_variable_length_inputs)
    transform = bi.RunInference(spec)  # reads and checks the signatures, once
    handler = transform.handler
    mapping = columns.RowMapping.for_plan(
        handler.plan, input_map=columns.parse_input_map(args.input_map),
        key_column=args.key_column, feature_types=tables.parse_feature_types(args.feature_types),
        text_cells=fmt == "csv", model_path=handler.model_version.path)

    header: list[str] = []
    known: list[str] | None = None
    expected = None
    if fmt == "csv":
        header = known = tables.csv_header(pattern)
    elif fmt == "parquet":
        known, expected = tables.parquet_footers(files)
    elif input_table:
        project = options.view_as(GoogleCloudOptions).project
        known, expected = staging.table_info(input_table, project=project)
    if known is not None:
        mapping.check_columns(known, f"--input {pattern}" if pattern else
                              f"--input_table {input_table}")

    served = handler.model_version
    lineage = Lineage(
        name=served.name or posixpath.basename(args.model_path.rstrip("/")),
        version=args.model_version or (None if served.version is None else str(served.version))
        or _numbered(served.path),
        fingerprint=run_report.fingerprint(served.path),
        signature=handler.plan.signatures[0].name, tags=spec.effective_tags)
    model = {"path": args.model_path, "served_path": served.path, "name": lineage.name,
             "version": lineage.version, "fingerprint": lineage.fingerprint,
             "tags": list(spec.effective_tags)}

    output = staging.fill(args.output, run_date)
    predictions = (staging.FileOutput.at(output, suffix=f".{args.output_format}", run_id=run_id)
                   if output else None)
    project = options.view_as(GoogleCloudOptions).project
    output_table = staging.fill(args.output_table, run_date)
    table = (staging.TableOutput.parse(output_table, project=project, run_id=run_id)
             if output_table else None)
    failed_output = staging.fill(args.failed_output, run_date)
    failures = (staging.FileOutput.at(failed_output, suffix=".jsonl", run_id=run_id)
                if failed_output else None)
    if predictions and failures and predictions.prefix == failures.prefix:
        raise ValueError(
            f"--output and --failed_output are both {predictions.prefix!r}; a rerun would "
            "replace one with the other. Give them different prefixes.")
    manifest_path = staging.fill(args.manifest, run_date) or _default_manifest(
        predictions, table, args.work_dir)

    source = f"--input={pattern}" if pattern else (
        f"--input_table={input_table}" if input_table else "--query")
    input_doc = ({"pattern": pattern, "format": fmt, "files": len(files)} if pattern else
                 {"table": input_table} if input_table else {"query": query})
    return Job(run_id=run_id, run_date=run_date, source=source, input=input_doc, fmt=fmt,
               pattern=pattern, input_table=input_table, query=query, header=header,
               expected=expected, transform=transform, mapping=mapping, lineage=lineage,
               model=model, output_format=args.output_format, num_shards=args.num_shards,
               predictions=predictions, table=table, failures=failures,
               manifest_path=manifest_path, max_failure_rate=max_failure_rate,
               progress_secs=args.progress_secs)


def _max_failure_rate(args: argparse.Namespace) -> float:
    if args.max_failure_rate is None:
        return DEFAULT_MAX_FAILURE_RATE if args.failed_output else 0.0
    if not 0.0 <= args.max_failure_rate <= 1.0:
        raise ValueError(
            f"--max_failure_rate is a share of the rows read, from 0 to 1; got "
            f"{args.max_failure_rate:g}. Example: --max_failure_rate=0.01 (1%).")
    return args.max_failure_rate


def _numbered(path: str) -> str | None:
    """A TF Serving-style version folder's number (``/models/five/3`` → ``"3"``)."""
    name = posixpath.basename(path.rstrip("/"))
    return name if name.isascii() and name.isdigit() else None


def _default_manifest(predictions: staging.FileOutput | None,
                      table: staging.TableOutput | None, work_dir: str) -> str:
    if predictions is not None:
        return FileSystems.join(predictions.directory,
                                        f"_{predictions.basename}.manifest.json")
    assert table is not None
    name = f"_{table.dataset}.{table.table.replace('$', '_')}.manifest.json"
    return os.path.join(os.path.abspath(work_dir), name)


def build(pipeline: beam.Pipeline, job: Job) -> None:
    """Applies the job's steps to ``pipeline``, every output written to its staging place."""
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
    _write_predictions(scored, job)
    if job.failures is not None:
        _ = ((converted[FAILED_TAG], failed)
             | "FlattenFailures" >> beam.Flatten()
             | "FailureToJson" >> beam.Map(failure_json)
             | "WriteFailures" >> beam.io.WriteToText(
                 job.failures.staging_prefix, file_name_suffix=job.failures.suffix,
                 num_shards=job.num_shards))


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


def _write_predictions(logs: beam.PCollection, job: Job) -> None:
    lineage = job.lineage
    if job.predictions is not None and job.output_format == "tfrecord":
        _ = (logs
             | "StampLogs" >> beam.Map(stamp_log, lineage)
             | "CountWrittenFiles" >> beam.ParDo(CountWritten("files"))
             | "WritePredictionLogs" >> beam.io.WriteToTFRecord(
                 job.predictions.staging_prefix,
                 coder=beam.coders.ProtoCoder(prediction_log_pb2.PredictionLog),
                 file_name_suffix=job.predictions.suffix, num_shards=job.num_shards))
    needs_rows = job.table is not None or (job.predictions is not None
                                           and job.output_format != "tfrecord")
    if not needs_rows:
        return
    rows = (logs
            | "ToRows" >> bi.PredictionLogToRows(model_version=lineage.version)
            | "AddLineage" >> beam.Map(with_lineage, lineage))
    if job.predictions is not None and job.output_format == "jsonl":
        _ = (rows
             | "CountWrittenFiles" >> beam.ParDo(CountWritten("files"))
             | "WriteRows" >> postprocess.WriteRows(job.predictions.staging_prefix,
                                                    fmt="jsonl", num_shards=job.num_shards))
    elif job.predictions is not None and job.output_format == "parquet":
        _ = (rows
             | "ToFlatRows" >> beam.Map(flat_row)
             | "CountWrittenFiles" >> beam.ParDo(CountWritten("files"))
             | "WriteParquet" >> beam.io.WriteToParquet(
                 job.predictions.staging_prefix, PARQUET_SCHEMA,
                 file_name_suffix=job.predictions.suffix, num_shards=job.num_shards))
    if job.table is not None:
        _ = (rows
             | "ToBigQueryRows" >> beam.Map(flat_row)
             | "CountWrittenTable" >> beam.ParDo(CountWritten("table"))
             | "WriteToBigQuery" >> beam.io.WriteToBigQuery(
                 job.table.staging_spec, schema=BIGQUERY_SCHEMA,
                 method=beam.io.WriteToBigQuery.Method.FILE_LOADS,
                 create_disposition=beam.io.BigQueryDisposition.CREATE_IF_NEEDED,
                 write_disposition=beam.io.BigQueryDisposition.WRITE_TRUNCATE))


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

    Raises:
        run_report.UsageError: a configuration mistake, found before anything ran.
        run_report.RunError: the run did not succeed (``TooManyFailuresError``,
            ``NothingScoredError``, or a commit that failed); nothing was committed but
            ``--failed_output``, for too many failures.
    """
    args, pipeline_args = parse_args(argv)
    options = jobs.job_options(pipeline_args, save_main_session)
    # BigQuery first: its flags say more precisely what needs credentials.
    bigquery_preflight.require_credentials("pipelines.batch_scoring", _bigquery_flags(args),
                                           options, test_pipeline)
    jobs.check_services(args, pipeline_args)
    args = prepare_defaults(args)
    started_at = _now()
    start = time.perf_counter()
    job = configure(args, options)
    pipeline = test_pipeline or beam.Pipeline(options=options)
    try:
        build(pipeline, job)
    except ValueError as e:
        raise run_report.UsageError(str(e)) from e
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
        _finish(job, result, summary, started_at)
        committed = True
    finally:
        if not committed:
            _discard(job)
    return result


def _finish(job: Job, result: PipelineResult, summary: Summary, started_at: str) -> None:
    written = {sink: run_report.counter_total(result, bi.METRICS_NAMESPACE, f"{WRITTEN}_{sink}")
               for sink in ("files", "table")}
    try:
        run_report.judge(summary, max_failure_rate=job.max_failure_rate,
                         failed_output=job.failures and job.failures.pattern,
                         source=job.source)
    except run_report.RunError as e:
        outputs = {}
        if isinstance(e, run_report.TooManyFailuresError) and job.failures is not None:
            outputs["failed"] = _commit_files(job.failures, summary.failed)
        _discard(job)
        staging.write_json(job.failed_manifest_path, _manifest(
            job, summary, written, outputs, started_at, status="failed",
            exit_code=e.exit_code, reason=str(e)))
        raise
    try:
        staging.delete_if_present(job.manifest_path)  # readers wait for the new one
        staging.delete_if_present(job.failed_manifest_path)
        outputs = {}
        if job.predictions is not None:
            outputs["predictions"] = _commit_files(job.predictions, written["files"])
        if job.table is not None:
            job.table.commit()
            outputs["table"] = {"table": job.table.spec, "rows": written["table"],
                                "write_disposition": "WRITE_TRUNCATE"}
        if job.failures is not None:
            outputs["failed"] = _commit_files(job.failures, summary.failed)
    except Exception as e:
        raise run_report.RunError(
            f"committing the outputs failed ({type(e).__name__}: {str(e)[:500]}); some may "
            f"be half replaced and no manifest was written to {job.manifest_path}. Rerun "
            "the date.") from e
    staging.write_json(job.manifest_path, _manifest(job, summary, written, outputs,
                                                    started_at, status="succeeded",
                                                    exit_code=run_report.EXIT_OK))
    print(f"committed {', '.join(_describe(k, v) for k, v in outputs.items())}; "
          f"manifest {job.manifest_path}")


def _commit_files(output: staging.FileOutput, rows: int) -> dict[str, Any]:
    return {"prefix": output.prefix, "pattern": output.pattern, "files": output.commit(),
            "rows": rows}


def _describe(name: str, output: dict[str, Any]) -> str:
    where = output.get("pattern") or output.get("table")
    return f"{output['rows']} {name} row(s) to {where}"


def _manifest(job: Job, summary: Summary, written: dict[str, int], outputs: dict[str, Any],
              started_at: str, *, status: str, exit_code: int,
              reason: str | None = None) -> dict[str, Any]:
    document = run_report.manifest(
        status=status, exit_code=exit_code, reason=reason, run_id=job.run_id,
        run_date=job.run_date.isoformat(), input_=job.input, summary=summary,
        max_failure_rate=job.max_failure_rate, model=job.model,
        signature=run_report.describe_plan(job.transform.handler.plan),
        columns=job.mapping.describe(), outputs=outputs, start=started_at, end=_now(),
        written=0 if status != "succeeded" else (
            written["files"] if job.predictions is not None else written["table"]))
    return document


def _discard(job: Job) -> None:
    """Best effort: a run that does not commit removes what it staged."""
    for output in (job.predictions, job.table, job.failures):
        if output is None:
            continue
        try:
            output.discard()
        except Exception as e:  # noqa: BLE001 - cleaning up must not hide why the run failed
            logging.getLogger(__name__).warning(
                "could not remove the staging output of run %s: %s", job.run_id,
                type(e).__name__)


def _bigquery_flags(args: argparse.Namespace) -> list[str]:
    return [f"--{name}" for name in ("input_table", "query", "output_table")
            if getattr(args, name, None)]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


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
