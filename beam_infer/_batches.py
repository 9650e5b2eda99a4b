"""Scoring pre-batched input: each element of the PCollection is already a batch.

``RunInference(spec).on_batches()`` takes Beam's per-element work (batching, one output
element per input element) off the hot path: a pipeline whose source already yields
batches (``bi.ReadTFRecordBatches``, a TFXIO ``BeamSource(batch_size)``,
``beam.BatchElements``, a reader of numpy shards) hands each batch straight to the model
and gets one output per batch.

A batch is a ``list`` of the elements ``RunInference`` takes one by one, a numpy array
or ``tf.Tensor`` stacked along axis 0 (one-input signatures; a 1-D ``dtype=object``
array or string tensor of bytes for a serialized-example signature, or of raw text for a
one-string-input predict signature), a ``dict`` of such arrays keyed by input alias, or a
``(key, batch)`` pair. Each batch goes through ``SavedModelHandler``'s own stages
(``encode``, ``call_model``, ``build_outputs``), so the logs are those of per-element
``RunInference``, byte for byte (versioned models stamp ``model_spec`` the same way, and
model loads become the same metrics); only the grouping of outputs differs. A stacked
batch skips the per-element ``encode`` and is checked and cast as a whole.

The model call is retried as ``RetryConfig`` says, by ``_retries.ModelCaller``, as in
per-element scoring. There is no isolation and no dead-letter output: a batch that
cannot be scored stops the pipeline with ``InferenceError`` naming its key, the stage
and why, as ``RunInference`` does for an element without ``with_dead_letters()``.

The ``AsBatch`` step wraps each batch in a ``Batch`` whose ``len`` is its element count,
so Beam's ``num_inferences`` and batch-size metrics count elements, not batches; Beam
estimates a ``Batch``'s size with ``_coders.SizedPickleCoder`` (no pickling per sample).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from beam_infer import _coders, _encoding, _retries, _tensors
from beam_infer._dead_letters import Stage
from beam_infer._errors import InferenceError, InputError
from beam_infer._forwarding import ForwardingHandler
from beam_infer._handler import InferenceHandler
from beam_infer._messages import bounded, detail, tf_message, type_name
from beam_infer._retries import CallFailure, ModelCaller
from beam_infer._signatures import Feed, Operation
from beam_infer._stages import EncodedBatch

_KINDS = ("a list of elements (e.g. from beam.BatchElements()), a numpy array or "
          "tf.Tensor stacked along axis 0 (one-input signatures), a dict of such arrays "
          "keyed by input alias, or a (key, batch) pair")


@dataclasses.dataclass(frozen=True)
class Batch:
    """One batch as the model step sees it; ``len`` counts its elements for Beam's metrics."""

    value: Any
    size: int
    key: Any = None
    keyed: bool = False

    def __len__(self) -> int:
        return self.size


# Beam samples the sizes of AsBatch's outputs: from their arrays, not by pickling them.
_coders.register(Batch, _coders.SizedPickleCoder)


def as_batch(element: Any, signature_name: str) -> Batch:
    """Checks a PCollection element is a batch (or ``(key, batch)``) and counts it.

    Raises:
        InferenceError: the element is not a batch (stage decode); the message names
            the kinds taken.
    """
    if isinstance(element, tuple):
        if len(element) != 2:
            error = InputError(
                f"on_batches() got a tuple of {len(element)} items; a keyed batch is a "
                "(key, batch) pair. Pass a batch as a list, or pair it with its key.")
            raise _stopped(element, None, None, Stage.DECODE, error) from error
        key, value = element
        return Batch(value, _checked_size(value, signature_name, key), key=key, keyed=True)
    return Batch(element, _checked_size(element, signature_name, None))


def _checked_size(value: Any, signature_name: str, key: Any) -> int:
    try:
        return _size(value, signature_name)
    except InputError as e:
        raise _stopped(value, key, None, Stage.DECODE, e) from e


def _size(value: Any, signature_name: str) -> int:
    if isinstance(value, list):
        return len(value)
    if isinstance(value, np.ndarray | tf.Tensor):
        if len(value.shape) == 0:
            raise InputError(
                f"on_batches() got a 0-d {type_name(value)} for signature "
                f"{signature_name!r}; a batch array has the elements along axis 0. Stack "
                "the elements (np.stack) or pass a list of them."
            )
        return int(value.shape[0])
    if isinstance(value, Mapping) and value:
        sizes = {alias: _size(array, signature_name) for alias, array in value.items()}
        if len(set(sizes.values())) > 1:
            listed = ", ".join(f"{alias}: {size}" for alias, size in sizes.items())
            raise InputError(
                f"on_batches() got a dict batch whose arrays disagree on the batch size "
                f"(axis 0) for signature {signature_name!r}: {listed}. Every input of a "
                "batch needs one row per element."
            )
        return next(iter(sizes.values()))
    single = isinstance(value, _encoding.ExampleLike | str | bytes | int | float)
    hint = (" That is a single element: use bi.RunInference(spec) for single elements, "
            "or batch them first with beam.BatchElements().") if single else ""
    raise InputError(
        f"on_batches() takes batches, but got {type_name(value)} for signature "
        f"{signature_name!r}. A batch is {_KINDS}.{hint}"
    )


def encode(handler: InferenceHandler, batch: Batch) -> EncodedBatch:
    """What ``handler.call_model`` takes: ``handler.encode`` of a list, or the stacked batch.

    Raises:
        InputError: the batch is of a kind, dtype or shape the signature cannot take.
    """
    value = batch.value
    if isinstance(value, list):
        return handler.encoded(handler.encode(value))
    stacked = _stacked(handler, value)
    feed = Feed.TENSORS if isinstance(stacked, _tensors.TensorBatch) else Feed.EXAMPLES
    return EncodedBatch.of_stacked(feed, stacked, batch.size)


def _stacked(handler: InferenceHandler, value: Any) -> Any:
    plan = handler.plan
    signature = plan.signatures[0]
    strict = handler.backend.strict_input_casts
    if plan.feed is Feed.EXAMPLES and isinstance(value, tf.Tensor) and value.shape.rank == 1 \
            and value.dtype == tf.string:
        # A string tensor (e.g. a tf.data batch) goes to the model as it is; only
        # PredictionLogs, which echo each example, read its bytes into Python.
        return value
    # A one-string-input predict signature also takes raw strings, as elements do.
    raw_text = plan.operation is Operation.PREDICT and len(signature.inputs) == 1
    if plan.feed is Feed.EXAMPLES and isinstance(value, np.ndarray) and value.ndim == 1:
        if value.dtype.kind == "S":
            raise InputError(
                f"signature {signature.name!r} got a batch as a numpy {value.dtype} array; "
                "numpy drops the trailing zero bytes of such items, which often ends "
                "serialized examples. Build the array with dtype=object, or pass a list of "
                "bytes or a string tf.Tensor."
            )
        if value.dtype == object and all(isinstance(v, bytes) for v in value):
            return value
        if raw_text and (value.dtype.kind == "U" or (
                value.dtype == object and all(isinstance(v, bytes | str) for v in value))):
            return _tensors.stacked_tensors({signature.inputs[0].alias: value}, signature,
                                            strict=strict)
        if value.dtype == object:
            raise InputError(
                f"signature {signature.name!r} takes serialized examples; a numpy batch "
                "for it must hold bytes, but an item is "
                f"{type_name(next(v for v in value if not isinstance(v, bytes)))}. "
                "Serialize each example (SerializeToString()) first."
            )
    if isinstance(value, Mapping):
        return _tensors.stacked_tensors(value, signature, strict=strict)
    if plan.feed is Feed.TENSORS and len(signature.inputs) == 1:
        return _tensors.stacked_tensors({signature.inputs[0].alias: value}, signature,
                                            strict=strict)
    if plan.feed is Feed.TENSORS:
        aliases = ", ".join(info.alias for info in signature.inputs)
        raise InputError(
            f"signature {signature.name!r} takes {len(signature.inputs)} inputs ({aliases}), "
            f"so a stacked batch must be a dict of arrays keyed by those aliases; got "
            f"{type_name(value)}."
        )
    raise InputError(
        f"signature {signature.name!r} takes serialized examples; a batch for it is a "
        "list of tf.train.Example/bytes or a 1-D numpy array or tf.Tensor of bytes, but got "
        f"{type_name(value)}{_shape_text(value)}. Parse the data inside the model, or "
        "pick a tensor-input signature with ModelSpec(signature_names=...)."
    )


class BatchesHandler(ForwardingHandler):
    """Scores one ``Batch`` per call with the handler's stages.

    Wraps the ``InferenceHandler`` directly, with the ``ModelCaller`` per-element scoring
    uses for timeouts and retries; nothing is isolated. Beam's ``RunInference`` skips its
    own batching for it (``should_skip_batching``) and emits what ``run_inference``
    returns: one output per batch.

    Example:
        >>> handler = BatchesHandler(inner, ModelCaller(inner, RetryConfig()))
        >>> (logs,) = handler.run_inference([as_batch(examples, "serving_default")], model)
    """

    def __init__(self, inner: InferenceHandler, caller: ModelCaller):
        super().__init__(inner)
        self._caller = caller

    def planned_calls(self, batch: Batch) -> list | None:
        """The model calls scoring ``batch`` makes (see ``_send_ahead``); None for an
        empty batch, which makes none. Raises as ``encode`` does."""
        if batch.size == 0:
            return None
        return self._inner.model_calls(encode(self._inner, batch))[1]

    def run_inference(self, batch: Batch, model: Any,
                      inference_args: Mapping[str, Any] | None = None) -> Iterable[Any]:
        inner: InferenceHandler = self._inner
        output = inner.output_format
        if batch.size == 0:
            answer: Any = output.empty_batch(batch.value)
        else:
            try:
                encoded = encode(inner, batch)
            except Exception as e:
                raise _stopped(batch.value, batch.key, batch.size, Stage.DECODE, e) from e
            outcome = self._caller.call(encoded, model)
            if isinstance(outcome, CallFailure):
                # An InputError comes from stacking the elements, before the model ran.
                stage = Stage.DECODE if isinstance(outcome.error, InputError) \
                    else Stage.INFERENCE
                raise _stopped(batch.value, batch.key, batch.size, stage, outcome.error,
                               _retries.reason(outcome, inner.where, size=batch.size,
                                               batch=True)) from outcome.error
            try:
                answer = output.per_batch(inner.plan, batch.value, encoded, outcome)
            except Exception as e:
                raise _stopped(batch.value, batch.key, batch.size, Stage.POSTPROCESS,
                               e) from e
        return [(batch.key, answer) if batch.keyed else answer]

    def get_num_bytes(self, batch: Batch) -> int:
        value = batch.value
        if isinstance(value, list):
            return self._inner.get_num_bytes(value) if value else 0
        if isinstance(value, Mapping):
            return _tensors.num_bytes(list(value.values()))
        if isinstance(value, np.ndarray) and value.dtype == object:
            return sum(len(v) for v in value)
        return _tensors.num_bytes([value])

    def should_skip_batching(self) -> bool:
        return True


def _stopped(value: Any, key: Any, size: int | None, stage: Stage, error: BaseException,
             reason: str | None = None) -> InferenceError:
    """The error that stops the pipeline for a batch, in ``DeadLetter.describe``'s words."""
    who = f"batch with key {detail(repr(key))}" if key is not None else "batch"
    what = type_name(value) if size is None else f"{type_name(value)} of {size} element(s)"
    reason = bounded((reason if reason is not None else tf_message(error)).rstrip(), 1000)
    return InferenceError(bounded(
        f"{who} ({what}) failed at stage {stage.value}: {type(error).__name__}: "
        f"{reason}{'' if reason.endswith('.') else '.'} on_batches() has no dead-letter "
        "output: to set failing elements aside and score the rest, score them one by one "
        "with RunInference(spec).with_dead_letters()."
    ))


def _shape_text(value: Any) -> str:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    return f" of {getattr(dtype, 'name', dtype)} shape {list(shape)}" if shape is not None \
        else ""
