"""What a batch scoring run did, what it means for a scheduler, and the manifest it leaves.

Exit codes (``pipelines.batch_scoring.main`` and ``beam-infer score`` return them)::

    0  OK                 every output committed, the manifest written
    1  ERROR              the run failed: pipeline error, unreachable service, missing
                          credentials, failed commit, counts that do not add up.
                          Nothing was committed; a retry may help
    2  USAGE              the flags, or what they point at (model, columns, tables), are
                          wrong; found while the pipeline was built. Fix the command
    3  TOO_MANY_FAILURES  more rows failed than --max_failure_rate allows. Predictions
                          were not committed; --failed_output (if given) was, with reasons
    4  NOTHING_SCORED     no input (no file matched, an empty table or partition), or no
                          row was scored. Nothing was committed

A run that scored nothing never exits 0. ``judge`` raises the exception of each outcome;
each carries its ``exit_code``.

The model's fingerprint (``fingerprint``) is ``sha256:`` and the hex SHA-256 of
``saved_model.pb`` (or ``.pbtxt``) and ``variables/variables.index``, each preceded by its
name and length. The index holds a checksum of every variable's data, so the fingerprint
changes with the graph and with any weight, without reading the (large) data shards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
from collections.abc import Mapping
from typing import Any

import apache_beam as beam
import tensorflow as tf
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult

import beam_infer as bi

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TOO_MANY_FAILURES = 3
EXIT_NOTHING_SCORED = 4
EXIT_CODES = {EXIT_OK: "ok", EXIT_ERROR: "error", EXIT_USAGE: "usage",
              EXIT_TOO_MANY_FAILURES: "too many failures", EXIT_NOTHING_SCORED: "nothing scored"}
STAGES = ("convert", "decode", "validate", "inference", "postprocess")
_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt", "variables/variables.index")


class UsageError(ValueError):
    """A configuration mistake found while the pipeline was built (exit code 2)."""

    exit_code = EXIT_USAGE


class RunError(RuntimeError):
    """The run did not succeed; nothing readers look at was replaced (exit code 1)."""

    exit_code = EXIT_ERROR


class TooManyFailuresError(RunError):
    """More rows failed than ``--max_failure_rate`` allows (exit code 3)."""

    exit_code = EXIT_TOO_MANY_FAILURES


class NothingScoredError(RunError):
    """The run had no input, or scored no row (exit code 4)."""

    exit_code = EXIT_NOTHING_SCORED


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a scoring run did, from the job's metrics."""

    read: int
    scored: int
    failed: int
    elapsed_secs: float
    failed_by_stage: Mapping[str, int] = dataclasses.field(default_factory=dict)

    @property
    def elements_per_sec(self) -> float:
        return self.scored / self.elapsed_secs if self.elapsed_secs > 0 else 0.0

    @property
    def failure_rate(self) -> float:
        return self.failed / self.read if self.read else 0.0

    def __str__(self) -> str:
        stages = ", ".join(f"{stage} {n}" for stage, n in self.failed_by_stage.items() if n)
        return (f"read {self.read}, scored {self.scored}, failed {self.failed}, "
                f"elapsed {self.elapsed_secs:.2f} s, {self.elements_per_sec:.1f} elements/s"
                + (f" (failed by stage: {stages})" if stages else ""))


def counter_total(result: PipelineResult, namespace: str, name: str) -> int:
    """A counter's total over the run: committed where the runner has it, else attempted."""
    query = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))
    return int(sum((c.committed if c.committed is not None else c.attempted) or 0
                   for c in query["counters"]))


def judge(summary: Summary, *, max_failure_rate: float, failed_output: str | None,
          source: str) -> None:
    """Raises unless the run may be committed.

    Raises:
        RunError: the counts do not add up (read != scored + failed).
        NothingScoredError: nothing was read, or nothing scored.
        TooManyFailuresError: failed / read > ``max_failure_rate``.
    """
    if summary.read != summary.scored + summary.failed:
        raise RunError(
            f"the run's counts do not add up: read {summary.read}, scored {summary.scored}, "
            f"failed {summary.failed}; every row should end scored or failed. The runner "
            "may have lost metrics; nothing was committed. Rerun the date.")
    if summary.read == 0:
        raise NothingScoredError(
            f"read no rows from {source}: nothing to score, so nothing was committed. Check "
            "that the input for this run date has landed (and --run_date).")
    if summary.failed and summary.failure_rate > max_failure_rate:
        stages = ", ".join(f"{s} {n}" for s, n in summary.failed_by_stage.items() if n)
        where = (f"The failed rows and their reasons are in {failed_output}."
                 if failed_output else
                 "Without --failed_output any failure fails the run; pass "
                 "--failed_output=PATH to keep the failed rows with their reasons, and "
                 "--max_failure_rate to tolerate a share of them.")
        raise TooManyFailuresError(
            f"{summary.failed} of {summary.read} rows failed ({summary.failure_rate:.2%}; "
            f"by stage: {stages}), more than --max_failure_rate={max_failure_rate:g} allows. "
            f"The predictions were not committed. {where}")
    if summary.scored == 0:
        raise NothingScoredError(
            f"no row of {summary.read} was scored (all failed, which "
            f"--max_failure_rate={max_failure_rate:g} allows), so nothing was committed.")


def fingerprint(model_path: str) -> str:
    """``sha256:<hex>`` of the model's graph and variable index; see the module docstring.

    Raises:
        ValueError: ``model_path`` holds neither ``saved_model.pb`` nor ``.pbtxt``.
    """
    digest = hashlib.sha256()
    found = []
    for name in _MODEL_FILES:
        path = posixpath.join(model_path, name)
        if not FileSystems.exists(path):
            continue
        with FileSystems.open(path) as f:
            data = f.read()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
        found.append(name)
    if not any(name.startswith("saved_model.") for name in found):
        raise ValueError(f"no saved_model.pb in {model_path!r} to fingerprint.")
    return "sha256:" + digest.hexdigest()


def describe_plan(plan: Any) -> dict[str, Any]:
    """The signatures a run called, as plain data for the manifest."""
    return {
        "names": [s.name for s in plan.signatures],
        "method_names": [s.method_name for s in plan.signatures],
        "operation": plan.operation.value,
        "feed": plan.feed.value,
        "inputs": [t.describe() for t in plan.signatures[0].inputs],
        "outputs": {s.name: [t.describe() for t in s.outputs] for s in plan.signatures},
    }


def versions() -> dict[str, str]:
    """The versions of beam_infer, Apache Beam and TensorFlow that ran the job."""
    # The code that ran, not an installed distribution's metadata (which an editable
    # install leaves at the version it was installed with).
    return {"beam_infer": bi.__version__, "apache_beam": beam.__version__,
            "tensorflow": tf.__version__}


def manifest(*, status: str, exit_code: int, run_id: str, run_date: str,
             input_: Mapping[str, Any], summary: Summary, max_failure_rate: float,
             model: Mapping[str, Any], signature: Mapping[str, Any],
             columns: Mapping[str, Any], outputs: Mapping[str, Any], start: str, end: str,
             written: int, reason: str | None = None) -> dict[str, Any]:
    """The run's manifest (JSON): what was read, scored and written, by which model.

    ``written`` is the rows the run handed to its (first) output, 0 when nothing was
    committed; a successful run's ``written`` equals ``scored``.
    """
    return {
        "status": status,
        "exit_code": exit_code,
        "reason": reason,
        "run_id": run_id,
        "run_date": run_date,
        "input": {**input_, "count": summary.read},
        "counts": {"read": summary.read, "scored": summary.scored, "failed": summary.failed,
                   "failed_by_stage": dict(summary.failed_by_stage),
                   "written": written},
        "max_failure_rate": max_failure_rate,
        "failure_rate": summary.failure_rate,
        "model": dict(model),
        "signature": dict(signature),
        "columns": dict(columns),
        "outputs": dict(outputs),
        "versions": versions(),
        "start": start,
        "end": end,
        "elapsed_secs": round(summary.elapsed_secs, 3),
        "elements_per_sec": round(summary.elements_per_sec, 3),
    }
