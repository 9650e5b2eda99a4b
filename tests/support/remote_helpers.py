"""Shared by the remote backend tests: pipelines that score the same elements locally and
at an endpoint, and ways to compare what they wrote."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import numpy as np

import beam_infer as bi
from tests.support import model_zoo
from tests.support.beam_helpers import run_collect

TIMEOUT = 60.0
TOKEN = "s3cret-token-value-7f3a"
# Retries fast enough for tests: 4 attempts 0.05 s, 0.1 s, 0.2 s apart.
FAST_RETRY = bi.RetryConfig(max_attempts=4, initial_backoff_secs=0.05)


def examples(*values: float) -> list:
    return model_zoo.make_examples(values)


def base_path(tf_serving, model: str) -> str:
    """The local base path (numbered versions) the stand-in serves ``model`` from."""
    return os.path.dirname(tf_serving.paths[model][min(tf_serving.paths[model])])


def score(spec, elements: Sequence[Any], tmp: str, *, dead_letters: bool = False,
          on_batches: bool = False, retry: bi.RetryConfig = FAST_RETRY, **kwargs
          ) -> tuple[list, list]:
    """Scores ``elements`` with ``spec`` (ModelSpec or EndpointSpec) through DirectRunner.

    Returns:
        (outputs, dead letters).
    """
    def build(p):
        pcoll = p | beam.Create(list(elements), reshuffle=False)
        transform = bi.RunInference(spec, retry=retry, **kwargs)
        if on_batches:
            return {"out": pcoll | transform.on_batches()}
        if dead_letters:
            logs, failed = pcoll | transform.with_dead_letters()
            return {"out": logs, "failed": failed}
        return {"out": pcoll | transform}

    outputs, _ = run_collect(build, tmp)
    return outputs["out"], outputs.get("failed", [])


def canonical(outputs: list) -> list:
    """Outputs in a comparable, order-free form (serialized logs; lean results as lists)."""
    def one(value):
        if isinstance(value, tuple) and len(value) == 2 and not hasattr(value, "inference"):
            return ("keyed", repr(value[0]), one(value[1]))
        if isinstance(value, list):
            return ("list", tuple(one(v) for v in value))
        if hasattr(value, "SerializeToString"):
            return ("log", value.SerializeToString(deterministic=True))
        if hasattr(value, "inference"):
            example = value.example
            example = example.SerializeToString() if hasattr(example, "SerializeToString") \
                else repr(example)
            inference = {k: (np.asarray(v).dtype.str, np.asarray(v).tolist())
                         for k, v in sorted(value.inference.items())}
            return ("result", example, repr(inference))
        return ("other", repr(value))
    return sorted((one(v) for v in outputs), key=repr)
