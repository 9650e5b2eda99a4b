"""The rest of tfx-bsl's public API (``tfx_bsl.public.beam``), with its names and signatures.

A tfx-bsl user changes only the import::

    from tfx_bsl.public.beam import RunInferencePerModel      # before
    from beam_infer import RunInferencePerModel               # after

=======================================  ===========================================
tfx-bsl                                  beam_infer
=======================================  ===========================================
``RunInference(spec, load_override_fn)``  ``RunInference`` (``_transform``)
``RunInferencePerModel(specs, fn)``       one ``RunInference`` per spec, chained: each
                                          element gets a tuple of logs, one per spec
``RunInferenceOnKeyedBatches(spec, fn)``  ``(K, List[X])`` → ``(K, List[PredictionLog])``,
                                          one model call per list (``on_batches()``)
``RunInferencePerModelOnKeyedBatches``    the two combined: ``(K, (List[log], ...))``
``CreateModelHandler(spec)``              a ``SavedModelHandler`` for Beam's own
                                          ``RunInference``
=======================================  ===========================================

Specs are tfx-bsl's ``InferenceSpecType`` (or beam_infer's ``ModelSpec``) with a
``saved_model_spec``; a remote-service spec (``ai_platform_prediction_model_spec``) is
refused with ``ConfigurationError`` naming tfx-bsl, which calls that service.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.typehints import typehints
from tfx_bsl.public.proto import model_spec_pb2

from beam_infer._config import ModelSpec
from beam_infer._encoding import ExampleLike
from beam_infer._errors import ConfigurationError
from beam_infer._handler import SavedModelHandler
from beam_infer._keyed_batches import is_list_type
from beam_infer._keys import Keys
from beam_infer._prediction_log import PredictionLog
from beam_infer._transform import RunInference
from beam_infer.saved_model._override import LoadOverrideFn

Spec = ModelSpec | model_spec_pb2.InferenceSpecType


def CreateModelHandler(inference_spec_type: Spec) -> SavedModelHandler:
    """A Beam ``ModelHandler`` for the spec, as tfx-bsl's ``CreateModelHandler``.

    Hand it to Beam's ``RunInference`` (``KeyedModelHandler`` for keyed input). Its
    ``batch_elements_kwargs()`` are the spec's ``batch_parameters``, as set.

    Args:
        inference_spec_type: tfx-bsl's ``InferenceSpecType`` with a ``saved_model_spec``
            (or a ``beam_infer.ModelSpec``).

    Returns:
        A ``beam_infer.SavedModelHandler`` emitting ``PredictionLog``s.

    Raises:
        ConfigurationError: the spec is a remote-service spec, or its model does not fit.

    Example:
        >>> from apache_beam.ml.inference import base
        >>> logs = examples | base.RunInference(bi.CreateModelHandler(spec))
    """
    return SavedModelHandler(inference_spec_type)


class RunInferencePerModel(beam.PTransform):
    """Scores each element with several models: a tuple of logs, one per spec, in order.

    tfx-bsl's vectorised ``RunInference`` (for ensembles). The models run one after the
    other in fused steps labelled ``Model[i]``; no data is materialised between them.

    ================================  ==========================================
    input element                     output element
    ================================  ==========================================
    ``Example``, ``SequenceExample``   ``Tuple[PredictionLog, ...]``
    or ``bytes``
    ``(key, any of the above)``        ``(key, Tuple[PredictionLog, ...])``
    ``(key, List[...])``               ``(key, Tuple[List[PredictionLog], ...])``
    ================================  ==========================================

    Args:
        inference_spec_types: The specs (``InferenceSpecType`` or ``ModelSpec``).
        load_override_fn: As in ``RunInference``; used for every model.

    Raises:
        ConfigurationError: no specs, or a spec does not fit (see ``RunInference``).

    Example:
        >>> pairs = examples | bi.RunInferencePerModel([spec_five, spec_ten])
    """

    def __init__(self, inference_spec_types: Iterable[Spec],
                 load_override_fn: LoadOverrideFn | None = None):
        super().__init__()
        self._steps = _steps(inference_spec_types, load_override_fn, batched=False,
                             api="RunInferencePerModel")

    def infer_output_type(self, input_type: Any) -> Any:
        return _per_model_type(input_type, len(self._steps))

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return _chain(pcoll, self._steps, self.infer_output_type(pcoll.element_type))


class RunInferenceOnKeyedBatches(beam.PTransform):
    """Scores pre-batched keyed input: ``(key, [x, ...])`` → ``(key, [log, ...])``.

    tfx-bsl's ``RunInferenceOnKeyedBatches``: one model call per list, the logs in the
    list's order. The same as ``RunInference(spec).on_batches()`` for keyed lists.

    Args:
        inference_spec_type: An ``InferenceSpecType`` or ``ModelSpec``.
        load_override_fn: As in ``RunInference``.

    Example:
        >>> keyed_logs = keyed_lists | bi.RunInferenceOnKeyedBatches(spec)
    """

    def __init__(self, inference_spec_type: Spec,
                 load_override_fn: LoadOverrideFn | None = None):
        super().__init__()
        self._inner = RunInference(inference_spec_type, load_override_fn).on_batches()

    def infer_output_type(self, input_type: Any) -> Any:
        return _batched_type(input_type)

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | "RunInferenceOnKeyedBatchesImpl" >> self._inner


class RunInferencePerModelOnKeyedBatches(beam.PTransform):
    """``RunInferencePerModel`` on keyed lists: ``(key, ([log, ...], [log, ...], ...))``.

    Each list is one model call per model; the tuple holds one list of logs per spec,
    each in the list's order.

    Args:
        inference_spec_types: The specs (``InferenceSpecType`` or ``ModelSpec``).
        load_override_fn: As in ``RunInference``; used for every model.

    Example:
        >>> keyed = keyed_lists | bi.RunInferencePerModelOnKeyedBatches([five, ten])
    """

    def __init__(self, inference_spec_types: Iterable[Spec],
                 load_override_fn: LoadOverrideFn | None = None):
        super().__init__()
        self._steps = _steps(inference_spec_types, load_override_fn, batched=True,
                             api="RunInferencePerModelOnKeyedBatches")

    def infer_output_type(self, input_type: Any) -> Any:
        key_type = _key_type(input_type)
        logs = typehints.Tuple[(typehints.List[PredictionLog],) * len(self._steps)]
        return typehints.Tuple[key_type or Any, logs]

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return _chain(pcoll, self._steps, self.infer_output_type(pcoll.element_type))


def _steps(specs: Iterable[Spec], load_override_fn: LoadOverrideFn | None, *,
           batched: bool, api: str) -> list[beam.PTransform]:
    if isinstance(specs, ModelSpec | model_spec_pb2.InferenceSpecType):
        raise ConfigurationError(
            f"{api} takes an iterable of specs, one per model; got one "
            f"{type(specs).__name__}. Pass [spec], or use RunInference for one model.")
    steps = []
    for spec in specs:
        step = RunInference(spec, load_override_fn)
        steps.append(step.on_batches() if batched else step)
    if not steps:
        raise ConfigurationError(
            f"{api} needs at least one inference spec; got none. Pass a list of "
            "InferenceSpecType (or beam_infer.ModelSpec), one per model.")
    return steps


def _chain(pcoll: beam.PCollection, steps: list[beam.PTransform], output_type: Any
           ) -> beam.PCollection:
    """Runs the steps one after the other, carrying ``(element, log, log, ...)`` as key.

    Each step sees ``(carried, value)`` pairs, so the element and the logs so far ride
    through it as the key, untouched.
    """
    # As tfx-bsl: declared pairs are keyed, and so is any 2-tuple of undeclared input.
    keys = Keys.ALL if _key_type(pcoll.element_type) is not None else Keys.PER_ELEMENT
    carried = pcoll | "PairWithInput" >> beam.Map(lambda e: ((e,), e)).with_output_types(
        typehints.Tuple[Any, Any])
    for index, step in enumerate(steps):
        carried = (carried
                   | f"Model[{index}]" >> _Iteration(step, keys))
    return carried | "ExtractResults" >> beam.Map(
        _extract, keys).with_output_types(output_type)


class _Iteration(beam.PTransform):
    """One model of the chain: scores the value, appends its log to the carried tuple."""

    def __init__(self, step: beam.PTransform, keys: Keys):
        super().__init__()
        self._step = step
        self._keys = keys

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        keys = self._keys
        return (pcoll
                | "SelectValue" >> beam.MapTuple(
                    lambda carried, _: (carried, keys.split(carried[0])[2]))
                .with_output_types(typehints.Tuple[Any, Any])
                | "RunInference" >> self._step
                | "ExtendResults" >> beam.MapTuple(
                    lambda carried, log: ((*carried, log), None))
                .with_output_types(typehints.Tuple[Any, Any]))


def _extract(carried_and_none: tuple[tuple[Any, ...], None], keys: Keys) -> Any:
    (element, *logs), _ = carried_and_none
    _, key, value = keys.split(element)  # a pair gives its value, anything else itself
    return (key, tuple(logs)) if value is not element else tuple(logs)


def _key_type(input_type: Any) -> Any:
    tuple_types = getattr(input_type, "tuple_types", None)
    return tuple_types[0] if tuple_types is not None and len(tuple_types) == 2 else None


def _result_type(input_type: Any) -> Any:
    """A list of logs for a declared list, a log for a declared example, else Any."""
    tuple_types = getattr(input_type, "tuple_types", None)
    value_type = tuple_types[1] if tuple_types is not None and len(tuple_types) == 2 \
        else input_type
    if is_list_type(value_type):
        return typehints.List[PredictionLog]
    if isinstance(value_type, type) and issubclass(value_type, ExampleLike):
        return PredictionLog
    return Any


def _per_model_type(input_type: Any, count: int) -> Any:
    if input_type in (None, Any, typehints.Any):
        return Any
    logs = typehints.Tuple[(_result_type(input_type),) * count]
    key_type = _key_type(input_type)
    return typehints.Tuple[key_type, logs] if key_type is not None else logs


def _batched_type(input_type: Any) -> Any:
    key_type = _key_type(input_type)
    return typehints.Tuple[key_type or Any, typehints.List[PredictionLog]]
