"""Remote scoring: ``bi.RunInference(bi.EndpointSpec(...))`` against the server called directly.

A TF Serving stand-in (tests/emulators/tf_serving.py: a real gRPC ``PredictionService``
and REST API over the ``y = 5x`` SavedModel) runs in its own process, so the server's
work does not share the benchmark's interpreter. For each protocol the table gives
elements/s of:

* the server called directly (the limit): the client sends the same requests the
  pipeline sends (``--request_rows`` serialized Examples each, built before the clock
  starts) with ``--in_flight`` of them in flight, from a thread pool;
* ``bi.RunInference`` on DirectRunner with batches of ``--batch_size`` elements
  (``BatchConfig(min_batch_size=B, max_batch_size=B)``), ``max_request_rows`` and
  ``max_in_flight`` the same, PredictionLogs and lean results; clocked inside the
  pipeline from the first element into the inference step to the last one out, so
  runner start and the build-time metadata read are outside the clock, as they are
  outside the direct loop's.

The goal is 0.8x the direct calls or better.

Usage:
    python -m benchmarks.remote            # the README table (about a minute)
    python -m benchmarks.remote --smoke    # tiny sizes, for CI
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import sys
import tempfile
import time
from typing import ClassVar

import apache_beam as beam
import numpy as np

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
    """First element in and last element out, across the pipeline's threads.

    No lock, so the clock costs the pipeline little: each step is one operation the GIL
    keeps whole (``list.append`` counts), and threads racing for ``first`` differ by
    microseconds.
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

    @classmethod
    def start(cls, element):
        if cls.first is None:
            cls.first = time.perf_counter()
        return element

    @classmethod
    def end(cls, element):
        cls.last = time.perf_counter()
        cls._out.append(None)
        return element


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
             output: bi.Output) -> float:
    """Elements/s of ``bi.RunInference(spec)`` on DirectRunner, clocked inside the pipeline."""
    transform = bi.RunInference(spec, output=output)
    best = 0.0
    for _ in range(rounds):
        _Clock.reset()
        with beam.Pipeline() as p:
            _ = (p | beam.Create(records, reshuffle=False)
                 | "Start" >> beam.Map(_Clock.start)
                 | transform
                 | "End" >> beam.Map(_Clock.end))
        assert _Clock.count() == len(records), (_Clock.count(), len(records))
        best = max(best, len(records) / (_Clock.last - _Clock.first))
    return best


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--request_rows", type=int, default=128)
    parser.add_argument("--in_flight", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2)
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
                     f"{args.in_flight} in flight", "",
                     "| protocol | variant | elements/s | vs direct calls |",
                     "| --- | --- | ---: | ---: |"]
            for name, url in (("TF Serving gRPC", f"grpc://{grpc_target}/models/five"),
                              ("TF Serving REST", f"{rest_url}/v1/models/five")):
                spec = bi.EndpointSpec.from_url(
                    url, batching=bi.BatchConfig(min_batch_size=args.batch_size,
                                                 max_batch_size=args.batch_size),
                    max_request_rows=args.request_rows, max_in_flight=args.in_flight)
                limit = direct(spec, records, rounds)
                lines.append(f"| {name} | direct calls (the limit) | {limit:,.0f} | 1.00x |")
                for label, output in (("bi.RunInference PredictionLog", bi.Output.PREDICTION_LOG),
                                      ("bi.RunInference lean", bi.Output.RESULT)):
                    rate = pipeline(spec, records, rounds, output)
                    lines.append(f"| {name} | {label} | {rate:,.0f} | {rate / limit:.2f}x |")
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
