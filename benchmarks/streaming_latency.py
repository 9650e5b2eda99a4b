"""Added latency and throughput of streaming RunInference at several arrival rates.

``python -m benchmarks.streaming_latency`` runs, for each arrival rate, a generated
stream (``PeriodicImpulse``) through ``bi.RunInference`` with latency-bounded batching
(``max_batch_size=64, max_batch_duration_secs=0.05``) on the local FnApiRunner, and the
same stream through a pass-through step as the baseline. Latency is measured per element
from its creation to its result; the table prints p50/p99 of both, the added p50/p99
(inference minus baseline), the achieved throughput and the batch sizes used.
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.periodicsequence import PeriodicImpulse

import beam_infer as bi
from pipelines import models, streaming


class Latency(beam.DoFn):
    """Milliseconds from an element's creation to now, as a text line."""

    def process(self, element) -> Iterator[str]:
        done = time.time()
        if isinstance(element, tf.train.Example):
            example = element
        else:
            example = tf.train.Example.FromString(
                element.predict_log.request.inputs["examples"].string_val[0])
        sent = example.features.feature[streaming.SENT_AT].int64_list.value[0] / 1e6
        yield f"{(done - sent) * 1e3:.3f}"


def run_once(model_path: str, rate: float, duration: float, out_dir: str, *,
             infer: bool) -> dict[str, float]:
    prefix = os.path.join(out_dir, f"{'infer' if infer else 'base'}-{rate:g}")
    pipeline = beam.Pipeline(runner="FnApiRunner", options=PipelineOptions([]))
    start = time.time() + 1.0
    examples = (pipeline
                | "GenerateStream" >> PeriodicImpulse(start, start + duration,
                                                      fire_interval=1.0 / rate)
                | "MakeExamples" >> beam.ParDo(streaming.GenerateExamples(start, rate)))
    if infer:
        spec = bi.ModelSpec(model_path=model_path, batching=bi.BatchConfig(
            max_batch_size=64, max_batch_duration_secs=0.05))
        examples = examples | "RunInference" >> bi.RunInference(spec)
    else:
        examples = examples | "PassThrough" >> beam.Map(lambda e: e)
    _ = (examples | "Latency" >> beam.ParDo(Latency())
         | "Write" >> beam.ParDo(streaming.AppendLines(prefix)))
    result = pipeline.run()
    result.wait_until_finish()
    latencies = np.array([float(line) for path in glob.glob(prefix + "-*.txt")
                          for line in open(path)])  # noqa: SIM115
    row = {"n": len(latencies), "p50": float(np.percentile(latencies, 50)),
           "p99": float(np.percentile(latencies, 99)), "throughput": len(latencies) / duration}
    if infer:
        sizes = {m.key.metric.name: m.committed for m in result.metrics().query(
            MetricsFilter().with_namespace("beam_infer"))["distributions"]
        }["inference_request_batch_size"]
        row.update(batch_mean=sizes.mean, batch_max=sizes.max)
    return row


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="10,100,500,2000",
                        help="Arrival rates in elements per second, comma-separated.")
    parser.add_argument("--duration_secs", type=float, default=5.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        model = models.build_multiplier_model(os.path.join(work, "five", "1"), 5.0)
        print("Streaming RunInference on the local FnApiRunner, y = 5x model, "
              "max_batch_size=64, max_batch_duration_secs=0.05; latency in ms from "
              "creation to result.\n")
        print("| arrival rate /s | elements | baseline p50 / p99 | RunInference p50 / p99 "
              "| added p50 / p99 | throughput /s | batch size mean / max |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for rate in (float(r) for r in args.rates.split(",")):
            base = run_once(model, rate, args.duration_secs, work, infer=False)
            infer = run_once(os.path.dirname(model), rate, args.duration_secs, work,
                             infer=True)
            print(f"| {rate:g} | {infer['n']} | {base['p50']:.1f} / {base['p99']:.1f} "
                  f"| {infer['p50']:.1f} / {infer['p99']:.1f} "
                  f"| {infer['p50'] - base['p50']:.1f} / {infer['p99'] - base['p99']:.1f} "
                  f"| {infer['throughput']:.0f} "
                  f"| {infer['batch_mean']:.1f} / {infer['batch_max']} |", flush=True)


if __name__ == "__main__":
    main()
