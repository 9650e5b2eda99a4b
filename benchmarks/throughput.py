"""Throughput of beam_infer against its peers, in one process on DirectRunner.

Builds its own models and data under ``--work_dir`` and prints one table per model:
elements/s and the ratio to the direct loop (the limit: the SavedModel's signature called
in a plain Python loop on the same batches, starting from the same records) and to
tfx-bsl's ``RunInference``. Models: the seed's ``y = 5x`` on keyed serialized Examples,
and an MLP 784-512-512-10 (weights from a fixed seed) on serialized Examples and on dense
float32 arrays.

A pipeline's rate is its elements over the span from the first element read to the last
element out of the inference step, clocked inside the pipeline, so runner and worker
start and model loading are outside the clock, as they are outside the direct loop's.
Each row is its best of ``--repeat`` runs, made in rounds over the rows of its table.
"vs loop + floor" compares with the best a pipeline can do: the direct loop's time per
element plus the read-only pipeline's. Every variant batches ``--batch_size`` elements
(``BatchConfig(min_batch_size=B, max_batch_size=B)``), except tfx-bsl's own
``RunInference``, which does not forward batch parameters.

Usage:
    python -m benchmarks.throughput            # the README table (a few minutes)
    python -m benchmarks.throughput --smoke    # tiny sizes, for CI
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import glob
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
RAW_RECORDS = "__raw_record__"
LOOP_READING = "direct loop reading the files (tf.data, no Beam)"
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


def batch_size_of(batch: object) -> int:
    """Elements in a batch: a list or array, or a lean result's batched outputs."""
    if isinstance(batch, base.PredictionResult):
        return len(next(iter(batch.inference.values())))
    return len(batch)


def raw_records(record_batch) -> list[bytes]:
    """The serialized records of a TFXIO RecordBatch (its raw record column)."""
    return record_batch.column(RAW_RECORDS).flatten().to_pylist()


def decode_dense_batch(records: tf.Tensor) -> tf.Tensor:
    """A batch of raw float32 records as one ``[n, 784]`` tensor (one C++ op per batch)."""
    return tf.io.decode_raw(records, tf.float32)


class _ImportTensorFlow(beam.DoFn):
    """The read-only pipeline's workers import TF too, so memory compares like for like."""

    def setup(self) -> None:
        import tensorflow  # noqa: F401

    def process(self, element):
        yield element


class _NoModel:
    """What ``_DoNothingHandler`` loads: nothing (Beam's shared handle needs a weakref)."""


class _DoNothingHandler(base.ModelHandler):
    """Beam's RunInference engine alone: batches as configured, scores nothing.

    One ``PredictionResult(element, None)`` per element, so a pipeline with it measures
    what Beam's ``BatchElements``, its RunInference DoFn and ``KeyedModelHandler`` cost
    around any handler: the most any RunInference-based transform can reach.
    """

    def __init__(self, batch: int):
        super().__init__()
        self._batch = batch

    def load_model(self) -> _NoModel:
        return _NoModel()

    def run_inference(self, batch, model, inference_args=None):
        return [base.PredictionResult(element, None) for element in batch]

    def batch_elements_kwargs(self):
        return {"min_batch_size": self._batch, "max_batch_size": self._batch}


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


@dataclasses.dataclass(frozen=True)
class Data:
    """The records, in 4 TFRecord shards so worker processes can share them."""

    n: int
    pattern: str

    @classmethod
    def write(cls, folder: str, records: Sequence[bytes]) -> Data:
        return cls(len(records), write_records(os.path.join(folder, "part"), records, 4))


class _Stamp(beam.DoFn):
    """Reports per bundle when its first (or last) element passed, in µs since the epoch.

    With ``size``, each element is a batch and counts as ``size(element)`` elements.

    Metrics are named by worker process id: distributions keep the min and max across
    that worker's bundles, and the "last" stamp counts the elements it passed.
    """

    def __init__(self, name: str, size: Callable[[object], int] | None = None):
        self._name = name
        self._size = size

    def setup(self) -> None:
        pid = os.getpid()
        self._metric = beam.metrics.Metrics.distribution("benchmark", f"{self._name}:{pid}")
        self._count = beam.metrics.Metrics.counter("benchmark", f"elements:{pid}")

    def start_bundle(self) -> None:
        self._at, self._n = None, 0

    def process(self, element):
        if self._at is None or self._name == "last":
            self._at = time.time_ns() // 1000
        self._n += 1 if self._size is None else self._size(element)
        yield element

    def finish_bundle(self) -> None:
        if self._at is not None:
            self._metric.update(self._at)
            if self._name == "last":
                self._count.inc(self._n)


class Bench:
    """Runs pipelines on DirectRunner and turns in-pipeline clocks into elements/s.

    A worker's rate is the elements it passed over the span from the first element it
    read to the last it got out of the inference step (the ``_Stamp`` steps), so runner
    and worker start and model loading are outside the clock, as they are outside the
    direct loop's. With several workers the rates add up; ``overlap`` says how much of
    the longest worker span all workers were busy at once.
    """

    def __init__(self, work_dir: str, repeat: int = 1):
        self.work_dir = work_dir
        self.repeat = repeat

    def pipeline(self, name: str, data: Data,
                 read: Callable[[beam.Pipeline, str], beam.PCollection],
                 step: Callable[[beam.PCollection], object] = lambda pcoll: pcoll,
                 options: Sequence[str] = (), measure_memory: bool = False,
                 batched: bool = False) -> Row:
        """The best of ``repeat`` runs: on a shared machine, the least disturbed one.

        ``batched``: the elements leaving ``step`` are batches, counted by their size.
        """
        return self.best_of_rounds([self.run(name, data, read, step, options,
                                             measure_memory, batched)])[0]

    def run(self, name: str, data: Data,
            read: Callable[[beam.Pipeline, str], beam.PCollection],
            step: Callable[[beam.PCollection], object] = lambda pcoll: pcoll,
            options: Sequence[str] = (), measure_memory: bool = False,
            batched: bool = False) -> Callable[[], Row]:
        """One run of the pipeline ``pipeline`` measures, to be made by ``best_of_rounds``."""
        return functools.partial(self._run, name, data, read, step, options, measure_memory,
                                 batched)

    def best_of_rounds(self, runs: Sequence[Callable[[], Row]]) -> list[Row]:
        """Each run's best row of ``repeat``, made round by round: every run once, then
        every run again.

        The machine's pace drifts over minutes (it halved within an hour on 2026-12-02);
        rows measured one after the other's repeats would compare different paces, while
        rounds give every row of a table a run in each stretch.
        """
        best: list[Row | None] = [None] * len(runs)
        for _ in range(self.repeat):
            for i, run in enumerate(runs):
                row = run()
                if best[i] is None or _rate(row) > _rate(best[i]):
                    best[i] = row
        return [row for row in best if row is not None]

    def _run(self, name: str, data: Data,
             read: Callable[[beam.Pipeline, str], beam.PCollection],
             step: Callable[[beam.PCollection], object],
             options: Sequence[str], measure_memory: bool, batched: bool) -> Row:
        pipeline = beam.Pipeline(options=PipelineOptions(list(options)))
        size = batch_size_of if batched else None
        # The stamps pass elements through with their declared type, so Beam samples
        # their sizes with the same coder as the step before (not by pickling: Any).
        read_out = read(pipeline, data.pattern)
        stepped = step(read_out | "First" >> beam.ParDo(_Stamp("first"))
                       .with_output_types(read_out.element_type))
        _ = (stepped
             | "Last" >> beam.ParDo(_Stamp("last", size)).with_output_types(stepped.element_type)
             | "Count" >> beam.combiners.Count.Globally())
        # Sampled only where reported: the sampler's thread reads /proc every 50 ms and
        # would take the GIL from a pipeline running in this process.
        rss = _PeakRss() if measure_memory else contextlib.nullcontext()
        with rss:
            result = pipeline.run()
            result.wait_until_finish()
        metrics = result.metrics().query(beam.metrics.MetricsFilter().with_namespace("benchmark"))
        stamps = {d.key.metric.name: d.committed for d in metrics["distributions"]}
        counts = {c.key.metric.name.split(":")[1]: c.committed for c in metrics["counters"]}
        if sum(counts.values()) != data.n:  # batches must count their elements
            raise RuntimeError(f"{name}: {sum(counts.values())} elements out of {data.n}")
        spans = {pid: (stamps[f"first:{pid}"].min, stamps[f"last:{pid}"].max)
                 for pid in counts}
        rate = sum(counts[pid] / max((end - start) / 1e6, 1e-6)
                   for pid, (start, end) in spans.items())
        if len(spans) > 1:
            busy = min(e for _, e in spans.values()) - max(s for s, _ in spans.values())
            longest = max(e - s for s, e in spans.values())
            name += f", overlap {max(busy, 0) / longest:.0%}"
        return Row(name, rate, _load_count(result),
                   rss.peak_worker_mb if measure_memory else None)


def _rate(row: Row) -> float:
    return row.rate if row.rate == row.rate else -1.0  # NaN (nothing measured) is worst


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


def direct_loop_reading(function, pattern: str, batch: int, alias: str, dense: bool) -> float:
    """Elements/s of the signature called in a loop on tf.data batches read from the files.

    The same read as ``bi.ReadTFRecordBatches``, without Beam: what a pipeline that reads the
    files can at best do.
    """
    start = time.perf_counter()
    count = 0
    for path in sorted(glob.glob(pattern)):
        dataset = tf.data.TFRecordDataset(path).batch(batch)
        if dense:
            dataset = dataset.map(lambda records: tf.io.decode_raw(records, tf.float32))
        for records in dataset.prefetch(2):
            outputs = function(**{alias: records})
            _ = {k: v.numpy() for k, v in outputs.items()}
            count += len(records)
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


def _variants(path: str, batch: int, signatures: tuple[str, ...], *, keyed: bool,
              with_tfx: bool) -> list[tuple[str, Callable[[beam.PCollection], object]]]:
    """The inference steps compared, each a function of the read PCollection."""
    from tfx_bsl.public.beam import RunInference as TfxRunInference
    from tfx_bsl.public.beam.run_inference import CreateModelHandler

    spec = _spec(path, batch, signatures)
    steps: list[tuple[str, Callable[[beam.PCollection], object]]] = []
    if with_tfx:
        tfx_spec = _tfx_spec(path, batch, signatures)
        handler = CreateModelHandler(tfx_spec)
        handler = base.KeyedModelHandler(handler) if keyed else handler
        steps += [
            ("tfx-bsl RunInference", lambda pcoll: pcoll | TfxRunInference(tfx_spec)),
            ("Beam RunInference + tfx-bsl CreateModelHandler",
             lambda pcoll: pcoll | base.RunInference(handler)),
        ]
    steps += [
        ("beam_infer PredictionLog", lambda pcoll: pcoll | bi.RunInference(spec)),
        ("beam_infer lean (PredictionResult)",
         lambda pcoll: pcoll | bi.RunInference(spec, output=bi.Output.RESULT)),
    ]
    return steps


def bench_multiplier(bench: Bench, n: int, batch: int, *, tf_data_read: bool) -> list[Row]:
    """``y = 5x`` on keyed serialized Examples.

    Records come one per Beam element either from Beam's ``ReadFromTFRecord`` or, with
    ``tf_data_read``, from ``bi.ReadTFRecordBatches`` flattened to one element per record
    (framing and CRC checks in C++); every variant of one table reads the same way.
    """
    path = models.ensure_multiplier_model(os.path.join(bench.work_dir, "five"), 5.0)
    records = [models.make_example(float(i % 1000)).SerializeToString() for i in range(n)]
    data = Data.write(os.path.join(bench.work_dir, "five_data"), records)
    function = tf.saved_model.load(path).signatures["serving_default"]
    batches = _batches(records, batch)

    def loop() -> Row:
        return Row("direct loop (the limit)", direct_loop(
            function, batches, lambda b: {"examples": tf.constant(np.array(b, dtype=object))}))

    def read(p: beam.Pipeline, files: str) -> beam.PCollection:
        if tf_data_read:
            records = (p | "Read" >> bi.ReadTFRecordBatches(files, batch_size=batch)
                         | "PerRecord" >> beam.FlatMap(batch_records))
        else:
            records = p | "Read" >> beam.io.ReadFromTFRecord(files)
        return records | "Key" >> beam.Map(with_key).with_output_types(tuple[bytes, bytes])

    engine = base.KeyedModelHandler(_DoNothingHandler(batch))
    runs = [loop,
            bench.run("read and key only (runner floor)", data, read),
            bench.run("Beam RunInference, a handler that scores nothing (engine only)",
                      data, read, lambda pcoll: pcoll | base.RunInference(engine))]
    for name, step in _variants(path, batch, (), keyed=True, with_tfx=True):
        runs.append(bench.run(name, data, read, step))
    return bench.best_of_rounds(runs)


def batch_records(batch: tf.Tensor) -> list[bytes]:
    return batch.numpy().tolist()


def bench_mlp(bench: Bench, n: int, batch: int, *, dense: bool, two_workers: bool
              ) -> list[Row]:
    """The MLP on serialized Examples (all peers), or on dense float32 arrays (beam_infer).

    Per-element rows read one record per Beam element and let RunInference batch them;
    pre-batched rows read whole batches and score them with ``on_batches()``.
    """
    path = os.path.join(bench.work_dir, "mlp")
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        build_mlp(path)
    values = np.random.default_rng(1).random((n, MLP_SIZES[0]), dtype=np.float32)
    kind = "dense" if dense else "examples"
    records = [v.tobytes() for v in values] if dense else [mlp_example(v) for v in values]
    data = Data.write(os.path.join(bench.work_dir, f"mlp_{kind}"), records)
    loaded = tf.saved_model.load(path)
    batches = _batches(records, batch)
    if dense:
        function = loaded.signatures["dense"]

        def decode(b: Sequence[bytes]) -> dict[str, tf.Tensor]:
            return {"x": tf.constant(np.stack([decode_dense(r) for r in b]))}
    else:
        function = loaded.signatures["serving_default"]

        def decode(b: Sequence[bytes]) -> dict[str, tf.Tensor]:
            return {"examples": tf.constant(np.array(b, dtype=object))}

    def read(p: beam.Pipeline, files: str) -> beam.PCollection:
        pcoll = p | "Read" >> beam.io.ReadFromTFRecord(files)
        return pcoll | "Decode" >> beam.Map(decode_dense) if dense else pcoll

    def read_batch_elements(p: beam.Pipeline, files: str) -> beam.PCollection:
        return (p | "Read" >> beam.io.ReadFromTFRecord(files)
                  | "Batch" >> beam.BatchElements(min_batch_size=batch, max_batch_size=batch))

    def read_tfxio(p: beam.Pipeline, files: str) -> beam.PCollection:
        from tfx_bsl.public import tfxio

        source = tfxio.TFExampleRecord(files, raw_record_column_name=RAW_RECORDS)
        return (p | "Read" >> source.BeamSource(batch)
                  | "RawRecords" >> beam.Map(raw_records))

    def read_files(p: beam.Pipeline, files: str) -> beam.PCollection:
        batches = p | "Read" >> bi.ReadTFRecordBatches(files, batch_size=batch)
        # Declared: Beam samples the sizes of tf.Tensor batches with beam_infer's TensorCoder.
        return batches | "Decode" >> beam.Map(decode_dense_batch).with_output_types(
            tf.Tensor) if dense else batches

    alias = "x" if dense else "examples"
    direct_loop_reading(function, data.pattern, batch, alias, dense)  # warm the files
    runs = [lambda: Row("direct loop (the limit)", direct_loop(function, batches, decode)),
            bench.run("read only (runner floor)", data, read),
            lambda: Row(LOOP_READING, direct_loop_reading(function, data.pattern, batch, alias,
                                                          dense))]
    steps = _variants(path, batch, ("dense",) if dense else (), keyed=False,
                      with_tfx=not dense)
    for name, step in steps:
        runs.append(bench.run(name, data, read, step))
    spec = _spec(path, batch, ("dense",) if dense else ())
    logs = bi.RunInference(spec).on_batches()
    lean = bi.RunInference(spec, output=bi.Output.RESULT).on_batches()
    reads = [("bi.ReadTFRecordBatches", read_files)]
    if not dense:
        reads += [("ReadFromTFRecord + BatchElements", read_batch_elements),
                  ("TFXIO BeamSource", read_tfxio)]
    for label, batched_read in reads:
        runs.append(bench.run(f"read batches only ({label})", data, batched_read,
                              batched=True))
    if not dense:
        for label, batched_read in reads:
            runs.append(bench.run(f"beam_infer on_batches PredictionLog ({label})",
                                  data, batched_read, lambda pc: pc | logs, batched=True))
    runs.append(bench.run("beam_infer on_batches lean (bi.ReadTFRecordBatches)", data,
                          read_files, lambda pc: pc | lean, batched=True))
    one_worker = len(runs)
    if two_workers:
        # Each worker's TensorFlow gets its share of the cores, as docs/sizing.md advises
        # (by default each process's pools take every core, and two pre-batched workers
        # then ran slower than one).
        threads = max(1, (os.cpu_count() or 2) // 2)
        shared = dataclasses.replace(spec, intra_op_threads=threads)
        lean_shared = bi.RunInference(shared, output=bi.Output.RESULT)
        runs += [
            bench.run("read only, 2 workers (TF imported)", data, read,
                      lambda pcoll: pcoll | beam.ParDo(_ImportTensorFlow()), TWO_WORKERS,
                      measure_memory=True),
            bench.run(f"beam_infer lean, 2 workers, intra_op_threads={threads}", data, read,
                      lambda pc: pc | lean_shared, TWO_WORKERS, measure_memory=True),
            bench.run(f"beam_infer on_batches lean (bi.ReadTFRecordBatches), 2 workers, "
                      f"intra_op_threads={threads}", data, read_files,
                      lambda pc: pc | lean_shared.on_batches(), TWO_WORKERS,
                      measure_memory=True, batched=True)]
    rows = bench.best_of_rounds(runs)
    if two_workers:
        # The per-element lean row (the last of the steps) and the pre-batched lean one.
        one, one_batched = rows[2 + len(steps)], rows[one_worker - 1]
        for row, single in ((rows[-2], one), (rows[-1], one_batched)):
            row.name += f" ({row.rate / single.rate:.2f}x one worker)" \
                if row.rate > 0 and single.rate > 0 else ""
    return rows


def format_table(title: str, rows: Sequence[Row]) -> str:
    loop = rows[0].rate
    best = 1 / (1 / loop + 1 / rows[1].rate)
    tfx = next((r.rate for r in rows if r.name == "tfx-bsl RunInference"), None)
    reading = next((r.rate for r in rows if r.name == LOOP_READING), None)
    lines = [f"## {title}",
             "| variant | elements/s | vs direct loop | vs loop + floor | vs loop reading | "
             "vs tfx-bsl | model loads | peak worker RSS MB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    def ratio(value: float) -> str:
        return "n/a" if np.isnan(value) else f"{value:.2f}x"

    for row in rows:
        lines.append(
            f"| {row.name} | {'n/a' if np.isnan(row.rate) else f'{row.rate:,.0f}'} | "
            f"{ratio(row.rate / loop)} | {ratio(row.rate / best)} | "
            f"{ratio(row.rate / reading) if reading else '-'} | "
            f"{ratio(row.rate / tfx) if tfx else '-'} | "
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
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per variant; the best is reported (shared machines)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n_small, args.n_mlp, args.batch_size, args.repeat = 300, 200, 64, 1
    # Worker processes must import this checkout's beam_infer and benchmarks.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="beam_infer_bench_")
    bench = Bench(work_dir, repeat=args.repeat)
    tables = [
        format_table(f"y = 5x, keyed serialized Examples, n={args.n_small:,}",
                     bench_multiplier(bench, args.n_small, args.batch_size,
                                      tf_data_read=False)),
        format_table(f"y = 5x, keyed serialized Examples read by tf.data "
                     f"(bi.ReadTFRecordBatches, one element per record), n={args.n_small:,}",
                     bench_multiplier(bench, args.n_small, args.batch_size,
                                      tf_data_read=True)),
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
        f"\n\nbatch size {args.batch_size}; best of {args.repeat} runs in rounds; rates "
        f"clocked from first read to last inferred element; MLP SavedModel {model_mb:.1f} MB "
        f"on disk; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    print(report)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
