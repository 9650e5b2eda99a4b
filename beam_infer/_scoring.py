"""Scoring one batch with one loaded version: feed, call, and shape the answers.

Split in two so the model can live behind Beam's cross-process proxy: ``prepare`` runs in
the SDK process (it turns elements into a picklable feed), ``score`` runs where the model
is (it calls the signatures and builds PredictionLogs, or returns raw outputs for the
lean ``PredictionResult`` output, which ``results`` pairs with the elements again).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import PredictionResult

from beam_infer import _encoding, _prediction_log, _tensors
from beam_infer._loading import LoadedModel
from beam_infer._signatures import Feed, Operation, SignaturePlan


@dataclasses.dataclass(frozen=True)
class ExamplesFeed:
    """A batch of serialized examples for a signature with one string input."""

    serialized: list[bytes]


@dataclasses.dataclass(frozen=True)
class TensorsFeed:
    """A batch of named tensors, stacked (``feeds``) and per element (``rows``)."""

    tensors: _tensors.TensorBatch
    size: int


def feeds_tensors(plan: SignaturePlan, batch: Sequence[Any]) -> bool:
    """Whether ``batch`` is fed as tensors rather than serialized examples."""
    if plan.feed is Feed.TENSORS:
        return True
    # A one-string-input predict signature takes raw strings too; examples stay the
    # default for Example protos and bytes.
    return plan.operation is Operation.PREDICT and _tensors.is_tensor_element(batch[0])


def prepare(plan: SignaturePlan, batch: Sequence[Any], *, pad: bool
            ) -> ExamplesFeed | TensorsFeed:
    """Encodes elements for the plan's signature (raises ``InputError`` on a bad one)."""
    first = plan.signatures[0]
    if feeds_tensors(plan, batch):
        return TensorsFeed(_tensors.batch_tensors(batch, first, pad=pad), len(batch))
    return ExamplesFeed(_encoding.serialize_examples(
        batch, signature_name=first.name,
        accepts_sequence_examples=plan.operation is Operation.PREDICT))


def score(model: LoadedModel, plan: SignaturePlan, feed: ExamplesFeed | TensorsFeed, *,
          lean: bool) -> list[_prediction_log.PredictionLog] | dict[str, np.ndarray]:
    """PredictionLogs for the batch, or (``lean``) the raw outputs by alias."""
    first = plan.signatures[0]
    if isinstance(feed, TensorsFeed):
        outputs = model.run(first.name, feed.tensors.feeds)
        if lean:
            return outputs
        return _prediction_log.tensor_predict_logs(
            feed.tensors.rows, outputs, feed.size, signature_name=first.name)
    serialized = feed.serialized
    # One object array: TF converts it to a string tensor without a Python loop.
    strings = np.array(serialized, dtype=object)
    if plan.operation is Operation.MULTI_INFERENCE:
        results = [(s, model.run(s.name, {s.inputs[0].alias: strings}))
                   for s in plan.signatures]
        if lean:
            return {f"{s.name}/{alias}": value for s, outputs in results
                    for alias, value in outputs.items()}
        return _prediction_log.multi_inference_logs(serialized, results)
    outputs = model.run(first.name, {plan.input_alias: strings})
    if lean:
        return outputs
    if plan.operation is Operation.PREDICT:
        return _prediction_log.predict_logs(
            serialized, outputs, input_alias=plan.input_alias, signature_name=first.name)
    if plan.operation is Operation.CLASSIFY:
        return _prediction_log.classify_logs(serialized, outputs, signature_name=first.name)
    return _prediction_log.regress_logs(serialized, outputs, signature_name=first.name)


def results(batch: Sequence[Any], outputs: Mapping[str, np.ndarray], signature_name: str
            ) -> list[PredictionResult]:
    """One ``PredictionResult(element, {alias: row})`` per element; rows are numpy views."""
    _prediction_log.check_batch_outputs(outputs, len(batch), signature_name)
    aliases = list(outputs)
    if len(aliases) == 1:
        (alias,) = aliases
        return [PredictionResult(e, {alias: row})
                for e, row in zip(batch, outputs[alias], strict=True)]
    columns = [outputs[a] for a in aliases]
    return [PredictionResult(e, dict(zip(aliases, rows, strict=True)))
            for e, *rows in zip(batch, *columns, strict=True)]
