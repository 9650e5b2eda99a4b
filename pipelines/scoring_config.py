"""Resolving batch scoring's flags against the model and the input, before anything runs.

``configure`` turns the parsed flags of ``pipelines.batch_scoring`` into a ``Job``: the run
date filled into every path, table and query; the model read once (``bi.RunInference``
checks its path, tags and signatures); the columns mapped onto the signature and, where
the input's columns can be seen without reading it (CSV header, Parquet footers, a
BigQuery table's schema), checked; the outputs' staging places; the ``CommitPlan`` that
ends the run. Every mistake is found here and raised as ``run_report.UsageError`` (exit
code 2) with what was wrong, what was found and how to fix it; an input pattern that
matches no file is ``run_report.NothingScoredError`` (exit code 4).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import posixpath
import time

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

import beam_infer as bi
from pipelines import columns, finish, model_flags, question_rows, run_report, staging, tables
from pipelines.scoring_steps import Lineage

DEFAULT_MAX_FAILURE_RATE = 0.01  # with --failed_output; without it, any failure fails


@dataclasses.dataclass(frozen=True)
class Job:
    """Everything a run needs, resolved and checked while the pipeline is built."""

    run_id: str
    fmt: str | None  # file format; None for BigQuery
    pattern: str | None
    input_table: str | None
    query: str | None
    header: list[str]
    expected: int | None
    transform: bi.RunInference
    mapping: columns.RowMapping
    lineage: Lineage
    output_format: str
    num_shards: int
    progress_secs: float
    commit: str
    plan: finish.CommitPlan

    @property
    def predictions(self) -> staging.FileOutput | None:
        return self.plan.predictions

    @property
    def table(self) -> staging.TableOutput | None:
        return self.plan.table

    @property
    def failures(self) -> staging.FileOutput | None:
        return self.plan.failures


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
    question_rows.check_table("--input_table", input_table)
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

    endpoint = model_flags.uses_endpoint(args)
    if endpoint and args.tag:
        raise ValueError(f"--tag={args.tag[0]} picks a SavedModel's MetaGraph; an --endpoint "
                         "serves its own. Drop --tag.")
    fields = {"tags": tuple(args.tag)} if not endpoint else {}
    if args.signature_name:  # else each spec's default, serving_default
        fields["signature_names"] = tuple(args.signature_name)
    spec = model_flags.model_spec(
        args, lambda: args.model_path,
        batching=bi.BatchConfig(max_batch_size=args.max_batch_size),
        pad_variable_length_inputs=args.pad_variable_length_inputs, **fields)
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
    source = args.endpoint or args.model_path
    tags = () if endpoint else spec.effective_tags
    version = args.model_version or (None if served.version is None else str(served.version)) \
        or (None if endpoint else _numbered(served.path))
    lineage = Lineage(
        name=served.name or posixpath.basename(source.rstrip("/")),
        version=version,
        # A SavedModel's bytes are fingerprinted; an endpoint's are the server's, so its
        # URL and the version it named at build time identify it.
        fingerprint=f"{spec.url}@{version or 'unversioned'}" if endpoint
        else run_report.fingerprint(served.path),
        signature=handler.plan.signatures[0].name, tags=tags)
    model = {"path": source, "served_path": served.path, "name": lineage.name,
             "version": lineage.version, "fingerprint": lineage.fingerprint,
             "tags": list(tags)}

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
    plan = finish.CommitPlan(
        run_id=run_id, run_date=run_date.isoformat(), source=source, input=input_doc,
        model=model, signature=run_report.describe_plan(handler.plan),
        columns=mapping.describe(), predictions=predictions, table=table, failures=failures,
        manifest_path=manifest_path, max_failure_rate=max_failure_rate,
        started_at=now_utc(), started_epoch=time.time())
    return Job(run_id=run_id, fmt=fmt, pattern=pattern, input_table=input_table, query=query,
               header=header, expected=expected, transform=transform, mapping=mapping,
               lineage=lineage, output_format=args.output_format, num_shards=args.num_shards,
               progress_secs=args.progress_secs, commit=args.commit, plan=plan)


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




def now_utc() -> str:
    """Now, UTC, to the second: ``2024-05-01T03:15:00+00:00``."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
