"""What beam_infer's handler adds per element, stage by stage, outside any pipeline.

Pipelines on a 2-core machine move by ±15% between runs, which hides a cut of a few
hundred nanoseconds per element; this measures the handler Beam's RunInference runs for
``bi.RunInference(spec)`` on keyed ``y = 5x`` serialized Examples (the isolating wrapper
around ``SavedModelHandler``, as ``RunInference.expand`` builds it) on the same keyed
batch, in one process, against two baselines:

* **the signature called directly** on the batch's examples (a string tensor made from
  them, outputs to numpy): the model's own share, which any handler pays;
* **Beam's engine only**: ``KeyedModelHandler`` around a handler that scores nothing
  (one ``PredictionResult(example, None)`` per element), what Beam's own keyed handler
  costs around a model.

Each row is ``run_inference(batch)`` then ``get_num_bytes(batch)``, as Beam's
RunInference DoFn calls them, in µs per element: the least of ``--rounds`` rounds of
``--calls`` calls each (interleaved, so a slow moment of the machine hits every row).
The stage rows time the same handler's parts on their own: splitting keys, encoding,
the model call through beam_infer's servable, building the outputs. Declared keys
(``Tuple[bytes, bytes]``) and undeclared ones (``Any``: pairs found element by element,
and keyed example lists looked for) are both measured.

Usage:
    python -m benchmarks.handler            # the README figures (about a minute)
    python -m benchmarks.handler --smoke    # tiny sizes (CI)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from apache_beam.ml.inference import base
from apache_beam.typehints import typehints

import beam_infer as bi
from beam_infer import _transform
from beam_infer._keys import KeyedBatch, Keys
from pipelines import models
from tests.support import model_zoo


class _ScoresNothing(base.ModelHandler):
    """Beam's engine alone: no model, one empty result per element."""

    def load_model(self) -> None:
        return None

    def run_inference(self, batch, model, inference_args=None):
        return [base.PredictionResult(example, None) for example in batch]


def _timed(rows: dict[str, Callable[[], Any]], rounds: int, calls: int,
           elements: int) -> dict[str, float]:
    """µs per element of each row: the least over ``rounds`` of ``calls`` calls."""
    best = dict.fromkeys(rows, float("inf"))
    for row in rows.values():
        row()  # warm: first calls trace, allocate and cache
    for _ in range(rounds):
        for name, row in rows.items():
            start = time.perf_counter()
            for _ in range(calls):
                row()
            best[name] = min(best[name], (time.perf_counter() - start) / calls)
    return {name: seconds / elements * 1e6 for name, seconds in best.items()}


def _scored(path: str, batch: Sequence[tuple[bytes, bytes]], element_type: Any,
            output: bi.Output) -> Callable[[], None]:
    """The handler ``bi.RunInference`` runs for ``element_type``, as Beam calls it."""
    transform = bi.RunInference(bi.ModelSpec(model_path=path), output=output)
    handler = _transform._per_element(transform.handler, transform._retry,
                                      transform._validator, element_type,
                                      dead_letters=False)
    model = handler.load_model()

    def scored() -> None:
        handler.run_inference(batch, model)
        handler.get_num_bytes(batch)

    return scored


def measure(root: str, batch_size: int, rounds: int, calls: int) -> dict[str, float]:
    """Every row's µs per element; the keys are the rows' labels."""
    path = models.build_multiplier_model(os.path.join(root, "five"), 5.0)
    examples = [e.SerializeToString()
                for e in model_zoo.make_examples([float(i % 997) for i in range(batch_size)])]
    batch = [(f"key-{i}".encode(), example) for i, example in enumerate(examples)]
    signature = tf.saved_model.load(path).signatures["serving_default"]
    alias = next(iter(signature.structured_input_signature[1]))

    def direct() -> None:
        outputs = signature(**{alias: tf.constant(np.array(examples, dtype=object))})
        {name: tensor.numpy() for name, tensor in outputs.items()}

    engine = base.KeyedModelHandler(_ScoresNothing())

    def engine_only() -> None:
        engine.run_inference(batch, None)
        engine.get_num_bytes(batch)

    rows: dict[str, Callable[[], Any]] = {
        "the signature called directly (baseline)": direct,
        "Beam's engine only: KeyedModelHandler, a handler that scores nothing": engine_only,
    }
    declared = typehints.Tuple[bytes, bytes]
    for label, element_type in (("declared keys", declared), ("undeclared keys", Any)):
        for output in (bi.Output.PREDICTION_LOG, bi.Output.RESULT):
            kind = "PredictionLog" if output is bi.Output.PREDICTION_LOG else "lean"
            rows[f"beam_infer {kind}, {label}: run_inference + get_num_bytes"] = \
                _scored(path, batch, element_type, output)

    # The stages of the declared PredictionLog handler, each on its own.
    transform = bi.RunInference(bi.ModelSpec(model_path=path))
    inner = transform.handler
    model = inner.load_model()
    encoded = inner.encoded(inner.encode(examples))
    results = inner.call_model(encoded, model)
    rows.update({
        "stage: split keys (KeyedBatch.split)":
            lambda: KeyedBatch.split(batch, Keys.ALL),
        "stage: encode": lambda: inner.encoded(inner.encode(examples)),
        "stage: model call (servable)": lambda: inner.call_model(encoded, model),
        "stage: build PredictionLogs": lambda: inner.build_outputs(examples, encoded, results),
        "stage: get_num_bytes of the values": lambda: inner.get_num_bytes(examples),
    })
    return _timed(rows, rounds, calls, batch_size)


def report(figures: dict[str, float], batch_size: int) -> str:
    direct = figures["the signature called directly (baseline)"]
    lines = [f"batch of {batch_size} keyed y = 5x serialized Examples; µs per element "
             "(least of the rounds); ratio to the signature called directly",
             "", "| measured | µs per element | vs the signature called directly |",
             "| --- | ---: | ---: |"]
    lines += [f"| {name} | {us:.3f} | {us / direct:.2f}x |" for name, us in figures.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=100, help="calls per row per round")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch_size, args.rounds, args.calls = 16, 1, 2
    with tempfile.TemporaryDirectory(prefix="beam_infer_handler_bench_") as root:
        text = report(measure(root, args.batch_size, args.rounds, args.calls),
                      args.batch_size)
    print(text)
    return text


if __name__ == "__main__":
    main()
