"""The two output formats, chosen once when the handler is built.

``PredictionLogs`` writes TF Serving's ``PredictionLog`` per element (predict, classify,
regress or multi-inference, the layout tfx-bsl writes); ``LeanResults`` gives Beam's
``PredictionResult(element, {alias: numpy row})`` per element, or one result per
pre-batched input. Everything that depends on the format (outputs per element and per
batch, the output type hints, whether keyed example lists nest) is a method here, so no
other module asks which format it is.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from apache_beam.ml.inference import base
from apache_beam.typehints import typehints

from beam_infer import _coders, _prediction_log
from beam_infer._config import Output
from beam_infer._signatures import Operation, SignaturePlan
from beam_infer._stages import EncodedBatch, ModelResults

PredictionLog = _prediction_log.PredictionLog
PredictionResult = base.PredictionResult


class PredictionLogs:
    """One ``PredictionLog`` per element; logs of a versioned model record its name and
    version in ``model_spec``."""

    output = Output.PREDICTION_LOG
    element_type = PredictionLog
    batch_type = typehints.List[PredictionLog]
    nests_keyed_batches = True  # (key, [examples]) -> (key, [logs])

    def per_element(self, plan: SignaturePlan, values: Sequence[Any], encoded: EncodedBatch,
                    results: ModelResults) -> list[PredictionLog]:
        signature, outputs = results.outputs[0]
        version = results.version
        model = None if version is None or version.version is None \
            else (version.name, version.version)
        if results.rows is not None:
            return _prediction_log.tensor_predict_logs(
                results.rows, outputs, len(values), signature_name=signature.name, model=model)
        examples = encoded.examples()
        if plan.operation is Operation.PREDICT:
            return _prediction_log.predict_logs(
                examples, outputs, input_alias=plan.input_alias, signature_name=signature.name,
                model=model)
        if plan.operation is Operation.MULTI_INFERENCE:
            logs = _prediction_log.multi_inference_logs(examples, results.outputs)
        elif plan.operation is Operation.CLASSIFY:
            logs = _prediction_log.classify_logs(examples, outputs, signature_name=signature.name)
        else:
            logs = _prediction_log.regress_logs(examples, outputs, signature_name=signature.name)
        if model is not None:
            _prediction_log.stamp_model_spec(logs, *model, signature.name)
        return logs

    def per_batch(self, plan: SignaturePlan, value: Any, encoded: EncodedBatch,
                  results: ModelResults) -> list[PredictionLog]:
        """A pre-batched input's logs, in order: the same logs as element by element."""
        return self.per_element(plan, range(len(encoded)), encoded, results)

    def empty_batch(self, value: Any) -> list[PredictionLog]:
        return []


class BatchResult(PredictionResult):
    """A pre-batched input's lean result: Beam's ``PredictionResult`` of the whole batch.

    A ``PredictionResult`` in every way (fields, equality, ``isinstance``); its own type
    only so Beam estimates its size from the arrays it holds (``_coders``) instead of
    pickling the batch for each sampled element.
    """

    __slots__ = ()


_coders.register(BatchResult, _coders.SizedPickleCoder)


class LeanResults:
    """Beam's ``PredictionResult``: the element and its outputs by alias (numpy rows)."""

    output = Output.RESULT
    element_type = PredictionResult
    batch_type = BatchResult
    nests_keyed_batches = False

    def per_element(self, plan: SignaturePlan, values: Sequence[Any], encoded: EncodedBatch,
                    results: ModelResults) -> list[PredictionResult]:
        outputs = results.lean_outputs()
        _prediction_log.check_batch_outputs(outputs, len(values), plan.signatures[0].name)
        aliases = list(outputs)
        if len(aliases) == 1:
            (alias,) = aliases
            inferences = [{alias: row} for row in outputs[alias]]
        else:
            inferences = [dict(zip(aliases, rows, strict=True))
                          for rows in zip(*(outputs[a] for a in aliases), strict=True)]
        return _results(values, inferences)

    def per_batch(self, plan: SignaturePlan, value: Any, encoded: EncodedBatch,
                  results: ModelResults) -> PredictionResult:
        """One result for the whole batch: the batch as it came, the batched outputs."""
        outputs = results.lean_outputs()
        _prediction_log.check_batch_outputs(outputs, len(encoded), plan.signatures[0].name)
        return BatchResult(value, outputs)

    def empty_batch(self, value: Any) -> PredictionResult:
        return BatchResult(value, {})


OutputFormat = PredictionLogs | LeanResults


def output_format(output: Output) -> OutputFormat:
    return PredictionLogs() if output is Output.PREDICTION_LOG else LeanResults()


def _results(examples: Sequence[Any], inferences: list[dict[str, np.ndarray]]
             ) -> list[PredictionResult]:
    """``PredictionResult(example, inference)`` for each pair, built with no Python frame
    per element (NamedTuple's generated ``__new__`` is one): the same tuples, ~2x faster."""
    if len(examples) != len(inferences):
        raise ValueError(f"{len(examples)} elements but {len(inferences)} outputs")
    if PredictionResult._fields != ("example", "inference", "model_id"):  # another Beam
        return list(map(PredictionResult, examples, inferences))
    return list(map(tuple.__new__, itertools.repeat(PredictionResult),
                    zip(examples, inferences, itertools.repeat(None))))
