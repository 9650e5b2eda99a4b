"""What dead letters cost: the isolating handler and validation on clean and dirty batches.

Prints, in one process, elements/s and ratios to a baseline measured in the same run:

* handler level (no pipeline, batches of ``--batch_size`` serialized Examples, ``y = 5x``
  model): ``SavedModelHandler.run_inference`` (baseline), the isolating handler on clean
  batches, and on batches holding one element the model refuses (the poison model), with
  the model calls each bad element cost; ``Validator.check`` per element;
* pipeline level (DirectRunner, one worker): ``RunInference`` against
  ``RunInference(...).with_dead_letters()`` on clean input and on input with 1% bad
  serialized elements (garbage, truncated, missing and wrong-kind features).

Usage:
    python -m benchmarks.dead_letters            # the README figures (about a minute)
    python -m benchmarks.dead_letters --smoke    # tiny sizes
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import apache_beam as beam
import tensorflow as tf

import beam_infer as bi
from beam_infer._isolation import IsolatingHandler
from beam_infer._keys import Keys
from beam_infer._retries import ModelCaller
from pipelines import models
from tests.support import model_zoo


def _isolating(path: str) -> IsolatingHandler:
    inner = bi.SavedModelHandler(bi.ModelSpec(model_path=path))
    return IsolatingHandler(inner, keys=Keys.NONE, caller=ModelCaller(inner, bi.RetryConfig()),
                            validator=inner.validator(), dead_letters=True)


def handler_figures(root: str, n: int, batch_size: int, rounds: int) -> None:
    five = models.build_multiplier_model(os.path.join(root, "five"), 5.0)
    poison = model_zoo.poison_examples(os.path.join(root, "poison"))
    values = [float(i % 997) for i in range(n)]
    clean = [e.SerializeToString() for e in model_zoo.make_examples(values)]
    batches = [clean[i:i + batch_size] for i in range(0, n, batch_size)]
    bad = model_zoo.make_examples([5000.0])[0].SerializeToString()
    dirty = [[*b[:len(b) // 3], bad, *b[len(b) // 3 + 1:]] for b in batches]

    plain = bi.SavedModelHandler(bi.ModelSpec(model_path=five))
    plain_model = plain.load_model()
    isolating = _isolating(five)
    poison_handler = _isolating(poison)
    poison_model = poison_handler.load_model()

    protos = model_zoo.make_examples(values)
    variants = {
        "plain": lambda: [list(plain.run_inference(b, plain_model)) for b in batches],
        "clean": lambda: [isolating.run_inference(b, plain_model) for b in batches],
        "bytes": lambda: [isolating.explain(e) for e in clean],
        "protos": lambda: [isolating.explain(e) for e in protos],
    }
    list(plain.run_inference(batches[0], plain_model))  # warm up: the first call traces
    best = dict.fromkeys(variants, math.inf)
    for _ in range(rounds):  # interleaved, best of each: other load on the machine evens out
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    base, wrapped, check_bytes, check_protos = (n / best[k] for k in variants)
    calls_before = int(poison_model.current_model()._root.calls.numpy())
    start = time.perf_counter()
    for b in dirty:
        poison_handler.run_inference(b, poison_model)
    dirty_rate = n / (time.perf_counter() - start)
    calls = int(poison_model.current_model()._root.calls.numpy()) - calls_before

    print(f"handler level: {n} serialized Examples, batches of {batch_size}, best of "
          f"{rounds} interleaved runs")
    print(f"  SavedModelHandler.run_inference        {base:>10,.0f} el/s   1.00")
    print(f"  IsolatingHandler, clean batches        {wrapped:>10,.0f} el/s   "
          f"{wrapped / base:.2f}")
    print(f"  IsolatingHandler, 1 bad per batch      {dirty_rate:>10,.0f} el/s   "
          f"{dirty_rate / base:.2f}")
    extra = calls / len(dirty) - 1
    print(f"    model calls per batch {calls / len(dirty):.1f} = 1 + {extra:.1f} extra for "
          f"its bad element (log2({batch_size}) = {math.log2(batch_size):.1f})")
    print(f"  Validator.check, bytes                 {check_bytes:>10,.0f} el/s")
    print(f"  Validator.check, tf.train.Example      {check_protos:>10,.0f} el/s")


def _pipeline_run(elements: list, transform: beam.PTransform, dead: bool) -> float:
    """Seconds to run one pipeline scoring ``elements``."""
    start = time.perf_counter()
    with beam.Pipeline() as p:
        out = p | beam.Create(elements, reshuffle=False) | transform
        if dead:
            out = out | beam.Flatten()
        _ = out | beam.combiners.Count.Globally()
    return time.perf_counter() - start


def pipeline_figures(root: str, n: int, batch_size: int, rounds: int) -> None:
    five = os.path.join(root, "five")
    spec = bi.ModelSpec(model_path=five, batching=bi.BatchConfig(
        min_batch_size=batch_size, max_batch_size=batch_size))
    clean = [e.SerializeToString() for e in model_zoo.make_examples(range(n))]
    # Bytes only, so both inputs use the same coder.
    wrong_kind = tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))}))
    bad = [b"\xff\xff", model_zoo.make_examples([1.0])[0].SerializeToString()[:-2],
           tf.train.Example().SerializeToString(), wrong_kind.SerializeToString()]
    dirty = [bad[i % len(bad)] if i % 100 == 50 else e for i, e in enumerate(clean)]
    variants = {
        "RunInference": (clean, lambda: bi.RunInference(spec), False),
        ".with_dead_letters(), clean input": (
            clean, lambda: bi.RunInference(spec).with_dead_letters(), True),
        ".with_dead_letters(), 1% bad input": (
            dirty, lambda: bi.RunInference(spec).with_dead_letters(), True),
    }
    best = dict.fromkeys(variants, math.inf)
    for _ in range(rounds):  # interleaved, best of each: other load on the machine evens out
        for name, (elements, make, dead) in variants.items():
            best[name] = min(best[name], _pipeline_run(elements, make(), dead))
    print(f"pipeline level (DirectRunner, 1 worker): {n} serialized Examples, "
          f"batches of {batch_size}, best of {rounds} interleaved runs")
    base = n / best["RunInference"]
    for name, seconds in best.items():
        rate = n / seconds
        print(f"  {name:<38} {rate:>10,.0f} el/s   {rate / base:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    parser.add_argument("--batch_size", type=int, default=256)
    args = parser.parse_args(argv)
    n_handler, n_pipeline = (2_048, 2_000) if args.smoke else (65_536, 20_000)
    with tempfile.TemporaryDirectory() as root:
        handler_figures(root, n_handler, args.batch_size, rounds=1 if args.smoke else 4)
        pipeline_figures(root, n_pipeline, args.batch_size, rounds=1 if args.smoke else 4)


if __name__ == "__main__":
    main()
