"""What every job shares: Beam's example contract, the answers, and what a run says.

A job's ``run(argv)`` builds and runs its pipeline and ends with one summary line::

    pipelines.keyed: 4 in, 4 out, 0 failed, 2.31 s; outputs: work/keyed/output

Its ``__main__`` block is ``jobs.main(run)``: start-up noise from TensorFlow and Beam is
quiet (see ``pipelines/__init__.py`` and ``quiet_startup``), and a failure ends in one
error line with a hint instead of a traceback; ``--verbose`` keeps the noise and prints
the traceback as well. Only the jobs do this: importing ``beam_infer`` changes no logging.

The jobs' code ships to remote workers pickled by value (``job_options``), so a worker
needs the ``beam_infer`` library installed but not this checkout's ``pipelines`` package.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions
from apache_beam.runners.runner import PipelineResult

import beam_infer as bi
from beam_infer import _quiet
from pipelines import services

NAMESPACE = "pipelines"
ELEMENTS_IN = "job_elements_in"
ELEMENTS_OUT = "job_elements_out"
ELEMENTS_FAILED = "job_elements_failed"
VERBOSE_FLAG = "--verbose"


def job_options(pipeline_args: Sequence[str], save_main_session: bool) -> PipelineOptions:
    """Beam's options from every flag the job did not take (``--runner`` among them).

    Also registers this package for pickling by value, so DoFns and functions from
    ``pipelines`` reach Dataflow (or any remote) workers with the job instead of
    needing an installed ``pipelines`` package there (see docs/packaging.md).
    """
    ship_jobs_by_value()
    options = PipelineOptions(list(pipeline_args))
    options.view_as(SetupOptions).save_main_session = save_main_session
    return options


def ship_jobs_by_value() -> None:
    """Pickles the ``pipelines`` package's functions and classes by value, not by name.

    Beam pickles with cloudpickle (its default since 2.65); a module registered here has
    its code sent in the pickles, as ``__main__``'s is. Has no effect with
    ``--pickle_library=dill``, which would need ``pipelines`` importable on the workers.
    """
    from apache_beam.internal.cloudpickle import cloudpickle

    package = sys.modules[__package__ or "pipelines"]
    if package.__name__ not in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.register_pickle_by_value(package)


def check_services(args: argparse.Namespace, pipeline_args: Sequence[str], *,
                   pubsub_topics: Sequence[str | None] = (),
                   pubsub_subscriptions: Sequence[str | None] = ()) -> None:
    """Fails in seconds if a cloud service the job's flags name cannot be used.

    Raises:
        services.ServiceError: see ``pipelines.services``.
    """
    services.check_job_services(
        [*vars(args).values(), *pipeline_args],
        pubsub_topics=pubsub_topics, pubsub_subscriptions=pubsub_subscriptions)


def run_job(build: Callable[[beam.Pipeline], Any], options: PipelineOptions,
            test_pipeline: beam.Pipeline | None = None, *, job: str | None = None,
            outputs: Sequence[str | None] = ()) -> PipelineResult:
    """Builds the job on ``test_pipeline`` or a new pipeline, runs it to the end.

    With ``job`` set, prints the closing summary line (see ``summary_line``).
    """
    start = time.perf_counter()
    pipeline = test_pipeline or beam.Pipeline(options=options)
    build(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    if job is not None:
        print(summary_line(job, result, time.perf_counter() - start, outputs))
    return result


def print_and_write(lines: beam.PCollection, output: str) -> None:
    """Prints each answer line and writes them all to one text file ``output``."""
    lines = lines | "CountOut" >> CountElements(ELEMENTS_OUT)
    _ = lines | "Print" >> beam.Map(print)
    _ = lines | "WriteResults" >> beam.io.WriteToText(output, shard_name_template="")


class CountElements(beam.PTransform):
    """Passes elements on unchanged, counting them in ``pipelines/<counter>``.

    The jobs count what they read (``ELEMENTS_IN``), wrote (``ELEMENTS_OUT``) and set
    aside (``ELEMENTS_FAILED``); the summary line reads the counters back.
    """

    def __init__(self, counter: str):
        super().__init__()
        self._counter = counter

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        counted = pcoll | "Count" >> beam.Map(_count, self._counter)
        if pcoll.element_type is not None:
            counted.element_type = pcoll.element_type  # keys stay declared for RunInference
        return counted


def _count(element: Any, counter: str) -> Any:
    Metrics.counter(NAMESPACE, counter).inc()
    return element


def counter_total(result: PipelineResult, namespace: str, name: str | None = None,
                  prefix: str | None = None) -> int:
    """A counter's total (committed where the runner has it, else attempted)."""
    metrics_filter = MetricsFilter().with_namespace(namespace)
    if name is not None:
        metrics_filter = metrics_filter.with_name(name)
    counters = result.metrics().query(metrics_filter)["counters"]
    return int(sum((c.committed if c.committed is not None else c.attempted) or 0
                   for c in counters
                   if prefix is None or c.key.metric.name.startswith(prefix)))


def summary_line(job: str, result: PipelineResult, elapsed_secs: float,
                 outputs: Sequence[str | None]) -> str:
    """``<job>: N in, N out, N failed, S s; outputs: a, b`` from the job's counters.

    Failed counts the elements the job set aside itself and beam_infer's dead letters
    (``beam_infer/failed_elements_*``).
    """
    read = counter_total(result, NAMESPACE, ELEMENTS_IN)
    written = counter_total(result, NAMESPACE, ELEMENTS_OUT)
    failed = counter_total(result, NAMESPACE, ELEMENTS_FAILED) + counter_total(
        result, bi.METRICS_NAMESPACE, prefix="failed_elements_")
    where = ", ".join(o for o in outputs if o) or "none"
    return (f"{job}: {read} in, {written} out, {failed} failed, {elapsed_secs:.2f} s; "
            f"outputs: {where}")


# --- running a job from the command line ----------------------------------------------


def main(run: Callable[[Sequence[str]], Any], argv: Sequence[str] | None = None) -> NoReturn:
    """Runs a job as ``python -m pipelines.<job>`` does; exits 0, 1 on failure, 130 on Ctrl-C.

    ``--verbose`` (taken out before the job sees its flags) keeps TensorFlow's and Beam's
    start-up logs and prints the traceback of a failure; without it a failure is one
    line: ``<job>: error: <Type>: <message> (<hint>)``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = VERBOSE_FLAG in args
    args = [a for a in args if a != VERBOSE_FLAG]
    quiet_startup(verbose)
    job = job_name(run)
    try:
        run(args)
    except KeyboardInterrupt:
        print(f"{job}: stopped (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line
        if verbose:
            traceback.print_exc()
        print(error_line(job, e), file=sys.stderr)
        sys.exit(1)
    sys.exit(0)


def job_name(run: Callable[..., Any]) -> str:
    """``pipelines.keyed`` for the job's ``run``, also when it runs as ``__main__``."""
    module = run.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        return spec.name if spec is not None else os.path.basename(sys.argv[0])
    return module


_WHILE_RUNNING = re.compile(r"\s*\[while running '[^']*'\]")


def error_line(job: str, error: BaseException) -> str:
    """One line: the error's type and message (Beam's step names cut) and a hint."""
    message = _WHILE_RUNNING.sub("", " ".join(str(error).split())) or "(no message)"
    return f"{job}: error: {type(error).__name__}: {message} ({_hint(error)})"


def _hint(error: BaseException) -> str:
    again = f"rerun with {VERBOSE_FLAG} for the traceback"
    if isinstance(error, bi.BeamInferError | services.ServiceError):
        return again  # their messages say what to change
    if isinstance(error, OSError):
        return f"check the path and that this machine can read it; {again}"
    if isinstance(error, ValueError | TypeError):
        return f"check the job's flags and input (--help lists the flags); {again}"
    return f"{again}, and report it if the message does not say what to change"


def quiet_startup(verbose: bool) -> None:
    """Quiets TensorFlow's and Beam's start-up noise for a job; no-op if verbose.

    See ``beam_infer._quiet``, shared with the ``beam-infer`` command.
    """
    _quiet.quiet_startup(verbose)
