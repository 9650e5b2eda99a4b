"""``beam_infer.RunInference``: the PTransform users apply."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import apache_beam as beam
from apache_beam.ml.inference import base
from apache_beam.typehints import typehints
from tfx_bsl.public.proto import model_spec_pb2

from beam_infer import _batches, _send_ahead
from beam_infer._config import ModelSpec, Output, RetryConfig
from beam_infer._dead_letters import (
    DEAD_LETTERS_TAG,
    DeadLetter,
    InferenceResults,
    SplitDeadLettersFn,
    ValidateFn,
)
from beam_infer._errors import ConfigurationError
from beam_infer._handler import (
    EndpointHandler,
    InferenceHandler,
    SavedModelHandler,
    is_endpoint_spec,
)
from beam_infer._isolation import IsolatingHandler
from beam_infer._keyed_batches import KeyedBatchesHandler, is_list_type, may_hold_keyed_batches
from beam_infer._keys import Keys
from beam_infer._keywords import checked_keywords
from beam_infer._local_runner import patch_local_runner_metrics
from beam_infer._retries import ModelCaller
from beam_infer._signatures import Feed
from beam_infer._validation import Validator
from beam_infer.saved_model._override import LoadOverrideFn

if TYPE_CHECKING:
    from beam_infer.remote import EndpointSpec

K = TypeVar("K")
DEFAULT_RETRY = RetryConfig()


@checked_keywords
class RunInference(beam.PTransform):
    """Scores elements with a SavedModel, or a model behind a serving endpoint; a
    drop-in for tfx-bsl's ``RunInference``.

    ================================================  ==================================
    input element                                     output element
    ================================================  ==================================
    ``tf.train.Example`` / ``SequenceExample``         ``PredictionLog``
    ``bytes`` (a serialized example)                   ``PredictionLog``
    tensor-input signature: ``dict[alias, array]``,    ``PredictionLog``
    or for one input an ``np.ndarray``, scalar,
    list, ``str`` or ``tf.Tensor``
    ``(key, any of the above)``                        ``(key, PredictionLog)``
    ``(key, list of Example/SequenceExample/bytes)``   ``(key, list[PredictionLog])``
    ================================================  ==================================

    With ``output=Output.RESULT`` each ``PredictionLog`` above is Beam's
    ``PredictionResult(example, inference)`` instead: the element and a dict of numpy
    output rows by alias.

    A signature whose only input is a string takes serialized examples from
    ``tf.train.Example``/``bytes`` elements, and raw strings from ``str``, ``np.ndarray``,
    ``list``, ``dict`` or ``tf.Tensor`` elements. Predict logs of tensor inputs hold each
    element's tensors in ``request.inputs[alias]`` with a leading dimension of 1.

    The model is loaded once per worker process (or once per machine with
    ``ModelSpec(share_across_processes=True)``); elements are batched by Beam's
    ``BatchElements`` as ``ModelSpec.batching`` says. The PredictionLog layout is TF
    Serving's, the same tfx-bsl writes: predict, classify, regress or multi-inference,
    chosen from the signatures' ``method_name``.

    For input that is already batched, ``RunInference(spec).on_batches()`` scores one
    batch per element and emits one output per batch (see ``RunInferenceOnBatches``).

    Model calls that fail transiently are retried as ``retry`` says. An element that
    cannot be scored stops the pipeline with ``InferenceError`` naming its key, the stage
    and the reason; ``.with_dead_letters()`` routes such elements to a second output
    instead, and the other elements of their batch are scored as usual.

    With a ``beam_infer.EndpointSpec`` the model is called at a TF Serving, KServe v2
    or Vertex AI endpoint instead (see ``EndpointHandler``): the same outputs, dead
    letters and retries (of retryable failures only).

    Args:
        inference_spec_type: A ``beam_infer.ModelSpec``, tfx-bsl's ``InferenceSpecType``
            or a ``beam_infer.EndpointSpec`` (named as in tfx-bsl; usually passed by
            position).
        load_override_fn: As in tfx-bsl: ``fn(model_path, tags) -> model`` run on the
            worker instead of beam_infer's load; it returns what ``tf.saved_model.load``
            returns or a ``tf.compat.v1.Session`` with the SavedModel loaded.
        output: ``Output.PREDICTION_LOG`` (default) or ``Output.RESULT`` (lean).
        retry: How transient model-call failures are retried (``RetryConfig()``: 3
            attempts, 0.5 s then 1 s apart).

    Raises:
        ConfigurationError: at construction, if the model path, tags or signatures do
            not fit (see ``SavedModelHandler``), or ``output`` is not an ``Output``.

    Example:
        >>> import beam_infer as bi
        >>> logs = examples | bi.RunInference(bi.ModelSpec(model_path="/models/five/1"))
        >>> keyed_logs = keyed_examples | bi.RunInference(spec)  # (key, PredictionLog)
        >>> logs, failed = examples | bi.RunInference(spec).with_dead_letters()
        >>> results = arrays | bi.RunInference(spec, output=bi.Output.RESULT)
    """

    def __init__(self, inference_spec_type: ModelSpec | model_spec_pb2.InferenceSpecType
                 | EndpointSpec, load_override_fn: LoadOverrideFn | None = None, *,
                 output: Output = Output.PREDICTION_LOG, retry: RetryConfig = DEFAULT_RETRY):
        super().__init__()
        if not isinstance(retry, RetryConfig):
            raise ConfigurationError(
                f"RunInference(retry=...) takes a beam_infer.RetryConfig; got "
                f"{type(retry).__name__}. Example: retry=bi.RetryConfig(max_attempts=5).")
        if is_endpoint_spec(inference_spec_type):
            if load_override_fn is not None:
                raise ConfigurationError(
                    "load_override_fn loads a SavedModel on the worker, but an EndpointSpec "
                    "scores with a model behind an endpoint: nothing is loaded. Drop "
                    "load_override_fn, or pass a bi.ModelSpec.")
            self._handler = EndpointHandler(inference_spec_type, output=output)
        else:
            self._handler = SavedModelHandler(inference_spec_type, output=output,
                                              load_override_fn=load_override_fn)
        self._retry = retry
        # Read while the model is known to exist: workers may never see the path again.
        self._validator = self._handler.validator()

    @property
    def handler(self) -> SavedModelHandler | EndpointHandler:
        return self._handler

    def with_dead_letters(self) -> RunInferenceWithDeadLetters:
        """The same inference, with elements that cannot be scored as a second output.

        Returns:
            A transform whose result is ``InferenceResults(predictions, failed)``:
            ``failed`` holds a ``beam_infer.DeadLetter`` per element that was not scored.

        Example:
            >>> logs, failed = examples | bi.RunInference(spec).with_dead_letters()
        """
        return RunInferenceWithDeadLetters(self._handler, self._retry, self._validator)

    def on_batches(self) -> RunInferenceOnBatches:
        """The same scoring for a PCollection whose elements are already batches.

        Beam's own batching and its per-element emitting are skipped: each input batch
        is one model call and gives one output (see ``RunInferenceOnBatches``), the way
        Beam's ``ModelHandler.with_no_batching()`` and tfx-bsl's
        ``RunInferenceOnKeyedBatches`` take pre-batched input. Transient model-call
        failures are retried as ``retry`` says; there is no dead-letter output.

        Example:
            >>> batches = examples | beam.BatchElements(min_batch_size=256)
            >>> log_lists = batches | bi.RunInference(spec).on_batches()
        """
        return RunInferenceOnBatches(self._handler, self._retry)

    def infer_output_type(self, input_type: Any) -> Any:
        return _output_type(input_type, self._handler)

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        patch_local_runner_metrics()  # long local runs keep readable metrics
        handler = _per_element(self._handler, self._retry, self._validator,
                               pcoll.element_type, dead_letters=False)
        output_type = self.infer_output_type(pcoll.element_type)
        if self._handler.backend.sends_ahead:
            return _send_ahead.per_element(pcoll, handler, output_type)
        return pcoll | "Infer" >> base.RunInference(handler).with_output_types(output_type)


class RunInferenceWithDeadLetters(beam.PTransform):
    """``RunInference`` whose failing elements go to a second output; see ``DeadLetter``.

    Made by ``bi.RunInference(spec).with_dead_letters()``. Three labelled steps:
    ``Validate`` (cheap, certain checks per element before batching), ``Infer`` (Beam's
    RunInference with a handler that retries and isolates failing elements) and
    ``SplitDeadLetters``; the dead letters of both are flattened into one output. Every
    input element ends in exactly one of the two outputs.

    Its result is ``InferenceResults(predictions, failed)``: what ``RunInference`` emits,
    and one ``DeadLetter`` per element that was not scored.

    Example:
        >>> logs, failed = examples | bi.RunInference(spec).with_dead_letters()
    """

    def __init__(self, handler: InferenceHandler, retry: RetryConfig, validator: Validator):
        super().__init__()
        self._handler = handler
        self._retry = retry
        self._validator = validator

    def expand(self, pcoll: beam.PCollection) -> InferenceResults:
        patch_local_runner_metrics()  # long local runs keep readable metrics
        keys = Keys.of_type(pcoll.element_type)
        nests = _nests(self._handler, pcoll.element_type, keys)
        valid, invalid = (pcoll | "Validate" >> beam.ParDo(
            ValidateFn(self._validator, keys, keyed_batches=nests))
                          .with_outputs(DEAD_LETTERS_TAG, main="valid"))
        handler = _per_element(self._handler, self._retry, self._validator,
                               pcoll.element_type, dead_letters=True)
        output_type = _output_type(pcoll.element_type, self._handler)
        result_type = typehints.Union[output_type, DeadLetter]
        if self._handler.backend.sends_ahead:
            results = _send_ahead.per_element(valid, handler, result_type)
        else:
            results = (valid | "Infer" >> base.RunInference(handler)
                       .with_output_types(result_type))
        predictions, failed = (results | "SplitDeadLetters" >> beam.ParDo(SplitDeadLettersFn())
                               .with_outputs(DEAD_LETTERS_TAG, main="predictions"))
        predictions.element_type = output_type
        failed = ((invalid, failed) | "FlattenDeadLetters"
                  >> beam.Flatten().with_output_types(DeadLetter))
        return InferenceResults(predictions, failed)


class RunInferenceOnBatches(beam.PTransform):
    """Scores pre-batched elements: one model call and one output per input batch.

    Made by ``RunInference(spec).on_batches()``. The logs are byte for byte those
    ``RunInference`` writes for the batch's elements one by one. Two labelled steps:
    ``AsBatch`` (checks and counts each batch) and ``Infer`` (Beam's RunInference with
    its batching skipped).

    ====================================================  =================================
    input element (one batch)                             output element
    ====================================================  =================================
    ``list`` of the elements ``RunInference`` takes        ``list[PredictionLog]``, in order
    ``np.ndarray`` / ``tf.Tensor`` stacked on axis 0       ``list[PredictionLog]``
    (one-input signature; 1-D ``bytes`` for examples)
    ``dict[alias, stacked array]``                         ``list[PredictionLog]``
    ``(key, any batch above)``                             ``(key, list[PredictionLog])``
    ====================================================  =================================

    With ``output=Output.RESULT`` the output per batch is one
    ``PredictionResult(batch, inference)``: the batch as it came in and a dict of the
    batched numpy outputs by alias (axis 0 the batch), with no per-element split at all.

    Raises:
        InferenceError: on the worker, for an element that is not a batch or a batch that
            cannot be scored (after retries of transient failures); the message names
            its key, the stage and why.

    Example:
        >>> batches = p | bi.ReadTFRecordBatches("in-*.tfrecord", batch_size=1024)
        >>> log_lists = batches | bi.RunInference(spec).on_batches()
    """

    def __init__(self, handler: InferenceHandler, retry: RetryConfig):
        super().__init__()
        self._handler = handler
        self._retry = retry

    def infer_output_type(self, input_type: Any) -> Any:
        value = self._handler.output_format.batch_type
        keys = Keys.of_type(input_type)
        if keys is Keys.PER_ELEMENT:
            return Any  # undeclared input may hold (key, batch) pairs
        if keys is Keys.ALL:
            return typehints.Tuple[input_type.tuple_types[0], value]
        return value

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        patch_local_runner_metrics()  # long local runs keep readable metrics
        handler = _batches.BatchesHandler(self._handler,
                                          ModelCaller(self._handler, self._retry))
        output_type = self.infer_output_type(pcoll.element_type)
        batches = pcoll | "AsBatch" >> beam.Map(
            _batches.as_batch, self._handler.plan.signatures[0].name
        ).with_output_types(_batches.Batch)
        if self._handler.backend.sends_ahead:
            return _send_ahead.batched(batches, handler, output_type)
        return batches | "Infer" >> base.RunInference(handler).with_output_types(output_type)


def _nests(handler: InferenceHandler, element_type: Any, keys: Keys) -> bool:
    """Whether elements may be keyed batches ``(key, [examples])`` (see _keyed_batches)."""
    return handler.plan.feed is Feed.EXAMPLES and handler.output_format.nests_keyed_batches \
        and may_hold_keyed_batches(element_type, keys)


def _per_element(handler: InferenceHandler, retry: RetryConfig, validator: Validator,
                 element_type: Any, *, dead_letters: bool) -> base.ModelHandler:
    """The handler Beam's RunInference runs for elements of ``element_type``."""
    keys = Keys.of_type(element_type)
    isolating = IsolatingHandler(handler, keys=keys, caller=ModelCaller(handler, retry),
                                 validator=validator, dead_letters=dead_letters)
    if _nests(handler, element_type, keys):
        return KeyedBatchesHandler(isolating)
    return isolating


def _output_type(input_type: Any, handler: InferenceHandler) -> Any:
    """PredictionLog (or PredictionResult) per element, a (K, ...) pair for pairs.

    Undeclared or union input types (e.g. ``beam.Create`` of mixed pairs) are decided per
    element, so the output may hold either: Any.
    """
    value = handler.output_format.element_type
    keys = Keys.of_type(input_type)
    if keys is Keys.PER_ELEMENT:
        return Any
    if keys is Keys.ALL:
        key_type, value_type = input_type.tuple_types
        if _nests(handler, input_type, keys):
            if is_list_type(value_type):
                return typehints.Tuple[key_type, typehints.List[value]]
            # Undeclared values may be keyed batches: a log or a list of logs.
            return typehints.Tuple[key_type, Any]
        return typehints.Tuple[key_type, value]
    return value
