"""Throughput of beam_infer against its peers, in one process on DirectRunner.

Builds its own models and data under ``--work_dir`` and prints one table per model:
elements/s and the ratio to the direct loop (the limit: the SavedModel's signature called
in a plain Python loop on the same batches, starting from the same records) and to
tfx-bsl's ``RunInference``. Models: the seed's ``y = 5x`` on keyed serialized Examples,
and an MLP 784-512-512-10 (weights from a fixed seed) on serialized Examples and on dense
float32 arrays.

Pipeline rates are ``elements / (wall time of the run - wall time of an empty pipeline
run)``: the runner's fixed start and stop cost, measured once, is taken out; model
loading is not. Every variant batches ``--batch_size`` elements (``BatchConfig(
min_batch_size=B, max_batch_size=B)``), except tfx-bsl's own ``RunInference``, which
does not forward batch parameters.

Usage:
    python -m benchmarks.throughput            # the README table (a few minutes)
    python -m benchmarks.throughput --smoke    # tiny sizes, for CI
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.ml.inference import base
from apache_beam.options.pipeline_options import PipelineOptions

import beam_infer as bi
from pipelines import models

MLP_SIZES = (784, 512, 512, 10)
TWO_WORKERS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Mlp(tf.Module):
    def __init__(self, seed: int = 0):
        super().__init__(name="mlp")
        rng = np.random.default_rng(seed)
        self.layers = [
            (tf.Variable(rng.normal(0, 1 / np.sqrt(n), (n, m)).astype(np.float32)),
             tf.Variable(np.zeros(m, np.float32)))
            for n, m in itertools.pairwise(MLP_SIZES)
        ]

    def _forward(self, x: tf.Tensor) -> tf.Tensor:
        for i, (w, b) in enumerate(self.layers):
            x = tf.matmul(x, w) + b
            if i < len(self.layers) - 1:
                x = tf.nn.relu(x)
        return x

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        x = tf.io.parse_example(
            examples, {"x": tf.io.FixedLenFeature([MLP_SIZES[0]], tf.float32)})["x"]
        return {"logits": self._forward(x)}

    @tf.function(input_signature=[tf.TensorSpec([None, MLP_SIZES[0]], tf.float32, name="x")])
    def serve_dense(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"logits": self._forward(x)}


def build_mlp(path: str) -> str:
    """An MLP 784-512-512-10 with signatures ``serving_default`` (Examples) and ``dense``."""
    module = _Mlp()
    tf.saved_model.save(module, path, signatures={
        "serving_default": module.serve_examples, "dense": module.serve_dense})
    return path


def write_records(prefix: str, records: Sequence[bytes], shards: int) -> str:
    """Writes ``records`` round-robin into ``shards`` TFRecord files; returns the glob."""
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    for shard in range(shards):
        with tf.io.TFRecordWriter(f"{prefix}-{shard:05d}.tfrecord") as writer:
            for record in records[shard::shards]:
                writer.write(record)
    return f"{prefix}-*.tfrecord"


def mlp_example(values: np.ndarray) -> bytes:
    return tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=values))})
    ).SerializeToString()


# Module-level step functions, so worker processes unpickle them by reference.
def with_key(record: bytes) -> tuple[bytes, bytes]:
    return record[-4:], record


def decode_dense(record: bytes) -> np.ndarray:
    return np.frombuffer(record, dtype=np.float32)


class _ImportTensorFlow(beam.DoFn):
    """The read-only pipeline's workers import TF too, so memory compares like for like."""

    def setup(self) -> None:
        import tensorflow  # noqa: F401

    def process(self, element):
        yield element


@dataclasses.dataclass
class Row:
    name: str
    rate: float
    loads: int | None = None
    peak_rss_mb: float | None = None


class _PeakRss:
    """Samples the RSS of this process's children (worker processes) while running."""

    def __init__(self) -> None:
        self.peak_per_process: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            for pid in _descendants(me):
                rss = _rss_bytes(pid)
                if rss > self.peak_per_process.get(pid, 0):
                    self.peak_per_process[pid] = rss
            time.sleep(0.05)

    @property
    def peak_worker_mb(self) -> float | None:
        return max(self.peak_per_process.values()) / 2**20 if self.peak_per_process else None


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


class Bench:
    """Runs pipelines on DirectRunner and turns wall times into elements/s."""

    def __init__(self, work_dir: str):
        self.work_dir = work_dir
        self._runs = 0
        self.startup = 0.0
        self.startup = min(self._wall(lambda p: p | beam.Create([1]) | beam.Map(str))
                           for _ in range(2))

    def _wall(self, build: Callable[[beam.Pipeline], object], options: Sequence[str] = ()
              ) -> float:
        pipeline = beam.Pipeline(options=PipelineOptions(list(options)))
        build(pipeline)
        start = time.perf_counter()
        self.result = pipeline.run()
        self.result.wait_until_finish()
        return time.perf_counter() - start

    def pipeline(self, name: str, n: int, build: Callable[[beam.Pipeline], object],
                 options: Sequence[str] = (), measure_memory: bool = False) -> Row:
        def counted(p: beam.Pipeline) -> None:
            _ = build(p) | f"Count{self._runs}" >> beam.combiners.Count.Globally()

        self._runs += 1
        if measure_memory:
            with _PeakRss() as rss:
                wall = self._wall(counted, options)
            peak = rss.peak_worker_mb
        else:
            wall, peak = self._wall(counted, options), None
        loads = _load_count(self.result)
        return Row(name, n / max(wall - self.startup, 1e-9), loads, peak)


def _load_count(result) -> int | None:
    query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(
        bi.METRICS_NAMESPACE).with_name("load_model_latency_milli_secs"))
    counts = [d.committed.count for d in query["distributions"] if d.committed]
    return sum(counts) if counts else None


def direct_loop(function, batches: Sequence[Sequence[bytes]], decode) -> float:
    """Elements/s of the signature called on ``decode(batch)`` for every batch."""
    function(**decode(batches[0]))  # trace and warm up outside the clock
    start = time.perf_counter()
    count = 0
    for batch in batches:
        outputs = function(**decode(batch))
        _ = {k: v.numpy() for k, v in outputs.items()}
        count += len(batch)
    return count / (time.perf_counter() - start)


def _batches(records: Sequence[bytes], size: int) -> list[Sequence[bytes]]:
    return [records[i:i + size] for i in range(0, len(records), size)]


def _spec(path: str, batch: int, signatures: tuple[str, ...] = ()) -> bi.ModelSpec:
    return bi.ModelSpec(model_path=path, signature_names=signatures,
                        batching=bi.BatchConfig(min_batch_size=batch, max_batch_size=batch))


def _tfx_spec(path: str, batch: int, signatures: Sequence[str] = ()):
    from tfx_bsl.public.proto import model_spec_pb2

    return model_spec_pb2.InferenceSpecType(
        saved_model_spec=model_spec_pb2.SavedModelSpec(model_path=path,
                                                       signature_name=list(signatures)),
        batch_parameters=model_spec_pb2.BatchParameters(min_batch_size=batch,
                                                        max_batch_size=batch))


def bench_multiplier(bench: Bench, n: int, batch: int) -> list[Row]:
    """``y = 5x`` on keyed serialized Examples, PredictionLog out."""
    from tfx_bsl.public.beam import RunInference as TfxRunInference
    from tfx_bsl.public.beam.run_inference import CreateModelHandler

    path = models.ensure_multiplier_model(os.path.join(bench.work_dir, "five"), 5.0)
    records = [models.make_example(float(i % 1000)).SerializeToString() for i in range(n)]
    pattern = write_records(os.path.join(bench.work_dir, "five_data", "part"), records, 4)
    function = tf.saved_model.load(path).signatures["serving_default"]
    loop = direct_loop(function, _batches(records, batch),
                       lambda b: {"examples": tf.constant(np.array(b, dtype=object))})

    def read(p):
        return (p | "Read" >> beam.io.ReadFromTFRecord(pattern)
                  | "Key" >> beam.Map(with_key).with_output_types(tuple[bytes, bytes]))

    spec, tfx_spec = _spec(path, batch), _tfx_spec(path, batch)
    rows = [
        Row("direct loop (the limit)", loop),
        bench.pipeline("read and key only (runner floor)", n, read),
        bench.pipeline("tfx-bsl RunInference", n, lambda p: read(p) | TfxRunInference(tfx_spec)),
        bench.pipeline("Beam RunInference + tfx-bsl CreateModelHandler", n,
                       lambda p: read(p) | base.RunInference(
                           base.KeyedModelHandler(CreateModelHandler(tfx_spec)))),
        bench.pipeline("beam_infer PredictionLog", n, lambda p: read(p) | bi.RunInference(spec)),
        bench.pipeline("beam_infer lean (PredictionResult)", n,
                       lambda p: read(p) | bi.RunInference(spec, output=bi.Output.RESULT)),
    ]
    return rows


def bench_mlp(bench: Bench, n: int, batch: int, *, dense: bool, two_workers: bool
              ) -> list[Row]:
    """The MLP on serialized Examples, or on dense float32 arrays (lean output)."""
    from tfx_bsl.public.beam import RunInference as TfxRunInference
    from tfx_bsl.public.beam.run_inference import CreateModelHandler

    path = os.path.join(bench.work_dir, "mlp")
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        build_mlp(path)
    rng = np.random.default_rng(1)
    values = rng.random((n, MLP_SIZES[0]), dtype=np.float32)
    kind = "dense" if dense else "examples"
    records = [v.tobytes() for v in values] if dense else [mlp_example(v) for v in values]
    pattern = write_records(os.path.join(bench.work_dir, f"mlp_{kind}", "part"), records, 4)
    loaded = tf.saved_model.load(path)
    if dense:
        loop = direct_loop(loaded.signatures["dense"], _batches(records, batch),
                           lambda b: {"x": tf.constant(np.stack([decode_dense(r) for r in b]))})
    else:
        loop = direct_loop(loaded.signatures["serving_default"], _batches(records, batch),
                           lambda b: {"examples": tf.constant(np.array(b, dtype=object))})

    def read(p):
        pcoll = p | "Read" >> beam.io.ReadFromTFRecord(pattern)
        return pcoll | "Decode" >> beam.Map(decode_dense) if dense else pcoll

    signatures = ("dense",) if dense else ()
    spec = _spec(path, batch, signatures)
    rows = [Row("direct loop (the limit)", loop),
            bench.pipeline("read only (runner floor)", n, read)]
    if dense:
        rows.append(bench.pipeline("beam_infer PredictionLog", n,
                                   lambda p: read(p) | bi.RunInference(spec)))
        lean = bench.pipeline("beam_infer lean (PredictionResult)", n,
                              lambda p: read(p) | bi.RunInference(spec, output=bi.Output.RESULT))
    else:
        tfx_spec = _tfx_spec(path, batch)
        rows += [
            bench.pipeline("tfx-bsl RunInference", n,
                           lambda p: read(p) | TfxRunInference(tfx_spec)),
            bench.pipeline("Beam RunInference + tfx-bsl CreateModelHandler", n,
                           lambda p: read(p) | base.RunInference(CreateModelHandler(tfx_spec))),
            bench.pipeline("beam_infer PredictionLog", n,
                           lambda p: read(p) | bi.RunInference(spec)),
        ]
        lean = bench.pipeline("beam_infer lean (PredictionResult)", n,
                              lambda p: read(p) | bi.RunInference(spec,
                                                                  output=bi.Output.RESULT))
    rows.append(lean)
    if two_workers:
        floor = bench.pipeline("read only, 2 workers (TF imported)", n,
                               lambda p: read(p) | beam.ParDo(_ImportTensorFlow()),
                               TWO_WORKERS, measure_memory=True)
        both = bench.pipeline("beam_infer lean, 2 workers", n,
                              lambda p: read(p) | bi.RunInference(spec,
                                                                  output=bi.Output.RESULT),
                              TWO_WORKERS, measure_memory=True)
        both.name += f" ({both.rate / lean.rate:.2f}x one worker)"
        rows += [floor, both]
    return rows


def format_table(title: str, rows: Sequence[Row]) -> str:
    loop = rows[0].rate
    tfx = next((r.rate for r in rows if r.name == "tfx-bsl RunInference"), None)
    lines = [f"## {title}",
             "| variant | elements/s | vs direct loop | vs tfx-bsl | model loads | "
             "peak worker RSS MB |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.rate:,.0f} | {row.rate / loop:.2f}x | "
            f"{f'{row.rate / tfx:.2f}x' if tfx else '-'} | "
            f"{row.loads if row.loads is not None else '-'} | "
            f"{f'{row.peak_rss_mb:,.0f}' if row.peak_rss_mb else '-'} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    parser.add_argument("--n_small", type=int, default=200_000,
                        help="elements for y = 5x")
    parser.add_argument("--n_mlp", type=int, default=50_000, help="elements for the MLP")
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--work_dir", default=None)
    parser.add_argument("--skip_two_workers", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n_small, args.n_mlp, args.batch_size = 300, 200, 64
    # Worker processes must import this checkout's beam_infer and benchmarks.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="beam_infer_bench_")
    bench = Bench(work_dir)
    tables = [
        format_table(f"y = 5x, keyed serialized Examples, n={args.n_small:,}",
                     bench_multiplier(bench, args.n_small, args.batch_size)),
        format_table(f"MLP 784-512-512-10, serialized Examples, n={args.n_mlp:,}",
                     bench_mlp(bench, args.n_mlp, args.batch_size, dense=False,
                               two_workers=False)),
        format_table(f"MLP 784-512-512-10, dense float32 arrays, n={args.n_mlp:,}",
                     bench_mlp(bench, args.n_mlp, args.batch_size, dense=True,
                               two_workers=not args.skip_two_workers)),
    ]
    model_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in
                   os.walk(os.path.join(work_dir, "mlp")) for f in fs) / 2**20
    report = "\n\n".join(tables) + (
        f"\n\nbatch size {args.batch_size}; runner start/stop {bench.startup:.2f}s taken out "
        f"of every pipeline; MLP SavedModel {model_mb:.1f} MB on disk; "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    print(report)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
