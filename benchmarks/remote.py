"""Remote scoring: ``bi.RunInference(bi.EndpointSpec(...))`` against the server called directly.

A TF Serving stand-in (tests/emulators/tf_serving.py: a real gRPC ``PredictionService``
and REST API over the ``y = 5x`` SavedModel) runs in its own process, so the server's
work does not share the benchmark's interpreter. For each protocol the table gives
elements/s of:

* the server called directly (the limit): the client sends the same requests the
  pipeline sends (``--request_rows`` serialized Examples each, built before the clock
  starts) with ``--in_flight`` of them in flight, from a thread pool. The server's own
  pace drifts over minutes, so each pipeline run is paired with a run of the direct
  calls just before it; the table gives the medians of ``--repeat`` pairs and the
  range of their ratios;
* ``bi.RunInference`` on DirectRunner with batches of ``--batch_size`` elements
  (``BatchConfig(min_batch_size=B, max_batch_size=B)``), ``max_request_rows`` and
  ``max_in_flight`` the same, PredictionLogs and lean results; clocked inside the
  pipeline from the start of its bundle to the last element out, so
  runner start and the build-time metadata read are outside the clock, as they are
  outside the direct loop's;
* the same with pre-batched input: elements that are lists of ``--batch_size`` records,
  scored with ``.on_batches()`` (one output per list).

The goal is 0.8x the direct calls or better.

Usage:
    python -m benchmarks.remote            # the README table (about two minutes)
    python -m benchmarks.remote --smoke    # tiny sizes, for CI
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, ClassVar

import apache_beam as beam
import numpy as np
from apache_beam.typehints import typehints

import beam_infer as bi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _serve(work_dir: str, ready, stop) -> None:
    """The server process: builds y = 5x, serves it over gRPC and REST until ``stop``."""
    sys.path.insert(0, ROOT)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pipelines import models
    from tests.emulators import tf_serving

    path = models.build_multiplier_model(os.path.join(work_dir, "five", "1"), 5.0)
    with tf_serving.serving({"five": {1: path}}) as servers:
        ready.put((servers.grpc_target, servers.rest_url))
        stop.wait()


class _Clock:
    """From the bundle's start to the last element out, across the pipeline's threads.

    No lock, so the clock costs the pipeline little: each step is one operation the GIL
    keeps whole (``list.append`` counts), and threads racing differ by microseconds.
    """

    first: float | None = None
    last: float | None = None
    _out: ClassVar[list[None]] = []

    @classmethod
    def reset(cls) -> None:
        cls.first = cls.last = None
        cls._out = []

    @classmethod
    def count(cls) -> int:
        return len(cls._out)


class _End(beam.DoFn):
    """The pipeline's last step, a sink: it counts each element out and emits nothing.

    The clock starts in its ``start_bundle``, which Beam calls after every step's setup
    (the endpoint's client) and before the bundle's first element is read, so the clock
    needs no step of its own per element at the start (one cost the worker about 3 us of
    CPU per element, a tenth of its share, that the direct calls do not pay).

    Args:
        size: For pre-batched outputs, how many elements one output holds.
    """

    def __init__(self, size: Callable[[object], int] | None = None):
        self._size = size

    def start_bundle(self) -> None:
        now = time.perf_counter()
        if _Clock.first is None or now < _Clock.first:
            _Clock.first = now

    def process(self, element) -> None:
        _Clock.last = time.perf_counter()
        if self._size is None:
            _Clock._out.append(None)
        else:
            _Clock._out.extend([None] * self._size(element))


def _examples(n: int) -> list[bytes]:
    import tensorflow as tf

    return [tf.train.Example(features=tf.train.Features(feature={"x": tf.train.Feature(
        float_list=tf.train.FloatList(value=[float(i % 1000)]))})).SerializeToString()
        for i in range(n)]


def direct(spec: bi.EndpointSpec, records: list[bytes], rounds: int) -> float:
    """Elements/s of the client calling the server itself: same requests, same concurrency."""
    from beam_infer.remote._backend import make_client, read_signatures

    defs, _ = read_signatures(spec)
    client = make_client(spec, signatures=defs)
    rows = spec.request_rows
    calls = [[("serving_default", {"examples": np.array(records[i:i + rows], dtype=object)})]
             for i in range(0, len(records), rows)]
    best = 0.0
    with concurrent.futures.ThreadPoolExecutor(spec.max_in_flight) as pool:
        list(pool.map(client.call, calls[:spec.max_in_flight]))  # connect, warm up
        for _ in range(rounds):
            start = time.perf_counter()
            results = list(pool.map(client.call, calls))
            elapsed = time.perf_counter() - start
            assert sum(len(r.outputs[0]["output_0"]) for r in results) == len(records)
            best = max(best, len(records) / elapsed)
    return best


def pipeline(spec: bi.EndpointSpec, records: list[bytes], rounds: int,
             output: bi.Output, *, batched: bool = False) -> float:
    """Elements/s of ``bi.RunInference(spec)`` on DirectRunner, clocked inside the pipeline.

    ``batched``: the elements are lists of ``spec.batching.max_batch_size`` records,
    scored with ``.on_batches()`` (one model call and one output per list).
    """
    transform = bi.RunInference(spec, output=output)
    elements: list = records
    # Declared, as the records read are: the outputs get their coders (Beam samples
    # element sizes with them) and keys are known absent, not looked for per element.
    element_type: Any = typehints.List[bytes] if batched else bytes
    if batched:
        size = spec.batching.max_batch_size
        elements = [records[i:i + size] for i in range(0, len(records), size)]
        transform = transform.on_batches()
    best = 0.0
    for _ in range(rounds):
        _Clock.reset()
        with beam.Pipeline() as p:
            _ = (p | beam.Create(elements, reshuffle=False).with_output_types(element_type)
                 | transform
                 | "End" >> beam.ParDo(_End(_size if batched else None)))
        assert _Clock.count() == len(records), (_Clock.count(), len(records))
        best = max(best, len(records) / (_Clock.last - _Clock.first))
    return best


def _size(output) -> int:
    """Elements in one output of ``on_batches()``: a list of logs, or one lean result."""
    return len(output) if isinstance(output, list) else len(output.example)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    parser.add_argument("--n", type=int, default=60_000)
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--request_rows", type=int, default=128)
    parser.add_argument("--in_flight", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="pairs per variant")
    args = parser.parse_args(argv)
    n, rounds = (600, 1) if args.smoke else (args.n, args.repeat)
    records = _examples(n)
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    with tempfile.TemporaryDirectory() as work_dir:
        server = context.Process(target=_serve, args=(work_dir, ready, stop), daemon=True)
        server.start()
        try:
            grpc_target, rest_url = ready.get(timeout=300)
            lines = [f"## Remote scoring, y = 5x serialized Examples, n={n:,}", "",
                     f"batch {args.batch_size}, {args.request_rows} rows per request, "
                     f"{args.in_flight} in flight; each pipeline run is paired with a run "
                     f"of the direct calls just before it, medians of {rounds} pairs", "",
                     "| protocol | variant | elements/s | direct calls beside it "
                     "| vs direct calls | range |",
                     "| --- | --- | ---: | ---: | ---: | ---: |"]
            for name, url in (("TF Serving gRPC", f"grpc://{grpc_target}/models/five"),
                              ("TF Serving REST", f"{rest_url}/v1/models/five")):
                spec = bi.EndpointSpec.from_url(
                    url, batching=bi.BatchConfig(min_batch_size=args.batch_size,
                                                 max_batch_size=args.batch_size),
                    max_request_rows=args.request_rows, max_in_flight=args.in_flight)
                for label, output, batched in (
                        ("bi.RunInference PredictionLog", bi.Output.PREDICTION_LOG, False),
                        ("bi.RunInference lean", bi.Output.RESULT, False),
                        ("bi.RunInference on_batches PredictionLog",
                         bi.Output.PREDICTION_LOG, True),
                        ("bi.RunInference on_batches lean", bi.Output.RESULT, True)):
                    # The server's own pace drifts over minutes: each pipeline run is
                    # compared with the direct calls run just before it.
                    pairs = [(direct(spec, records, 1),
                              pipeline(spec, records, 1, output, batched=batched))
                             for _ in range(rounds)]
                    ratios = sorted(rate / limit for limit, rate in pairs)
                    lines.append(
                        f"| {name} | {label} | {statistics.median(r for _, r in pairs):,.0f} "
                        f"| {statistics.median(d for d, _ in pairs):,.0f} "
                        f"| {statistics.median(ratios):.2f}x "
                        f"| {ratios[0]:.2f}x to {ratios[-1]:.2f}x |")
        finally:
            stop.set()
            server.join(60)
            if server.is_alive():
                server.terminate()
    report = "\n".join(lines) + "\n"
    print(report)
    return report


if __name__ == "__main__":
    main()
