"""Running small pipelines on DirectRunner and reading back what they wrote."""

from __future__ import annotations

import glob
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions


class _Pickled(beam.coders.Coder):
    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value)

    def decode(self, encoded: bytes) -> Any:
        return pickle.loads(encoded)

    def is_deterministic(self) -> bool:
        return True


def write_all(pcoll: beam.PCollection, prefix: str, label: str = "Collect") -> None:
    """Writes every element of ``pcoll`` to TFRecord files under ``prefix``."""
    _ = pcoll | label >> beam.io.WriteToTFRecord(prefix, coder=_Pickled())


def read_all(prefix: str) -> list[Any]:
    """The elements ``write_all`` wrote, in file order."""
    import tensorflow as tf

    return [pickle.loads(record.numpy()) for path in sorted(glob.glob(prefix + "*"))
            for record in tf.data.TFRecordDataset(path)]


def run_collect(build: Callable[[beam.Pipeline], dict[str, beam.PCollection]], tmp_dir: str,
                options: list[str] | None = None) -> tuple[dict[str, list[Any]], Any]:
    """Builds a pipeline with ``build``, runs it, and returns each named output's elements.

    Returns:
        ``({name: elements}, PipelineResult)``.
    """
    pipeline = beam.Pipeline(options=PipelineOptions(options or []))
    outputs = build(pipeline)
    for name, pcoll in outputs.items():
        write_all(pcoll, f"{tmp_dir}/{name}/part", label=f"Collect{name}")
    result = pipeline.run()
    result.wait_until_finish()
    return {name: read_all(f"{tmp_dir}/{name}/part") for name in outputs}, result


def read_number_lines(prefix: str) -> list[dict[str, float]]:
    """The ``name=value name=value`` lines of the text files ``prefix-*.txt``, as floats."""
    rows = []
    for path in glob.glob(prefix + "-*.txt"):
        with open(path) as f:
            for line in f:
                rows.append({k: float(v) for k, v in
                             (field.split("=") for field in line.split())})
    return rows


def beam_infer_metrics(result: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The committed ``beam_infer`` counters and distributions of ``result``, by name."""
    metrics = result.metrics().query(MetricsFilter().with_namespace("beam_infer"))
    return ({m.key.metric.name: m.committed for m in metrics["counters"]},
            {m.key.metric.name: m.committed for m in metrics["distributions"]})


def later(delay: float, action: Callable[[], Any]) -> threading.Thread:
    """Runs ``action`` after ``delay`` seconds in a daemon thread (started)."""
    thread = threading.Thread(target=lambda: (time.sleep(delay), action()), daemon=True)
    thread.start()
    return thread
