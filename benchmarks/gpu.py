"""beam_infer on a GPU: elements/s against the model called directly on the GPU, and memory.

Builds its own models and data in a temp dir (never committed): the MLP 784-512-512-10 of
``benchmarks.throughput`` (dense float32 rows, and serialized Examples) and a small conv
net on uint8 images. For each it prints one table in the style of the throughput
benchmark: the SavedModel's signature called directly in a Python loop on the same
batches, held in host memory and copied to the GPU in the loop (the limit), the same loop
with the batches already on the GPU, and beam_infer on DirectRunner per element and
pre-batched (``on_batches()``), lean and with PredictionLogs, each with its ratio to the
direct loop at the same batch size, then a table of GPU memory per model copy, and with
2 worker processes a copy each against one copy per GPU with
``ModelSpec(share_across_processes=True)``.

A pipeline's rate is clocked inside it as in ``benchmarks.throughput`` (first element
read to last element out of the inference step, per worker process; every element must
come out). Every process runs with ``TF_FORCE_GPU_ALLOW_GROWTH=true`` (as the GPU image in
``Dockerfile``), ``TF_CUDNN_USE_AUTOTUNE=0`` (a fresh worker does not spend its first
batches inside the clock tuning convolutions; the direct loop runs under the same setting;
``--cudnn_autotune`` turns it back on) and the models carry warm-up requests, so each
load traces and optimizes its function before the clock starts.

The GPU is found through TensorFlow (``tf.config.list_physical_devices("GPU")``); without
one a full run stops with exit status 2 and says why (``--smoke`` or ``--allow_cpu`` run
the same code on the CPU). Nothing is downloaded: it needs what ``requirements.txt``
installs, TensorFlow with CUDA on the GPU machine. A watchdog stops the run with exit
status 3 after ``--timeout_s`` and the tables measured so far stay in ``--out``.

Usage:
    python -m benchmarks.gpu --out DIR          # on a GPU machine (about 3-5 minutes)
    python -m benchmarks.gpu --smoke --out DIR  # tiny sizes, for CI (CPU)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence

import apache_beam as beam
import numpy as np
import tensorflow as tf

import beam_infer as bi
from beam_infer import _private_dirs
from beam_infer.saved_model import _devices
from benchmarks import throughput
from benchmarks.throughput import Bench, Data

TWO_WORKERS = throughput.TWO_WORKERS
DIRECT = "direct loop on the device (the limit)"
RESIDENT = "model only (inputs already on the device)"
ENV_DEFAULTS = {"TF_FORCE_GPU_ALLOW_GROWTH": "true", "TF_CUDNN_USE_AUTOTUNE": "0",
                "TF_CPP_MIN_LOG_LEVEL": "2"}
MB = 2**20


# ---------------------------------------------------------------------------- models


class _ConvNet(tf.Module):
    """Blocks of two 3x3 convolutions + ReLU, 2x2 average pooling between blocks, global
    average pooling and a dense layer of 10: uint8 images in, logits out."""

    def __init__(self, image: int, widths: Sequence[int], seed: int = 0):
        super().__init__(name="conv")
        rng = np.random.default_rng(seed)
        self.kernels = []
        channels = 3
        for width in widths:
            for _ in range(2):
                scale = np.sqrt(2 / (9 * channels))
                self.kernels.append(
                    (tf.Variable(rng.normal(0, scale, (3, 3, channels, width)).astype(np.float32)),
                     tf.Variable(np.zeros(width, np.float32))))
                channels = width
        self.head = (tf.Variable(rng.normal(0, 1 / np.sqrt(channels), (channels, 10))
                                 .astype(np.float32)),
                     tf.Variable(np.zeros(10, np.float32)))
        self.serve = tf.function(self._forward, input_signature=[
            tf.TensorSpec([None, image, image, 3], tf.uint8, name="images")])

    def _forward(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        x = tf.cast(images, tf.float32) / 255.0
        for i, (kernel, bias) in enumerate(self.kernels):
            x = tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME") + bias)
            if i % 2 == 1 and i < len(self.kernels) - 1:
                x = tf.nn.avg_pool2d(x, 2, 2, "VALID")
        x = tf.reduce_mean(x, axis=[1, 2])
        return {"logits": tf.matmul(x, self.head[0]) + self.head[1]}


def conv_flops(image: int, widths: Sequence[int]) -> float:
    """Multiply-adds x 2 of one image through ``_ConvNet`` (convolutions only)."""
    flops, channels, size = 0.0, 3, image
    for block, width in enumerate(widths):
        for _ in range(2):
            flops += 2 * 9 * channels * width * size * size
            channels = width
        if block < len(widths) - 1:
            size //= 2
    return flops


def build_conv(path: str, image: int, widths: Sequence[int]) -> str:
    module = _ConvNet(image, widths)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def disk_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path)
               for f in fs) / MB


def parameters(path: str) -> int:
    """Weights in the SavedModel's checkpoint."""
    return sum(int(np.prod(shape)) for name, shape in
               tf.train.list_variables(os.path.join(path, "variables", "variables"))
               if name.endswith("VARIABLE_VALUE"))


@dataclasses.dataclass(frozen=True)
class Workload:
    """One model, its data and how a batch of records becomes its input."""

    key: str
    title: str
    path: str
    signature: str  # "" for serving_default fed serialized Examples
    data: Data
    batches: Callable[[int], list[np.ndarray]]  # in-memory batches for the direct loop
    alias: str
    shape: tuple[int, ...] = ()  # per-element shape of dense records (empty: Examples)
    dtype: str = "float32"

    @property
    def spec_signatures(self) -> tuple[str, ...]:
        return (self.signature,) if self.signature else ()

    @property
    def dense(self) -> bool:
        return bool(self.shape)


# ------------------------------------------------------- pipeline steps (by reference)


def decode_records(records: tf.Tensor, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A batch of raw records as one host array ``[n, *shape]`` (decoded on the CPU)."""
    with tf.device("/CPU:0"):
        return tf.reshape(tf.io.decode_raw(records, tf.dtypes.as_dtype(dtype)),
                          (-1, *shape)).numpy()


def rows_of(records: tf.Tensor, shape: tuple[int, ...], dtype: str) -> list[np.ndarray]:
    return list(decode_records(records, shape, dtype))


def record_bytes(records: tf.Tensor) -> list[bytes]:
    return records.numpy().tolist()


def example_batch(records: tf.Tensor) -> np.ndarray:
    return np.array(records.numpy().tolist(), dtype=object)


def reader(work: Workload, batch: int, *, batched: bool
           ) -> Callable[[beam.Pipeline, str], beam.PCollection]:
    """``bi.ReadTFRecordBatches`` (tf.data), then one element per record or one per batch."""

    def read(p: beam.Pipeline, files: str) -> beam.PCollection:
        batches = p | "Read" >> bi.ReadTFRecordBatches(files, batch_size=batch)
        if work.dense:
            fn, args = (decode_records, rows_of)[not batched], (work.shape, work.dtype)
        else:
            fn, args = (example_batch, record_bytes)[not batched], ()
        step = beam.Map(fn, *args) if batched else beam.FlatMap(fn, *args)
        return batches | "Decode" >> step

    return read


# ------------------------------------------------------------------ direct loops


def direct_loop(function, batches: Sequence[np.ndarray], alias: str, device: str, *,
                resident: bool = False, repeat: int = 1) -> float:
    """Elements/s of the signature called on every batch under ``tf.device(device)``.

    The batches are host arrays copied to the device in the loop, as a pipeline's are;
    with ``resident`` they are copied before the clock starts. Outputs are fetched with
    ``.numpy()`` (the device is synchronised on every batch). The first batch is a
    warm-up call outside the clock.
    """

    def feed(batch):
        if batch.dtype == object:  # serialized Examples: a string tensor, parsed on the CPU
            return tf.constant(batch)
        return tf.identity(batch)

    best = 0.0
    with tf.device(device):
        inputs = [feed(b) for b in batches] if resident else batches
        if resident and device.startswith("/GPU") and "GPU" not in inputs[0].device:
            print(f"benchmarks.gpu: warning: the inputs meant to be on {device} stayed on "
                  f"{inputs[0].device}; the 'inputs already on the device' row is not",
                  flush=True)
        _ = {k: v.numpy() for k, v in function(**{alias: feed(batches[0])}).items()}
        for _ in range(repeat):
            start, count = time.perf_counter(), 0
            for batch in inputs:
                outputs = function(**{alias: batch if resident else feed(batch)})
                _ = {k: v.numpy() for k, v in outputs.items()}
                count += len(batch)
            best = max(best, count / (time.perf_counter() - start))
    return best


# ----------------------------------------------------------------------- memory


def _tf_memory(device: str) -> dict[str, int] | None:
    try:
        return tf.config.experimental.get_memory_info(device.lstrip("/"))
    except ValueError:  # no allocator stats: the CPU
        return None


def _reset_tf_memory(device: str) -> None:
    with contextlib.suppress(ValueError):  # the CPU
        tf.config.experimental.reset_memory_stats(device.lstrip("/"))


def nvidia_smi(query: str, kind: str = "gpu") -> list[list[str]] | None:
    """Rows of ``nvidia-smi --query-<kind>=<query>``, or None without a usable nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-{kind}={query}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [[cell.strip() for cell in line.split(",")] for line in out.splitlines()
            if line.strip()]


def _smi_used_mb() -> float | None:
    rows = nvidia_smi("memory.used")
    return sum(float(r[0]) for r in rows) if rows else None


def _smi_processes() -> dict[int, float] | None:
    rows = nvidia_smi("pid,used_memory", "compute-apps")
    if rows is None:
        return None
    found = {}
    for row in rows:
        try:
            found[int(row[0])] = float(row[1])
        except (ValueError, IndexError):
            continue
    return found


class GpuSampler:
    """Samples nvidia-smi while a multi-process pipeline runs: the peak rise of the GPUs'
    memory.used over its value before, and the peak per process other than this one."""

    def __init__(self, interval_s: float = 0.25):
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.before = _smi_used_mb()
        self.peak = self.before
        self.processes: dict[int, float] = {}

    def __enter__(self) -> GpuSampler:
        if self.before is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _sample(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            used = _smi_used_mb()
            if used is not None and (self.peak is None or used > self.peak):
                self.peak = used
            for pid, mb in (_smi_processes() or {}).items():
                if pid != me and mb > self.processes.get(pid, 0):
                    self.processes[pid] = mb
            self._stop.wait(self._interval)

    @property
    def rise_mb(self) -> float | None:
        return None if self.before is None else self.peak - self.before


def gpu_claims() -> int:
    """beam_infer's machine-wide count of shared copies placed on GPUs (``_devices``)."""
    path = os.path.join(_private_dirs.user_directory(), _devices._COUNTER_FILE)
    try:
        with open(path) as f:
            text = f.read(32).strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


# ----------------------------------------------------------------------- report


@dataclasses.dataclass
class Row:
    name: str
    batch: int
    rate: float
    copies: str = "-"  # model loads or copies
    gpu_mb: float | None = None
    processes: str = "-"
    note: str = ""


@dataclasses.dataclass
class Report:
    meta: dict
    tables: list[tuple[str, list[Row]]] = dataclasses.field(default_factory=list)
    memory: list[dict] = dataclasses.field(default_factory=list)
    error: str | None = None

    def markdown(self) -> str:
        parts = [format_table(title, rows) for title, rows in self.tables]
        if self.memory:
            parts.append(format_memory(self.memory))
        if self.error:
            parts.append(f"**incomplete**: {self.error}")
        parts.append(footer(self.meta))
        return "\n\n".join(parts)

    def write(self, out: str | None) -> None:
        if not out:
            return
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "gpu.md"), "w") as f:
            f.write(self.markdown() + "\n")
        data = {"meta": self.meta, "error": self.error, "memory": self.memory,
                "tables": [{"title": t, "rows": [dataclasses.asdict(r) for r in rows]}
                           for t, rows in self.tables]}
        with open(os.path.join(out, "gpu.json"), "w") as f:
            json.dump(data, f, indent=1, default=str)


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 10 else f"{value:,.1f}"


def format_table(title: str, rows: Sequence[Row]) -> str:
    loops = {r.batch: r.rate for r in rows if r.name == DIRECT}
    lines = [f"## {title}",
             "| variant | batch | elements/s | vs direct loop | model loads | GPU MB | "
             "GPU processes |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        loop = loops.get(r.batch)
        ratio = f"{r.rate / loop:.2f}x" if loop and r.rate == r.rate else "-"
        lines.append(f"| {r.name}{r.note} | {r.batch:,} | {r.rate:,.0f} | {ratio} | "
                     f"{r.copies} | {_mb(r.gpu_mb)} | {r.processes} |")
    return "\n".join(lines)


def format_memory(memory: Sequence[dict]) -> str:
    lines = ["## GPU memory per model copy",
             "| model | parameters | SavedModel MB | in use after load MB | "
             "peak, one batch MB | 2 workers, a copy each: loads / GPU MB | "
             "2 workers, share_across_processes: copies / GPU MB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for m in memory:
        lines.append(
            f"| {m['model']} | {m['parameters']:,} | {_mb(m['disk_mb'])} | "
            f"{_mb(m['after_load_mb'])} | {_mb(m['peak_mb'])} (batch {m['batch']:,}) | "
            f"{m.get('own_copies', '-')} / {_mb(m.get('own_gpu_mb'))} | "
            f"{m.get('shared_copies', '-')} / {_mb(m.get('shared_gpu_mb'))} |")
    return "\n".join(lines)


def footer(meta: dict) -> str:
    return (f"{meta['device']}; TensorFlow {meta['tensorflow']}, Beam {meta['beam']}; "
            f"{meta['cpus']} CPUs; {meta['date']}; load average {meta['load_start']:.2f} at "
            f"the start, {meta.get('load_end', float('nan')):.2f} at the end; "
            f"{meta['elapsed_s']:.0f} s in all; best of {meta['repeat']}; rates clocked from "
            f"first read to last inferred element; env {meta['env']}")


def machine(device: str) -> dict:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        name = details.get("device_name", gpus[0].name)
        cc = details.get("compute_capability")
        described = f"{len(gpus)} GPU(s): {name}" + (f" (compute {cc[0]}.{cc[1]})" if cc else "")
        smi = nvidia_smi("name,memory.total,driver_version")
        if smi:
            described += f", {smi[0][1]} MiB, driver {smi[0][2]}"
    else:
        described = f"no GPU found by TensorFlow: CPU ({cpu_model()})"
    return {"device": described, "tf_device": device, "gpus": [g.name for g in gpus],
            "tensorflow": tf.__version__, "beam": beam.__version__, "cpus": os.cpu_count(),
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "load_start": os.getloadavg()[0],
            "env": " ".join(f"{k}={os.environ.get(k)}" for k in ENV_DEFAULTS)}


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def no_gpu_message() -> str:
    cuda = tf.test.is_built_with_cuda()
    smi = nvidia_smi("name,driver_version")
    return ("no GPU found: tf.config.list_physical_devices('GPU') is empty. TensorFlow "
            f"{tf.__version__} {'is' if cuda else 'is NOT'} built with CUDA; nvidia-smi "
            f"{'sees ' + repr(smi) if smi else 'is absent or sees no GPU'}; "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}. Install "
            "tensorflow[and-cuda] (see Dockerfile), or run with --smoke or --allow_cpu to "
            "measure the CPU.")


# ----------------------------------------------------------------------- runs


@dataclasses.dataclass(frozen=True)
class Variant:
    """One pipeline row: how it reads, what it runs, on how many worker processes."""

    name: str
    batch: int
    batched: bool  # one element per batch (on_batches) instead of one per record
    step: str | None = None  # a key of ``_steps``; None: read only
    workers: int = 1
    shared: bool = False  # ModelSpec(share_across_processes=True)


def plan(work: Workload, args: argparse.Namespace) -> list[Variant]:
    """The pipeline rows of one workload.

    Full runs: floors, PredictionLog rows and 2-worker rows at ``--batch_size``, lean rows
    at every size of the sweep; on serialized Examples the floor, PredictionLog per element
    and on_batches lean. ``--smoke`` runs each step and each read once at one size (for the
    conv net PredictionLog and on_batches lean; the 2-worker row only shared, only for the
    MLP), so the CI test stays short.
    """
    batch, smoke = args.batch_size, args.smoke
    if not work.dense:
        return [Variant("read only (runner floor)", batch, False),
                Variant("beam_infer PredictionLog", batch, False, "logs"),
                Variant("beam_infer on_batches lean", batch, True, "batched_lean")][smoke:]
    sweep = [batch] if smoke else batch_sizes(args)
    rows = [Variant("read only (runner floor)", batch, False),
            Variant("read batches only (bi.ReadTFRecordBatches)", batch, True),
            Variant("beam_infer PredictionLog", batch, False, "logs"),
            Variant("beam_infer on_batches PredictionLog", batch, True, "batched_logs")]
    rows += [Variant("beam_infer lean (PredictionResult)", b, False, "lean") for b in sweep]
    rows += [Variant("beam_infer on_batches lean", b, True, "batched_lean") for b in sweep]
    if not args.skip_two_workers:
        rows += [Variant("beam_infer on_batches lean, 2 workers, a copy each", batch, True,
                         "batched_lean", workers=2),
                 Variant("beam_infer on_batches lean, 2 workers, share_across_processes",
                         batch, True, "batched_lean", workers=2, shared=True)]
    if smoke:  # every step and read once: the floors are the same reads with no step
        rows = [row for row in rows if row.step and (row.shared or row.workers == 1) and (
            work.key == "mlp" or (row.step in ("logs", "batched_lean") and row.workers == 1))]
    return rows


def batch_sizes(args: argparse.Namespace) -> list[int]:
    return sorted({int(b) for b in str(args.batch_sizes).split(",")} | {args.batch_size})


class Runner:
    def __init__(self, args: argparse.Namespace, device: str, work_dir: str):
        self.args = args
        self.device = device
        self.gpu = device.startswith("/GPU")
        self.bench = Bench(work_dir, repeat=args.repeat)

    def spec(self, work: Workload, batch: int, **kwargs) -> bi.ModelSpec:
        return bi.ModelSpec(model_path=work.path, signature_names=work.spec_signatures,
                            batching=bi.BatchConfig(min_batch_size=batch,
                                                    max_batch_size=batch), **kwargs)

    def pipeline(self, work: Workload, variant: Variant) -> Row:
        read = reader(work, variant.batch, batched=variant.batched)
        step = _steps(self.spec(work, variant.batch, share_across_processes=variant.shared)
                      )[variant.step] if variant.step else lambda pcoll: pcoll
        options = TWO_WORKERS if variant.workers == 2 else ()
        _reset_tf_memory(self.device)
        claims, started = gpu_claims(), time.perf_counter()
        with GpuSampler() if variant.workers > 1 else _NoSampler() as sampler:
            row = self.bench.pipeline(variant.name, work.data, read, step, options,
                                      batched=variant.batched)
        out = Row(row.name, variant.batch, row.rate)
        loads = "-" if row.loads is None else str(row.loads)
        out.copies = f"{loads} ({gpu_claims() - claims} GPU claims)" \
            if variant.shared and self.gpu else loads
        if variant.workers > 1:
            out.gpu_mb = sampler.rise_mb
            if sampler.processes:  # e.g. "3: 4,120 + 610 + 598 MB"
                sizes = sorted(sampler.processes.values(), reverse=True)
                out.processes = f"{len(sizes)}: {' + '.join(_mb(s) for s in sizes)} MB"
        else:
            info = _tf_memory(self.device)
            out.gpu_mb = info["peak"] / MB if info else None
        print(f"  {work.key}: {out.name}, batch {variant.batch}: {out.rate:,.0f}/s "
              f"({time.perf_counter() - started:.1f} s)", flush=True)
        return out

    def memory(self, work: Workload, batch: int) -> dict:
        """One copy loaded by beam_infer's handler in this process, then one batch scored."""
        handler = bi.SavedModelHandler(self.spec(work, batch), output=bi.Output.RESULT)
        _reset_tf_memory(self.device)
        before = _tf_memory(self.device)
        model = handler.load_model()
        loaded = _tf_memory(self.device)
        _ = list(handler.run_inference(list(work.batches(batch)[0]), model))
        peak = _tf_memory(self.device)
        del model
        return {"model": work.title.split(",")[0], "batch": batch,
                "parameters": parameters(work.path), "disk_mb": disk_mb(work.path),
                "after_load_mb": (loaded["current"] - before["current"]) / MB if before else None,
                "peak_mb": (peak["peak"] - before["current"]) / MB if before else None}

    def workload(self, work: Workload, memory: list[dict], rows: list[Row]) -> None:
        """Appends the workload's rows to ``rows`` as they are measured."""
        args, batch = self.args, self.args.batch_size
        loaded = tf.saved_model.load(work.path)
        function = loaded.signatures[work.signature or "serving_default"]
        rows += [Row(DIRECT, b, direct_loop(function, work.batches(b), work.alias, self.device,
                                            repeat=args.repeat)) for b in batch_sizes(args)]
        if work.dense:
            rows.append(Row(RESIDENT, batch, direct_loop(
                function, work.batches(batch), work.alias, self.device, resident=True,
                repeat=args.repeat)))
            memory.append(self.memory(work, batch))
        del loaded, function
        for variant in plan(work, args):
            row = self.pipeline(work, variant)
            if variant.workers > 1:
                one = next((r for r in rows if r.name == "beam_infer on_batches lean"
                            and r.batch == variant.batch), None)
                if one and one.rate > 0:
                    row.note = f" ({row.rate / one.rate:.2f}x one worker)"
                prefix = "shared" if variant.shared else "own"
                memory[-1].update({f"{prefix}_copies": row.copies,
                                   f"{prefix}_gpu_mb": row.gpu_mb})
            rows.append(row)


class _NoSampler:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def _steps(spec: bi.ModelSpec) -> dict[str, Callable[[beam.PCollection], object]]:
    lean = bi.RunInference(spec, output=bi.Output.RESULT)
    logs = bi.RunInference(spec)
    return {"logs": lambda pc: pc | logs, "lean": lambda pc: pc | lean,
            "batched_logs": lambda pc: pc | logs.on_batches(),
            "batched_lean": lambda pc: pc | lean.on_batches()}


def _batched(values: np.ndarray) -> Callable[[int], list[np.ndarray]]:
    return lambda size: [values[i:i + size] for i in range(0, len(values), size)]


def workloads(args, work_dir: str) -> list[Workload]:
    """Builds the models and writes their data (4 TFRecord shards each)."""
    found = []
    mlp = throughput.build_mlp(os.path.join(work_dir, "mlp"))
    rows = np.random.default_rng(1).random((args.n_mlp, throughput.MLP_SIZES[0]),
                                           dtype=np.float32)
    bi.write_warmup_requests(mlp, rows[:1], signature_name="dense")
    sizes = "-".join(map(str, throughput.MLP_SIZES))
    found.append(Workload(
        "mlp", f"MLP {sizes}, dense float32 rows, n={args.n_mlp:,}", mlp, "dense",
        Data.write(os.path.join(work_dir, "mlp_dense"), [r.tobytes() for r in rows]),
        _batched(rows), "x", (throughput.MLP_SIZES[0],), "float32"))
    if not args.skip_examples:
        examples = [throughput.mlp_example(r) for r in rows]
        found.append(Workload(
            "mlp_examples", f"MLP {sizes}, serialized Examples, n={args.n_mlp:,}", mlp, "",
            Data.write(os.path.join(work_dir, "mlp_examples"), examples),
            _batched(np.array(examples, dtype=object)), "examples"))
    widths = [int(w) for w in args.conv_widths.split(",")]
    conv = build_conv(os.path.join(work_dir, "conv"), args.image_size, widths)
    shape = (args.image_size, args.image_size, 3)
    images = np.random.default_rng(2).integers(0, 256, (args.n_conv, *shape), dtype=np.uint8)
    bi.write_warmup_requests(conv, images[:1])
    gflops = conv_flops(args.image_size, widths) / 1e9
    found.append(Workload(
        "conv", f"conv net {'x'.join(map(str, shape))} uint8, {2 * len(widths)} conv layers "
        f"{'-'.join(map(str, widths))}, {gflops:.2f} GFLOPs per image, n={args.n_conv:,}",
        conv, "serving_default",
        Data.write(os.path.join(work_dir, "conv_images"), [i.tobytes() for i in images]),
        _batched(images), "images", shape, "uint8"))
    return found


# ----------------------------------------------------------------------- main


class Watchdog:
    """Stops the whole run after ``seconds``: writes what was measured, ends the worker
    processes this run started, exits with status 3. A benchmark that hangs on a lent
    machine costs the machine's time; one that stops says where it stood."""

    def __init__(self, seconds: float, report: Report, out: str | None):
        self._timer = threading.Timer(seconds, self._fire, args=(seconds,))
        self._timer.daemon = True
        self._report, self._out = report, out

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()

    def _fire(self, seconds: float) -> None:
        message = f"timed out after {seconds:.0f} s (--timeout_s); tables so far are in --out"
        print(f"benchmarks.gpu: {message}", file=sys.stderr, flush=True)
        self._report.error = message
        try:
            self._report.meta.update(elapsed_s=seconds, load_end=os.getloadavg()[0])
            self._report.write(self._out)
            print(self._report.markdown(), flush=True)
        finally:
            for pid in throughput._descendants(os.getpid()):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            os._exit(3)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="folder for gpu.md and gpu.json")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, CPU allowed (CI)")
    parser.add_argument("--allow_cpu", action="store_true",
                        help="measure the CPU when TensorFlow finds no GPU")
    parser.add_argument("--n_mlp", type=int, default=65_536, help="MLP elements")
    parser.add_argument("--n_conv", type=int, default=16_384, help="conv net images")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--conv_widths", default="64,128,256",
                        help="channels of each block of two convolutions")
    parser.add_argument("--batch_size", type=int, default=1024,
                        help="batch of every row not in the sweep")
    parser.add_argument("--batch_sizes", default="256,1024,4096",
                        help="the sweep: direct loop and lean rows at each size")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per row; the best is reported")
    parser.add_argument("--skip_two_workers", action="store_true")
    parser.add_argument("--skip_examples", action="store_true",
                        help="no MLP table on serialized Examples")
    parser.add_argument("--cudnn_autotune", action="store_true",
                        help="let cuDNN tune convolutions (TF_CUDNN_USE_AUTOTUNE unset)")
    parser.add_argument("--timeout_s", type=float, default=540,
                        help="stop the run (exit 3) after this long")
    parser.add_argument("--work_dir", default=None, help="default: a temp dir, removed")
    parser.add_argument("--verbose", action="store_true",
                        help="keep Beam's warnings (quiet by default, so the tables stay "
                             "in the last lines of the output)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n_mlp, args.n_conv, args.image_size, args.conv_widths = 256, 128, 16, "4,8"
        args.batch_size, args.batch_sizes, args.timeout_s = 32, "16,32", min(args.timeout_s, 240)
    return args


def main(argv: Sequence[str] | None = None) -> str:
    args = parse(argv)
    started = time.perf_counter()
    for name, value in ENV_DEFAULTS.items():  # inherited by the worker processes
        if name == "TF_CUDNN_USE_AUTOTUNE" and args.cudnn_autotune:
            os.environ.pop(name, None)
        else:
            os.environ.setdefault(name, value)
    # Worker processes must import this checkout's beam_infer and benchmarks.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [throughput.ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
    if not args.verbose:
        logging.getLogger().setLevel(logging.ERROR)
    gpus = tf.config.list_physical_devices("GPU")
    _devices.enable_memory_growth()  # before the first op, as beam_infer does on workers
    if not gpus and not (args.smoke or args.allow_cpu):
        print(f"benchmarks.gpu: {no_gpu_message()}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    device = "/GPU:0" if gpus else "/CPU:0"
    report = Report({**machine(device), "repeat": args.repeat, "sweep": batch_sizes(args),
                     "batch_size": args.batch_size, "smoke": args.smoke, "elapsed_s": 0.0})
    print(f"benchmarks.gpu: {report.meta['device']} "
          f"({time.perf_counter() - started:.1f} s after the start)", flush=True)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="beam_infer_gpu_")
    try:
        with Watchdog(args.timeout_s, report, args.out):
            runner = Runner(args, device, work_dir)
            for work in workloads(args, work_dir):
                report.tables.append((work.title, []))  # filled in as rows are measured
                runner.workload(work, report.memory, report.tables[-1][1])
                report.meta["elapsed_s"] = time.perf_counter() - started
                report.write(args.out)  # what is measured survives a later failure
    except Exception as e:
        report.error = f"{type(e).__name__}: {e}"
        raise
    finally:
        report.meta["elapsed_s"] = time.perf_counter() - started
        report.meta["load_end"] = os.getloadavg()[0]
        report.write(args.out)
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
        text = report.markdown()
        print(text, flush=True)
    return text


if __name__ == "__main__":
    # Run as benchmarks.gpu, not __main__, so worker processes find the steps by reference.
    from benchmarks import gpu

    gpu.main(sys.argv[1:])
