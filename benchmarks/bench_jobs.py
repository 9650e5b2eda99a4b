"""What the batch scoring job's output formats cost, on DirectRunner, in one process.

Prints elements/s for: a pipeline that only reads and counts the TFRecord (the floor any
job pays), batch scoring to a TFRecord of PredictionLogs, and batch scoring to JSON-lines
and Parquet rows (``PredictionLogToRows`` plus encoding), with ratios to the read-only
baseline::

    python -m benchmarks.bench_jobs --elements=50000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import tempfile
import time

import apache_beam as beam

from pipelines import batch_scoring, models


def _read_only(path: str) -> float:
    start = time.perf_counter()
    with beam.Pipeline() as p:
        _ = (p | beam.io.ReadFromTFRecord(path) | beam.combiners.Count.Globally())
    return time.perf_counter() - start


def _score(path: str, model: str, work: str, fmt: str) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        batch_scoring.run([f"--input={path}", f"--model_path={model}", f"--work_dir={work}",
                           f"--output={work}/out-{fmt}", f"--output_format={fmt}",
                           "--max_batch_size=1024"])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=50_000)
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as work:
        path = models.write_examples(os.path.join(work, "in.tfrecord"),
                                     (float(i % 1000) for i in range(args.elements)))
        model = models.build_multiplier_model(os.path.join(work, "five"), models.FIVE)
        baseline = _read_only(path)
        print(f"{args.elements} elements, DirectRunner, y = 5x model")
        print(f"{'read and count only':32s} {args.elements / baseline:10.0f} elements/s  1.00x")
        for fmt in ("tfrecord", "jsonl", "parquet"):
            elapsed = _score(path, model, work, fmt)
            print(f"{'batch_scoring -> ' + fmt:32s} {args.elements / elapsed:10.0f} elements/s"
                  f"  {baseline / elapsed:.2f}x")


if __name__ == "__main__":
    main()
