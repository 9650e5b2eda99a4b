"""``SavedModelHandler``: Beam's ModelHandler for any TensorFlow SavedModel.

``load_model`` runs once per worker process (Beam keeps the result in a shared handle);
``run_inference`` is a plain function of a batch and a loaded model, testable without a
pipeline. Keys, dead letters and post-processing are wrappers around it, not flags.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference import base
from tfx_bsl.public.proto import model_spec_pb2

from beam_infer import _encoding, _prediction_log
from beam_infer._config import ModelSpec, as_model_spec
from beam_infer._loading import LoadedModel
from beam_infer._signatures import Operation, Signature, SignaturePlan, plan_signatures

METRICS_NAMESPACE = "beam_infer"

PredictionLog = _prediction_log.PredictionLog
# What call_model returns: each called signature with its outputs.
ModelResults = list[tuple[Signature, dict[str, np.ndarray]]]


class SavedModelHandler(base.ModelHandler[_encoding.ExampleLike, PredictionLog, LoadedModel]):
    """Loads a SavedModel once per worker and turns batches of examples into PredictionLogs.

    The model's signatures are read and checked when the handler is built, so a wrong
    path, tag or signature fails pipeline construction, not the first bundle. Works with
    ``beam_infer.RunInference`` and equally with Beam's own ``RunInference`` and
    ``KeyedModelHandler``.

    Args:
        spec: A ``beam_infer.ModelSpec`` or tfx-bsl's ``InferenceSpecType``.

    Raises:
        ConfigurationError: the model, its tags or its signatures do not fit; the message
            says what was found and how to fix it.

    Example:
        >>> handler = SavedModelHandler(ModelSpec(model_path="/models/five/1"))
        >>> logs = pcoll | apache_beam.ml.inference.RunInference(handler)
    """

    def __init__(self, spec: ModelSpec | model_spec_pb2.InferenceSpecType):
        self._spec = as_model_spec(spec)
        self._plan = plan_signatures(self._spec)
        super().__init__(
            large_model=self._spec.share_across_processes,
            model_copies=self._spec.model_copies,
        )

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    @property
    def plan(self) -> SignaturePlan:
        return self._plan

    def load_model(self) -> LoadedModel:
        return LoadedModel(
            self._spec.model_path,
            self._spec.effective_tags,
            [s.name for s in self._plan.signatures],
        )

    def run_inference(
        self,
        batch: Sequence[_encoding.ExampleLike],
        model: LoadedModel,
        inference_args: Mapping[str, Any] | None = None,
    ) -> Iterable[PredictionLog]:
        if not batch:
            return []
        self.report_model_size(model)
        encoded = self.encode(batch)
        return self.build_logs(encoded, self.call_model(encoded, model))

    # The three stages of run_inference, separate so that a wrapper (see _isolation) can
    # tell which one failed and retry or isolate just that one.

    def report_model_size(self, model: LoadedModel) -> None:
        size = model.take_size_report()
        if size is not None:
            Metrics.distribution(METRICS_NAMESPACE, "saved_model_byte_size").update(size)

    def encode(self, batch: Sequence[_encoding.ExampleLike]) -> list[bytes]:
        """The serialized elements (raises ``InputError`` for an element of another type)."""
        return _encoding.serialize_examples(
            batch,
            signature_name=self._plan.signatures[0].name,
            accepts_sequence_examples=self._plan.operation is Operation.PREDICT,
        )

    def call_model(self, encoded: Sequence[bytes], model: LoadedModel) -> ModelResults:
        """Each called signature with its outputs (numpy arrays with the batch first)."""
        plan = self._plan
        if plan.operation is Operation.MULTI_INFERENCE:
            return [(s, model.run(s.name, {s.inputs[0].alias: encoded}))
                    for s in plan.signatures]
        first = plan.signatures[0]
        return [(first, model.run(first.name, {plan.input_alias: encoded}))]

    def build_logs(self, encoded: Sequence[bytes], results: ModelResults
                   ) -> list[PredictionLog]:
        """One PredictionLog per element, from ``call_model``'s results."""
        plan = self._plan
        if plan.operation is Operation.MULTI_INFERENCE:
            return _prediction_log.multi_inference_logs(encoded, results)
        (signature, outputs), = results
        if plan.operation is Operation.PREDICT:
            return _prediction_log.predict_logs(
                encoded, outputs, input_alias=plan.input_alias, signature_name=signature.name)
        if plan.operation is Operation.CLASSIFY:
            return _prediction_log.classify_logs(encoded, outputs,
                                                 signature_name=signature.name)
        return _prediction_log.regress_logs(encoded, outputs, signature_name=signature.name)

    def get_num_bytes(self, batch: Sequence[_encoding.ExampleLike]) -> int:
        return _encoding.num_bytes(batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return self._spec.batching.batch_elements_kwargs()

    def update_model_path(self, model_path: str | None = None) -> None:
        """Points the handler at another model (Beam's model-refresh side input calls it)."""
        if model_path:
            self._spec = self._spec.replace(model_path=model_path)
            self._plan = plan_signatures(self._spec)

    def __repr__(self) -> str:
        names = ",".join(s.name for s in self._plan.signatures)
        return f"SavedModelHandler({self._spec.model_path}, {self._plan.operation.value}:{names})"
