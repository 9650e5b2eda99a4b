"""The handler: Beam's ModelHandler over any backend, in three stages.

``InferenceHandler`` scores a batch in three stages, each a plain function of its
inputs: ``encode`` (elements to what the model is fed), ``call_model`` (one call of the
backend's servable, see ``_backend``) and ``build_outputs`` (one PredictionLog or lean
result per element, see ``_outputs``). ``load_model`` runs once per worker process (Beam
keeps the servable in a shared handle). Keys, retries, isolation, dead letters and keyed
example lists are wrappers around the handler (``_isolation``, ``_retries``,
``_keyed_batches``, ``_batches``), not flags of it.

``SavedModelHandler`` is the handler of a SavedModel (``beam_infer.saved_model``),
``EndpointHandler`` of a model behind a serving endpoint (``beam_infer.remote``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from apache_beam.ml.inference import base
from tfx_bsl.public.proto import model_spec_pb2

from beam_infer import _encoding, _metrics, _prediction_log, _tensors
from beam_infer._backend import Backend, ModelVersion, Servable
from beam_infer._config import ModelSpec, Output, as_model_spec
from beam_infer._errors import ConfigurationError
from beam_infer._keywords import checked_keywords
from beam_infer._outputs import OutputFormat, output_format
from beam_infer._signatures import Feed, Operation, Signature, SignaturePlan
from beam_infer._stages import EncodedBatch, ModelResults
from beam_infer._validation import Validator
from beam_infer.saved_model import SavedModelBackend
from beam_infer.saved_model._override import LoadOverrideFn

if TYPE_CHECKING:  # imported when an EndpointHandler is built (see is_endpoint_spec)
    from beam_infer.remote import EndpointSpec

PredictionLog = _prediction_log.PredictionLog
PredictionResult = base.PredictionResult


class InferenceHandler(base.ModelHandler[Any, PredictionLog | PredictionResult, Servable]):
    """Turns batches of elements into predictions with a backend's servable.

    Signatures with one string input (and every classify/regress signature) are fed
    serialized examples; any other predict signature is fed named tensors stacked from
    the elements (see ``RunInference`` for the element kinds).

    Args:
        backend: What answers the calls (built with the pipeline; see ``_backend``).
        output: ``Output.PREDICTION_LOG`` (default) or the lean ``Output.RESULT``.

    Raises:
        ConfigurationError: ``output`` is not an ``Output``.
    """

    def __init__(self, backend: Backend, *, output: Output = Output.PREDICTION_LOG):
        _check_output(output)
        self._backend = backend
        self._output = output
        self._format = output_format(output)
        super().__init__()

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def plan(self) -> SignaturePlan:
        return self._backend.plan

    @property
    def output(self) -> Output:
        return self._output

    @property
    def output_format(self) -> OutputFormat:
        return self._format

    @property
    def model_version(self) -> ModelVersion:
        """The version chosen at build time (``version`` None for a plain directory)."""
        return self._backend.version

    @property
    def where(self) -> str:
        """The called signatures and the model, as messages name them."""
        names = ", ".join(s.name for s in self.plan.signatures)
        return f"signature {names!r} of {self._backend.location}"

    def validator(self) -> Validator:
        """The per-element checks run before batching (see ``_validation``)."""
        return self._backend.validator()

    def load_model(self) -> Servable:
        return self._backend.load()

    def share_model_across_processes(self) -> bool:
        return self._backend.share_across_processes

    def model_copies(self) -> int:
        return self._backend.model_copies()

    def run_inference(
        self,
        batch: Sequence[Any],
        model: Servable,
        inference_args: Mapping[str, Any] | None = None,
    ) -> Iterable[PredictionLog | PredictionResult]:
        if not batch:
            return []
        encoded = self.encoded(self.encode(batch))
        results = self.call_model(encoded, model)
        self.report_loads(results)
        return self.build_outputs(batch, encoded, results)

    # The three stages of run_inference, separate so that a wrapper (see _isolation) can
    # tell which one failed and retry or isolate just that one.

    def encode(self, batch: Sequence[Any]) -> list[Any]:
        """Per element, what it is fed as: its serialized example, or itself (tensors).

        Raises:
            InputError: an element is of a type the signature cannot take.
        """
        if self._feeds_tensors(batch):
            return list(batch)
        return _encoding.serialize_examples(
            batch,
            signature_name=self.plan.signatures[0].name,
            accepts_sequence_examples=self.plan.operation is Operation.PREDICT,
        )

    def encoded(self, items: Sequence[Any]) -> EncodedBatch:
        """``encode``'s items (of the whole batch or a part of it) as one call's input."""
        feed = Feed.TENSORS if self._feeds_tensors(items) else Feed.EXAMPLES
        return EncodedBatch.of_items(feed, items)

    def call_model(self, encoded: EncodedBatch, model: Servable) -> ModelResults:
        """Calls the signature(s) on an encoded batch; outputs keep the batch first.

        The served version answers (it may change between calls when versions are
        followed); loads since the previous call come back in ``ModelResults.loads``.

        Raises:
            InputError: the elements cannot be stacked into the signature's inputs.
        """
        signatures, calls, rows = self.model_calls(encoded)
        outputs, version, events = model.call(calls)
        return ModelResults(list(zip(signatures, outputs, strict=True)), rows=rows,
                            version=version, loads=tuple(events))

    def model_calls(self, encoded: EncodedBatch) -> tuple[list[Signature], list, Any]:
        """The signatures ``call_model`` calls, their ``(name, feeds)`` and the stacked rows.

        Raises:
            InputError: the elements cannot be stacked into the signature's inputs.
        """
        plan = self.plan
        first = plan.signatures[0]
        rows = None
        if encoded.feed is Feed.TENSORS:
            tensors = encoded.stacked if encoded.items is None else _tensors.batch_tensors(
                encoded.items, first, pad=self._backend.pad_variable_length_inputs,
                strict=self._backend.strict_input_casts)
            signatures, calls, rows = [first], [(first.name, tensors.feeds)], tensors.rows
        else:
            # One object array: TF converts it to a string tensor without a Python loop.
            feed = encoded.stacked if encoded.items is None \
                else np.array(encoded.items, dtype=object)
            signatures = list(plan.signatures) \
                if plan.operation is Operation.MULTI_INFERENCE else [first]
            calls = [(s.name, {s.inputs[0].alias: feed}) for s in signatures]
        return signatures, calls, rows

    def planned_calls(self, values: Sequence[Any]) -> list | None:
        """The model calls ``run_inference`` makes for ``values`` (see ``_send_ahead``).

        Raises:
            InputError: as ``encode`` and ``model_calls`` do for elements that cannot be fed.
        """
        return self.model_calls(self.encoded(self.encode(values)))[1]

    def report_loads(self, results: ModelResults) -> None:
        """Metrics for the events (loads, requests) ``results`` carries; call it from the
        bundle's thread."""
        for event in results.loads:
            _metrics.report_event(event)

    def report_pending_loads(self, model: Servable) -> None:
        """Metrics for events a failed call left unreported; call it from the bundle's thread.

        For bundles that succeed although a call failed (its elements became dead
        letters): a later call may never come, or fail too.
        """
        for event in model.take_load_events():
            _metrics.report_event(event)

    def build_outputs(self, batch: Sequence[Any], encoded: EncodedBatch,
                      results: ModelResults) -> list[PredictionLog] | list[PredictionResult]:
        """One PredictionLog (or lean PredictionResult) per element of ``batch``.

        Logs of a versioned model record its name and version in ``model_spec``.
        """
        return self._format.per_element(self.plan, batch, encoded, results)

    def _feeds_tensors(self, batch: Sequence[Any]) -> bool:
        plan = self.plan
        if plan.feed is Feed.TENSORS:
            return True
        # A one-string-input predict signature takes raw strings too; examples stay the
        # default for Example protos and bytes.
        return bool(batch) and plan.operation is Operation.PREDICT and \
            _tensors.is_tensor_element(batch[0])

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        if self._feeds_tensors(batch):
            return _tensors.num_bytes(batch)
        return _encoding.num_bytes(batch)

    def get_metrics_namespace(self) -> str:
        return _metrics.NAMESPACE

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return self._backend.batching.batch_elements_kwargs()

    def update_model_path(self, model_path: str | None = None) -> None:
        """Points the handler at another model (Beam's model-refresh side input calls it)."""
        if model_path:
            self._backend = self._backend.update_model_path(model_path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._backend!r})"


@checked_keywords
class SavedModelHandler(InferenceHandler):
    """Loads a SavedModel once per worker and turns batches of elements into predictions.

    The model's signatures are read and checked when the handler is built, so a wrong
    path, tag or signature fails pipeline construction, not the first bundle. Works with
    ``beam_infer.RunInference`` and equally with Beam's own ``RunInference`` and
    ``KeyedModelHandler``.

    ``model_path`` may be a SavedModel directory or a TF Serving-style base path of
    numbered versions: the version policy's newest complete version is chosen at build
    time (its signatures are checked), and with ``poll_interval_secs`` each worker
    switches to newer versions as they land (see ``ModelSpec``).

    Args:
        spec: A ``beam_infer.ModelSpec`` or tfx-bsl's ``InferenceSpecType``.
        output: ``Output.PREDICTION_LOG`` (default) or the lean ``Output.RESULT``.
        load_override_fn: tfx-bsl's hook: ``fn(model_path, tags)`` run on the worker
            instead of beam_infer's load, returning what ``tf.saved_model.load`` returns
            or a ``tf.compat.v1.Session`` with the model loaded (see ``_override``).

    Raises:
        ConfigurationError: the model, its versions, tags or signatures do not fit, or
            ``output`` is not an ``Output``; the message says how to fix it.

    Example:
        >>> handler = SavedModelHandler(ModelSpec(model_path="/models/five/1"))
        >>> logs = pcoll | apache_beam.ml.inference.RunInference(handler)
    """

    def __init__(self, spec: ModelSpec | model_spec_pb2.InferenceSpecType, *,
                 output: Output = Output.PREDICTION_LOG,
                 load_override_fn: LoadOverrideFn | None = None):
        _check_output(output)  # before the model is read
        if load_override_fn is not None and not callable(load_override_fn):
            raise ConfigurationError(
                f"load_override_fn must be a function (model_path, tags) -> model; got "
                f"{type(load_override_fn).__name__}."
            )
        super().__init__(SavedModelBackend(as_model_spec(spec), load_override_fn),
                         output=output)

    @property
    def spec(self) -> ModelSpec:
        return self._backend.spec

    @property
    def load_override_fn(self) -> LoadOverrideFn | None:
        return self._backend.load_override_fn


@checked_keywords
class EndpointHandler(InferenceHandler):
    """``SavedModelHandler``'s sibling for a model behind a serving endpoint.

    The endpoint's signatures are read from the server when the handler is built (see
    ``EndpointSpec``), so an unreachable server or a wrong model or signature fails
    pipeline construction, within seconds. Works with ``beam_infer.RunInference`` and
    with Beam's own ``RunInference`` and ``KeyedModelHandler``.

    Args:
        spec: A ``beam_infer.EndpointSpec``.
        output: ``Output.PREDICTION_LOG`` (default) or the lean ``Output.RESULT``.

    Raises:
        ConfigurationError: the endpoint cannot be read or its signatures do not fit, or
            ``output`` is not an ``Output``; the message says how to fix it.

    Example:
        >>> handler = EndpointHandler(EndpointSpec.from_url("grpc://host:8500/models/five"))
        >>> logs = pcoll | apache_beam.ml.inference.RunInference(handler)
    """

    def __init__(self, spec: EndpointSpec, *, output: Output = Output.PREDICTION_LOG):
        _check_output(output)  # before the server is asked
        if not is_endpoint_spec(spec):
            raise ConfigurationError(
                f"EndpointHandler takes a beam_infer.EndpointSpec; got "
                f"{type(spec).__name__}. For a SavedModel use SavedModelHandler.")
        from beam_infer.remote import RemoteBackend

        super().__init__(RemoteBackend(spec), output=output)

    @property
    def spec(self) -> EndpointSpec:
        return self._backend.spec


def is_endpoint_spec(value: Any) -> bool:
    """Whether ``value`` is a ``beam_infer.EndpointSpec``, without importing the remote
    backend (its clients, protocols and codecs) for a SavedModel.

    No EndpointSpec exists before ``beam_infer.remote`` is imported, and ``bi.EndpointSpec``
    imports it (``beam_infer.__getattr__``).
    """
    remote = sys.modules.get("beam_infer.remote")
    return remote is not None and isinstance(value, remote.EndpointSpec)


def _check_output(output: Any) -> None:
    if not isinstance(output, Output):
        raise ConfigurationError(
            f"output must be a beam_infer.Output; got {output!r}. Pass "
            "output=bi.Output.PREDICTION_LOG or output=bi.Output.RESULT."
        )
