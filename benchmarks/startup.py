"""Start-up: time to the first scored element and to the end of a job, in fresh processes.

Every run is a new process, so interpreter start and every import count, as they do for
a user's job. ``python -m benchmarks.startup --child ...`` runs a DirectRunner pipeline
that reads ``y = 5x`` serialized Examples from a TFRecord file, keys them, scores them
and counts the results, with beam_infer's ``bi.RunInference(bi.ModelSpec(...))`` or
tfx-bsl's ``RunInference`` on the same model and file; with the first size the main job,
``python -m pipelines.keyed``, also runs on its bundled questions with the same model.
The child appends ``time.perf_counter()`` stamps (CLOCK_MONOTONIC: parent and child
share it) to the file named by ``BEAM_INFER_STARTUP_STAMPS``, which the parent creates
with ``tempfile``; the parent stamps the spawn and the exit. The phases:

* interpreter start: spawn to the child's first statement;
* ``import apache_beam``, then the library (``import beam_infer``, or
  ``tfx_bsl.public.beam``), in the order a user's program imports them; "of which import
  tensorflow" is TensorFlow's own import inside the library's, stamped by a meta path
  finder around ``tensorflow/__init__``;
* construction: the pipeline built (the transforms' build-time reads of
  ``saved_model.pb``) until ``pipeline.run()`` is called;
* runner start: ``run()`` to the start of the model load (pipeline translation, the
  read's first stages, the scoring stage's setup before the load);
* model load: the handler's load (beam_infer's ``SavedModelBackend.load``, tfx-bsl's
  ``_BaseSavedModelHandler.load_model``), less warm-up: the replay of
  ``assets.extra/tf_serving_warmup_requests`` (beam_infer's ``_warmup.replay``; tfx-bsl
  has none, and the model here has no such file, so both read 0);
* first element: the load's end to the first scored element out of the inference step
  (the first records read, batched, encoded and scored);
* then to the last scored element, to ``wait_until_finish`` returning, and to the
  process's exit (the interpreter's finalization).

The job's phases are not stamped (it runs as a user runs it): its first scored element
is its first answer line on standard output. To stamp the loads the child wraps those
three methods with a function that writes a stamp before and after; nothing is replaced.
Variants run interleaved, ``--repeat`` times each; the tables give medians per phase and
``tfx-bsl / beam_infer`` (above 1: beam_infer is faster).

Usage:
    python -m benchmarks.startup            # the README tables (a few minutes)
    python -m benchmarks.startup --smoke    # one run each of a tiny job, for CI
"""

from __future__ import annotations

import argparse
import functools
import importlib.abc
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

# Only the standard library at module level: the child's imports are what is measured.

STAMPS_ENV = "BEAM_INFER_STARTUP_STAMPS"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEAM_INFER, TFX_BSL, KEYED_JOB = "beam_infer", "tfx-bsl", "pipelines.keyed"
#: (phase, stamp it starts at, stamp it ends at), in the order a run passes them.
PHASES = (
    ("interpreter start", "spawn", "main"),
    ("import apache_beam", "main", "apache_beam"),
    ("import the library", "apache_beam", "library"),
    ("of which import tensorflow", "tensorflow_start", "tensorflow"),
    ("construction (build-time reads)", "library", "built"),
    ("runner start", "built", "load_start"),
    ("model load", "load_start", "load_end"),
    ("warm-up", "warmup_start", "warmup_end"),
    ("first element", "load_end", "first_out"),
    ("the other elements", "first_out", "last_out"),
    ("pipeline end", "last_out", "done"),
    ("process exit", "done", "exit"),
)
TOTALS = (("to first scored element", "spawn", "first_out"), ("total", "spawn", "exit"))


# --- the child ---------------------------------------------------------------------------

def stamp(label: str) -> None:
    """Appends ``label perf_counter()`` to the stamps file (one line, flushed at once)."""
    with open(os.environ[STAMPS_ENV], "a") as f:
        f.write(f"{label} {time.perf_counter()!r}\n")


def _stamped(method: Callable, start: str, end: str) -> Callable:
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        stamp(start)
        try:
            return method(*args, **kwargs)
        finally:
            stamp(end)
    return wrapper



def with_key(record: bytes) -> tuple[bytes, bytes]:
    return record[-4:], record


class _StampTensorFlowImport(importlib.abc.MetaPathFinder):
    """Stamps the start and end of ``tensorflow``'s own import, wherever it happens."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def timed(module):
            stamp("tensorflow_start")
            try:
                exec_module(module)
            finally:
                stamp("tensorflow")
        spec.loader.exec_module = timed
        return spec


def child(variant: str, model: str, data: str) -> None:
    """One run: imports as a user's program does, builds and runs the pipeline."""
    stamp("main")
    sys.meta_path.insert(0, _StampTensorFlowImport())
    import apache_beam as beam
    stamp("apache_beam")
    if variant == TFX_BSL:
        from tfx_bsl.beam import run_inference as tfx_impl
        from tfx_bsl.public.beam import RunInference as TfxRunInference
        from tfx_bsl.public.proto import model_spec_pb2
        stamp("library")
        handler = tfx_impl._BaseSavedModelHandler
        handler.load_model = _stamped(handler.load_model, "load_start", "load_end")
        spec = model_spec_pb2.InferenceSpecType(
            saved_model_spec=model_spec_pb2.SavedModelSpec(model_path=model))
        inference = TfxRunInference(spec)
    else:
        import beam_infer as bi
        stamp("library")
        from beam_infer.saved_model import _backend, _warmup

        backend = _backend.SavedModelBackend
        backend.load = _stamped(backend.load, "load_start", "load_end")
        _warmup.replay = _stamped(_warmup.replay, "warmup_start", "warmup_end")
        inference = bi.RunInference(bi.ModelSpec(model_path=model))

    class LastOut(beam.DoFn):
        """Stamps the first element out once, and the last element of every bundle."""

        def start_bundle(self):
            self._at = None

        def process(self, element):
            if self._at is None and not getattr(LastOut, "first", False):
                LastOut.first = True
                stamp("first_out")
            self._at = time.perf_counter()
            yield element

        def finish_bundle(self):
            if self._at is not None:
                with open(os.environ[STAMPS_ENV], "a") as f:
                    f.write(f"last_out {self._at!r}\n")

    pipeline = beam.Pipeline()
    _ = (pipeline
         | "Read" >> beam.io.ReadFromTFRecord(data)
         | "Key" >> beam.Map(with_key).with_output_types(tuple[bytes, bytes])
         | "RunInference" >> inference
         | "Out" >> beam.ParDo(LastOut())
         | "Count" >> beam.combiners.Count.Globally())
    stamp("built")
    pipeline.run().wait_until_finish()
    stamp("done")


# --- the parent --------------------------------------------------------------------------

def _child_env(stamps: str | None = None) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if stamps is not None:
        env[STAMPS_ENV] = stamps
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
    return env


def _read_stamps(path: str) -> dict[str, float]:
    """Each label's stamp: the last for ``last_out``, the first for every other label."""
    stamps: dict[str, float] = {}
    with open(path) as f:
        for line in f:
            label, value = line.split()
            at = float(value)
            if label == "last_out":
                stamps[label] = max(at, stamps.get(label, at))
            else:
                stamps.setdefault(label, at)
    return stamps


def run_child(variant: str, model: str, data: str, work_dir: str) -> dict[str, float]:
    """Runs one fresh child process; returns its stamps, with ``spawn`` and ``exit``."""
    fd, stamps = tempfile.mkstemp(prefix="stamps_", dir=work_dir)
    os.close(fd)
    command = [sys.executable, "-m", "benchmarks.startup", "--child", variant,
               "--model", model, "--data", data]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=_child_env(stamps), capture_output=True,
                          text=True, check=False)
    end = time.perf_counter()
    if done.returncode != 0:
        raise RuntimeError(f"{variant} child exited {done.returncode}:\n{done.stderr[-3000:]}")
    return {"spawn": start, **_read_stamps(stamps), "exit": end}


def run_keyed_job(model: str, work_dir: str) -> dict[str, float]:
    """``python -m pipelines.keyed`` as a user runs it; the first answer line on stdout is
    its first scored element."""
    out = tempfile.mkdtemp(prefix="keyed_", dir=work_dir)
    command = [sys.executable, "-m", KEYED_JOB, f"--model_path={model}",
               f"--work_dir={out}"]
    start = time.perf_counter()
    first = None
    with subprocess.Popen(command, cwd=ROOT, env=_child_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            if first is None and line.startswith("key is "):
                first = time.perf_counter()
        stderr = proc.stderr.read()
    end = time.perf_counter()
    if proc.returncode != 0 or first is None:
        raise RuntimeError(f"{KEYED_JOB} exited {proc.returncode}:\n{stderr[-3000:]}")
    return {"spawn": start, "first_out": first, "exit": end}


def phase_seconds(stamps: dict[str, float]) -> dict[str, float]:
    """Every phase (and total) whose two stamps the run has, in seconds."""
    spans = {}
    for name, start, end in (*PHASES, *TOTALS):
        if start in stamps and end in stamps:
            spans[name] = stamps[end] - stamps[start]
    if "warm-up" in spans:  # the replay runs inside the load
        spans["model load"] -= spans["warm-up"]
    elif "model load" in spans:
        spans["warm-up"] = 0.0
    return spans


def measure(variants: Sequence[Callable[[], dict[str, float]]], repeat: int
            ) -> list[list[dict[str, float]]]:
    """``repeat`` runs of every variant, interleaved so load on the machine hits them alike."""
    runs: list[list[dict[str, float]]] = [[] for _ in variants]
    for _ in range(repeat):
        for i, variant in enumerate(variants):
            runs[i].append(phase_seconds(variant()))
    return runs


def medians(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    names = {name for run in runs for name in run}
    return {name: statistics.median(run[name] for run in runs if name in run)
            for name in names}


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None or denominator < 0.005:
        return "-"
    return f"{numerator / denominator:.2f}x"


def format_table(title: str, bi_runs: Sequence[dict[str, float]],
                 tfx_runs: Sequence[dict[str, float]]) -> str:
    """Median seconds per phase, beam_infer against tfx-bsl."""
    ours, theirs = medians(bi_runs), medians(tfx_runs)
    lines = [f"## {title}",
             "| phase | beam_infer s | tfx-bsl s | tfx-bsl / beam_infer |",
             "| --- | ---: | ---: | ---: |"]
    totals = {name for name, _, _ in TOTALS}
    for name, _, _ in (*PHASES, *TOTALS):
        label = f"**{name}**" if name in totals else name
        if name == "import the library":
            label += " (`import beam_infer` / `import tfx_bsl.public.beam`)"
        lines.append(f"| {label} | {_seconds(ours.get(name))} | "
                     f"{_seconds(theirs.get(name))} | "
                     f"{_ratio(theirs.get(name), ours.get(name))} |")
    spread = ", ".join(f"{library} {min(r['total'] for r in runs):.2f} to "
                       f"{max(r['total'] for r in runs):.2f} s"
                       for library, runs in ((BEAM_INFER, bi_runs), (TFX_BSL, tfx_runs)))
    return "\n".join(lines) + f"\n\ntotal per run: {spread}"


def format_keyed_table(keyed_runs: Sequence[dict[str, float]],
                       bi_runs: Sequence[dict[str, float]]) -> str:
    keyed, small = medians(keyed_runs), medians(bi_runs)
    """The job's two totals next to those of the beam_infer pipeline of the same size."""
    lines = [f"## `python -m {KEYED_JOB}` (the bundled questions, the same model)",
             "| measured | pipelines.keyed s | the beam_infer pipeline above s |",
             "| --- | ---: | ---: |"]
    for name, _, _ in TOTALS:
        lines.append(f"| {name} | {_seconds(keyed.get(name))} | "
                     f"{_seconds(small.get(name))} |")
    return "\n".join(lines)


def _write_data(path: str, n: int) -> str:
    import tensorflow as tf

    from pipelines import models

    with tf.io.TFRecordWriter(path) as writer:
        for i in range(n):
            writer.write(models.make_example(float(i % 1000)).SerializeToString())
    return path


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="one run each, tiny job (CI)")
    parser.add_argument("--sizes", default="300,200000",
                        help="elements per job, one table each (comma-separated)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="runs per variant; the tables give medians")
    parser.add_argument("--skip_keyed", action="store_true",
                        help="do not time python -m pipelines.keyed")
    parser.add_argument("--child", choices=(BEAM_INFER, TFX_BSL), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.model, args.data)
        return ""
    if args.smoke:
        args.sizes, args.repeat = "40", 1
    sizes = [int(size) for size in args.sizes.split(",")]
    from pipelines import models

    tables = []
    with tempfile.TemporaryDirectory(prefix="beam_infer_startup_") as work_dir:
        model = models.build_multiplier_model(os.path.join(work_dir, "five"), models.FIVE)
        load_start = os.getloadavg()[0]
        for n in sizes:
            data = _write_data(os.path.join(work_dir, f"examples_{n}.tfrecord"), n)
            variants = [functools.partial(run_child, BEAM_INFER, model, data, work_dir),
                        functools.partial(run_child, TFX_BSL, model, data, work_dir)]
            keyed = not args.skip_keyed and n == sizes[0]
            if keyed:
                variants.append(functools.partial(run_keyed_job, model, work_dir))
            runs = measure(variants, args.repeat)
            tables.append(format_table(
                f"y = 5x, {n:,} keyed serialized Examples from a TFRecord file", *runs[:2]))
            if keyed:
                tables.append(format_keyed_table(runs[2], runs[0]))
    report = "\n\n".join(tables) + (
        f"\n\nmedians of {args.repeat} runs per variant, interleaved, each a fresh process; "
        f"DirectRunner; {os.cpu_count()} CPUs; load average {load_start:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end")
    print(report)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
