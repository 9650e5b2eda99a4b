"""The portable test harness really runs pipelines on several SDK worker processes."""

from __future__ import annotations

import ast
import collections
import glob
import os
import time
from pathlib import Path

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

from tests.support.portable import PortableServices

_NUM_ELEMENTS = 2000


class _TagWithPid(beam.DoFn):
    """Emits ``(pid, 1)`` per element and counts elements in a user metric."""

    def __init__(self) -> None:
        self._elements = Metrics.counter("portable_test", "elements")

    def process(self, element: int):
        del element
        self._elements.inc()
        yield os.getpid(), 1


def test_portable_runner_runs_pipeline_on_two_worker_processes(
    portable_runner: PortableServices,
    tmp_path: Path,
) -> None:
    output = str(tmp_path / "pids")
    pipeline = beam.Pipeline(options=PipelineOptions(portable_runner.options()))
    _ = (
        pipeline
        | "Create" >> beam.Create(range(_NUM_ELEMENTS))
        | "Reshuffle" >> beam.Reshuffle()
        | "TagWithPid" >> beam.ParDo(_TagWithPid())
        | "CountPerPid" >> beam.CombinePerKey(sum)
        | "Write" >> beam.io.WriteToText(output)
    )
    started = time.monotonic()
    result = pipeline.run()
    state = result.wait_until_finish()
    elapsed = time.monotonic() - started

    assert state == PipelineState.DONE
    counts: collections.Counter[int] = collections.Counter()
    for path in glob.glob(output + "*"):
        with open(path) as lines:
            for line in lines:
                pid, count = ast.literal_eval(line)
                counts[pid] += count
    assert sum(counts.values()) == _NUM_ELEMENTS, counts
    assert os.getpid() not in counts, "ran in the test process, not in SDK workers"
    assert len(counts) >= 2, (
        f"expected >= 2 SDK worker processes, got {dict(counts)}; logs in {portable_runner.log_dir}"
    )

    metrics = result.metrics().query(MetricsFilter().with_name("elements"))["counters"]
    assert [m.committed for m in metrics] == [_NUM_ELEMENTS]
    print(
        f"startup {portable_runner.startup_seconds:.2f}s, pipeline {elapsed:.2f}s,"
        f" elements per pid {dict(counts)}"
    )
