"""Ending a batch scoring run: judge it, commit or discard its outputs, write its manifest.

``finish`` does it from the run's counts; it is called in one of two places, as
``--commit`` says:

* ``after_run`` (default): in the process that launched the job, once
  ``wait_until_finish()`` returns, from the job's Beam metrics. The process then exits with
  the run's code (``pipelines.run_report``), which is what Airflow, cron and Cloud Run
  jobs act on.
* ``in_pipeline``: as the pipeline's last step (``CommitRunFn``) on a worker, from counts
  the pipeline computes itself, once every write has finished (it waits for BigQuery load
  jobs too). A run that fails its checks fails the job. For launchers that do not wait
  for the job to end, such as Dataflow Flex Templates.

Order on success: the old manifest is deleted, predictions committed, then the BigQuery
table, then the failures, and the new manifest written last. On too many failures, the
failures are committed (they say why) and the rest discarded; a
``<manifest>.failed.json`` records the run either way it failed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines import run_report, staging
from pipelines.run_report import Summary

COMMIT_MODES = ("after_run", "in_pipeline")


@dataclasses.dataclass(frozen=True)
class CommitPlan:
    """What ``finish`` needs, fixed when the pipeline is built (picklable for workers)."""

    run_id: str
    run_date: str
    source: str
    input: Mapping[str, Any]
    model: Mapping[str, Any]
    signature: Mapping[str, Any]
    columns: Mapping[str, Any]
    predictions: staging.FileOutput | None
    table: staging.TableOutput | None
    failures: staging.FileOutput | None
    manifest_path: str
    max_failure_rate: float
    started_at: str
    started_epoch: float

    @property
    def failed_manifest_path(self) -> str:
        return self.manifest_path.removesuffix(".json") + ".failed.json"

    @property
    def outputs(self) -> tuple[Any, ...]:
        return tuple(o for o in (self.predictions, self.table, self.failures) if o is not None)


def finish(plan: CommitPlan, summary: Summary, written: Mapping[str, int]) -> dict[str, Any]:
    """Judges the run, then commits (returns the manifest) or discards and raises.

    Args:
        written: Rows handed to each sink, ``{"files": n, "table": n}``.

    Raises:
        run_report.RunError: the run failed its checks, or committing failed.
    """
    try:
        run_report.judge(summary, max_failure_rate=plan.max_failure_rate,
                         failed_output=plan.failures and plan.failures.pattern,
                         source=plan.source)
    except run_report.RunError as e:
        outputs = {}
        if isinstance(e, run_report.TooManyFailuresError) and plan.failures is not None:
            outputs["failed"] = _commit_files(plan.failures, summary.failed)
        discard(plan)
        staging.write_json(plan.failed_manifest_path, _manifest(
            plan, summary, outputs, status="failed", exit_code=e.exit_code, reason=str(e),
            written=0))
        raise
    try:
        staging.delete_if_present(plan.manifest_path)  # readers wait for the new one
        staging.delete_if_present(plan.failed_manifest_path)
        outputs = {}
        if plan.predictions is not None:
            outputs["predictions"] = _commit_files(plan.predictions, written["files"])
        if plan.table is not None:
            plan.table.commit()
            outputs["table"] = {"table": plan.table.spec, "rows": written["table"],
                                "write_disposition": "WRITE_TRUNCATE"}
        if plan.failures is not None:
            outputs["failed"] = _commit_files(plan.failures, summary.failed)
    except Exception as e:
        raise run_report.RunError(
            f"committing the outputs failed ({type(e).__name__}: {str(e)[:500]}); some may "
            f"be half replaced and no manifest was written to {plan.manifest_path}. Rerun "
            "the date.") from e
    document = _manifest(plan, summary, outputs, status="succeeded",
                         exit_code=run_report.EXIT_OK,
                         written=written["files"] if plan.predictions else written["table"])
    staging.write_json(plan.manifest_path, document)
    return document


def describe(document: Mapping[str, Any]) -> str:
    """``committed 4 predictions row(s) to D/part-*-of-*.jsonl; manifest M``."""
    parts = [f"{o['rows']} {name} row(s) to {o.get('pattern') or o.get('table')}"
             for name, o in document["outputs"].items()]
    return f"committed {', '.join(parts)}"


def discard(plan: CommitPlan) -> None:
    """Best effort: removes what a run that does not commit staged."""
    import logging

    for output in plan.outputs:
        try:
            output.discard()
        except Exception as e:  # noqa: BLE001 - cleaning up must not hide why the run failed
            logging.getLogger(__name__).warning(
                "could not remove the staging output of run %s: %s", plan.run_id,
                type(e).__name__)


def _commit_files(output: staging.FileOutput, rows: int) -> dict[str, Any]:
    return {"prefix": output.prefix, "pattern": output.pattern, "files": output.commit(),
            "rows": rows}


def _manifest(plan: CommitPlan, summary: Summary, outputs: Mapping[str, Any], *, status: str,
              exit_code: int, written: int, reason: str | None = None) -> dict[str, Any]:
    import datetime

    return run_report.manifest(
        status=status, exit_code=exit_code, reason=reason, run_id=plan.run_id,
        run_date=plan.run_date, input_=plan.input, summary=summary,
        max_failure_rate=plan.max_failure_rate, model=plan.model, signature=plan.signature,
        columns=plan.columns, outputs=outputs, start=plan.started_at,
        end=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        written=written)


class CommitRunFn(beam.DoFn):
    """The pipeline's last step for ``--commit=in_pipeline``: ``finish`` on a worker.

    Its main input is one element; the side inputs are the counts and what the writes
    returned (so it runs after them). A retried bundle does not commit twice: a manifest
    of this run already written ends the step (or raises its recorded failure again).
    """

    def __init__(self, plan: CommitPlan):
        self._plan = plan

    def process(self, _: Any, *, inputs: int, convert_failed: int, scored: int,
                failed_by_stage: Mapping[str, int], written_files: int, written_table: int,
                load_jobs: list, copy_jobs: list, **after_writes: Any) -> Iterator[str]:
        plan = self._plan
        earlier = _this_runs_manifest(plan)
        if earlier is not None:
            if earlier["status"] == "succeeded":
                yield plan.manifest_path
                return
            raise _error_for(earlier)
        if plan.table is not None:
            _wait_for_bigquery_jobs([*load_jobs, *copy_jobs])
        by_stage = {stage: int(failed_by_stage.get(stage, 0)) for stage in run_report.STAGES}
        by_stage["convert"] += convert_failed
        summary = Summary(read=inputs + convert_failed, scored=scored,
                          failed=sum(by_stage.values()),
                          elapsed_secs=time.time() - plan.started_epoch,
                          failed_by_stage=by_stage)
        finish(plan, summary, {"files": written_files, "table": written_table})
        yield plan.manifest_path


def _this_runs_manifest(plan: CommitPlan) -> dict[str, Any] | None:
    import json

    for path in (plan.manifest_path, plan.failed_manifest_path):
        if FileSystems.exists(path):
            with FileSystems.open(path) as f:
                document = json.loads(f.read())
            if document.get("run_id") == plan.run_id:
                return document
    return None


def _error_for(document: Mapping[str, Any]) -> run_report.RunError:
    kinds = {run_report.EXIT_TOO_MANY_FAILURES: run_report.TooManyFailuresError,
             run_report.EXIT_NOTHING_SCORED: run_report.NothingScoredError}
    return kinds.get(document["exit_code"], run_report.RunError)(document["reason"])


def _wait_for_bigquery_jobs(pairs: list) -> None:
    from apache_beam.io.gcp import bigquery_tools

    wrapper = bigquery_tools.BigQueryWrapper()
    for _, job in pairs:
        wrapper.wait_for_bq_job(job, sleep_duration_sec=staging.COPY_POLL_SECS,
                                max_retries=int(staging.COPY_TIMEOUT_SECS
                                                / staging.COPY_POLL_SECS))
