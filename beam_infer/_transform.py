"""``beam_infer.RunInference``: the PTransform users apply."""

from __future__ import annotations

from typing import Any, TypeVar

import apache_beam as beam
from apache_beam.ml.inference import base
from apache_beam.typehints import typehints
from tfx_bsl.public.proto import model_spec_pb2

from beam_infer._config import ModelSpec
from beam_infer._encoding import ExampleLike
from beam_infer._handler import SavedModelHandler
from beam_infer._prediction_log import PredictionLog

K = TypeVar("K")


@beam.typehints.with_input_types(ExampleLike | tuple[K, ExampleLike])
class RunInference(beam.PTransform):
    """Scores examples with a SavedModel; a drop-in for tfx-bsl's ``RunInference``.

    ==============================================  ===================================
    input element                                   output element
    ==============================================  ===================================
    ``tf.train.Example`` / ``SequenceExample``       ``PredictionLog``
    ``bytes`` (a serialized example)                 ``PredictionLog``
    ``(key, any of the above)``                      ``(key, PredictionLog)``
    ==============================================  ===================================

    The model is loaded once per worker process (or once per machine with
    ``ModelSpec(share_across_processes=True)``); elements are batched by Beam's
    ``BatchElements`` as ``ModelSpec.batching`` says. The PredictionLog layout is TF
    Serving's, the same tfx-bsl writes: predict, classify, regress or multi-inference,
    chosen from the signatures' ``method_name``.

    Args:
        spec: A ``beam_infer.ModelSpec`` or tfx-bsl's ``InferenceSpecType``.

    Raises:
        ConfigurationError: at construction, if the model path, tags or signatures do
            not fit (see ``SavedModelHandler``).

    Example:
        >>> import beam_infer as bi
        >>> logs = examples | bi.RunInference(bi.ModelSpec(model_path="/models/five/1"))
        >>> keyed_logs = keyed_examples | bi.RunInference(spec)  # (key, PredictionLog)
    """

    def __init__(self, spec: ModelSpec | model_spec_pb2.InferenceSpecType):
        super().__init__()
        self._handler = SavedModelHandler(spec)

    @property
    def handler(self) -> SavedModelHandler:
        return self._handler

    def infer_output_type(self, input_type: Any) -> Any:
        key_type = _key_type(input_type)
        return PredictionLog if key_type is None else typehints.Tuple[key_type, PredictionLog]

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        key_type = _key_type(pcoll.element_type)
        if key_type is not None:
            handler = base.KeyedModelHandler(self._handler)
        elif _may_be_keyed(pcoll.element_type):
            handler = base.MaybeKeyedModelHandler(self._handler)
        else:
            handler = self._handler
        output_type = self.infer_output_type(pcoll.element_type)
        return pcoll | "Infer" >> base.RunInference(handler).with_output_types(output_type)


def _key_type(element_type: Any) -> Any:
    """The key type when ``element_type`` is declared as a (key, value) pair."""
    tuple_types = getattr(element_type, "tuple_types", None)
    if tuple_types is not None and len(tuple_types) == 2:
        return tuple_types[0]
    return None


def _may_be_keyed(element_type: Any) -> bool:
    """Undeclared or union types: decide per batch whether elements are pairs."""
    known = (ExampleLike.__args__)  # type: ignore[attr-defined]
    return not (isinstance(element_type, type) and issubclass(element_type, known))
