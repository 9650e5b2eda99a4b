"""Beam's TensorFlow model handlers, with Beam's names and signatures, on beam_infer's loading.

A user of ``apache_beam.ml.inference.tensorflow_inference`` (Beam 2.77) changes only the
import::

    from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy  # before
    from beam_infer import TFModelHandlerNumpy                                      # after
    # or: from beam_infer.tensorflow_inference import TFModelHandlerNumpy

What is Beam's, unchanged: ``TFModelHandlerNumpy``, ``TFModelHandlerTensor``,
``ModelType``, ``default_numpy_inference_fn`` and ``default_tensor_inference_fn``; the
constructors' parameters, order and defaults; ``inference_fn(model, batch,
inference_args, model_id)`` with ``model_id`` the ``model_uri``; the ``PredictionResult``
outputs; and everything the handlers inherit from Beam's ``ModelHandler`` (batching
keywords, ``large_model`` and ``model_copies`` sharing, ``env_vars``,
``with_preprocess_fn`` and the rest), ``update_model_path`` and the metrics namespaces
``BeamML_TF_Numpy`` and ``BeamML_TF_Tensor``. Loading goes through the module-level
``_load_model(model_uri, custom_weights, load_model_args)`` as Beam's does, so tests that
replace it keep working; where models come from and how they load is ``_beam_loading``.

What beam_infer adds, all on the worker when the model is loaded:

* **Any Beam filesystem**: a remote SavedModel directory (``gs://``, ``s3://``, any
  registered scheme) is copied once per machine through beam_infer's model cache
  (``_model_cache``; ``model_cache=bi.ModelCache(...)`` chooses where); a remote model or
  weights *file* (``.keras``, ``.h5``, ``.weights.h5``, a TF checkpoint's files) is copied
  to a private temporary directory for the load and removed after it, because Keras reads
  it whole. Beam hands the URI to Keras, which reads only what TensorFlow's own
  filesystems know.
* **SavedModel directories under Keras 3**: ``tf.keras.models.load_model`` in Keras 3
  reads only ``.keras`` and ``.h5`` files. A SavedModel saved by Keras 2 (it holds
  ``keras_metadata.pb``) is loaded with ``tf_keras`` (a beam_infer dependency), any other
  with ``tf.saved_model.load``; under Keras 2 (``TF_USE_LEGACY_KERAS=1``) Beam's
  ``tf.keras.models.load_model`` is used as it is.
* **GPU memory growth** is turned on before a model is loaded (``_devices``), so model
  copies and SDK processes on one GPU do not fail to allocate.
* **Errors** are ``ValueError``s where Beam raises them (also ``bi.ModelLoadError``, or
  ``bi.ModelPathError`` for a path with nothing there), with bounded text
  (``_messages``) saying what was wrong, what was found and how to fix it: a missing
  path, the ``saved_model.pb`` file instead of its folder, a folder of numbered versions,
  a weights file loaded as a model, a TF Hub address without ``tensorflow_hub``, a model
  that is not callable by the default ``inference_fn``, arrays of different shapes in one
  batch. A misspelt keyword raises ``bi.UnknownArgumentError`` (Beam ignores it).
* **Byte counts**: ``get_num_bytes`` counts the data of the arrays and tensors (Beam's
  ``sys.getsizeof`` counts every tensor as 184 bytes whatever its size).

``tensorflow_hub`` is not a beam_infer dependency. Beam resolves every ``model_uri`` with
``hub.resolve``, which returns a path or a ``gs://`` URI unchanged and downloads only TF
Hub (``https://``) addresses and compressed ``.tar.gz`` archives; when ``tensorflow_hub``
is installed beam_infer calls it the same way, and without it an ``https://`` address
fails with a message saying so (anything else is a path, as ``hub.resolve`` would return).
"""

from __future__ import annotations

import enum
import os
import sys
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy
import tensorflow as tf
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from beam_infer import _beam_loading as _loading
from beam_infer._beam_loading import TFModelLoadError
from beam_infer._config import ModelCache
from beam_infer._errors import (
    ConfigurationError,
    InputError,
    UnknownArgumentError,
)
from beam_infer._keywords import unknown_message
from beam_infer._messages import bounded, detail, sentence
from beam_infer.saved_model import _devices

__all__ = [
    "ModelType",
    "TFModelHandlerNumpy",
    "TFModelHandlerTensor",
    "default_numpy_inference_fn",
    "default_tensor_inference_fn",
]

TensorInferenceFn = Callable[
    [tf.Module, Sequence[numpy.ndarray | tf.Tensor], dict[str, Any], str | None],
    Iterable[PredictionResult]]

_KNOWN_KWARGS = ("env_vars",)  # the only keyword Beam's ModelHandler reads from **kwargs


class ModelType(enum.Enum):
    """How ``model_uri`` is loaded, as Beam's ``ModelType``.

    Attributes:
        SAVED_MODEL: a whole model: a ``.keras`` or ``.h5`` file or a SavedModel directory.
        SAVED_WEIGHTS: weights only; ``create_model_fn()`` builds the model and
            ``model.load_weights(model_uri)`` fills it.
    """

    SAVED_MODEL = 1
    SAVED_WEIGHTS = 2


# --- the default inference functions (Beam's, with clearer errors) ---------------------


def default_numpy_inference_fn(
        model: tf.Module,
        batch: Sequence[numpy.ndarray],
        inference_args: dict[str, Any],
        model_id: str | None = None) -> Iterable[PredictionResult]:
    """Stacks the arrays into one batch, calls ``model(batch, **inference_args)``.

    Beam's default for ``TFModelHandlerNumpy``; each ``PredictionResult`` holds one input
    array, its row of the predictions (a dict of rows for dict outputs) and ``model_id``.

    Raises:
        InputError: the arrays do not stack (different shapes); a ``ValueError``.
        TypeError: the model is not callable; the message says what to pass instead.
    """
    vectorized_batch = _stack(numpy.stack, batch, model_id)
    predictions = _callable(model, model_id)(vectorized_batch, **inference_args)
    return _convert_to_result(batch, predictions, model_id)


def default_tensor_inference_fn(
        model: tf.Module,
        batch: Sequence[tf.Tensor],
        inference_args: dict[str, Any],
        model_id: str | None = None) -> Iterable[PredictionResult]:
    """Stacks the tensors into one batch, calls ``model(batch, **inference_args)``.

    Beam's default for ``TFModelHandlerTensor``; outputs as ``default_numpy_inference_fn``.

    Raises:
        InputError: the tensors do not stack (different shapes or dtypes); a
            ``ValueError``.
        TypeError: the model is not callable; the message says what to pass instead.
    """
    vectorized_batch = _stack(lambda b, axis: tf.stack(b, axis=axis), batch, model_id)
    predictions = _callable(model, model_id)(vectorized_batch, **inference_args)
    return _convert_to_result(batch, predictions, model_id)


def _stack(stack: Callable[..., Any], batch: Sequence[Any], model_id: str | None) -> Any:
    try:
        return stack(batch, axis=0)
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as e:
        shapes = sorted({f"{getattr(x, 'dtype', type(x).__name__)}"
                         f"{list(getattr(x, 'shape', ()))}" for x in batch})
        raise InputError(bounded(
            f"the {len(batch)} elements of a batch for {model_id!r} do not stack into one "
            f"array: {type(e).__name__}: {sentence(e)} Found {detail(', '.join(shapes))}. "
            "Every element of a batch needs the same shape and dtype: pad or resize them "
            "before RunInference, or pass an inference_fn that takes them as they are."
        )) from e


def _callable(model: Any, model_id: str | None) -> Any:
    if callable(model):
        return model
    signatures = sorted(getattr(model, "signatures", None) or ())
    raise TypeError(bounded(
        f"the model loaded from {model_id!r} ({type(model).__name__}) is not callable, so "
        "the default inference_fn cannot call model(batch). It is a SavedModel without a "
        f"__call__ function (signatures: {detail(', '.join(signatures)) or 'none'}), as "
        "Keras 3 model.export() writes. Pass an inference_fn that calls what it has, e.g. "
        "model.serve(batch) or model.signatures['serving_default'](...)."
    ))


def _convert_to_result(batch: Iterable[Any], predictions: Any,
                       model_id: str | None = None) -> list[PredictionResult]:
    """One ``PredictionResult`` per element, as Beam's ``utils._convert_to_result``."""
    if isinstance(predictions, dict):
        # {name: rows} -> one {name: row} per element.
        rows = [dict(zip(predictions.keys(), values, strict=False))
                for values in zip(*predictions.values(), strict=False)]
        return [PredictionResult(x, y, model_id) for x, y in zip(batch, rows, strict=False)]
    return [PredictionResult(x, y, model_id) for x, y in zip(batch, predictions, strict=False)]


# --- loading (Beam's module-level functions; the work is in _beam_loading) --------------


def _load_model(model_uri: str, custom_weights: str, load_model_args: dict[str, Any],
                model_cache: ModelCache | None = None) -> Any:
    """Loads a whole model (Beam's ``_load_model``), then ``custom_weights`` if given.

    Raises:
        ValueError: a ``ModelPathError`` when nothing is at ``model_uri``, else a
            ``ModelLoadError`` saying why the load failed.
    """
    uri = _loading.resolve_handle(os.fspath(model_uri))
    with _loading.local_path(uri, model_cache, what="model_uri") as local:
        model = _loading.load_whole_model(local, uri, load_model_args)
    if custom_weights:
        if not hasattr(model, "load_weights"):
            raise TFModelLoadError(bounded(
                f"custom_weights={custom_weights!r} needs a Keras model, but {uri!r} loaded "
                f"as {type(model).__name__} (a SavedModel that Keras cannot load), which has "
                "no load_weights. Save the model as a .keras file, or load the weights into "
                "it inside create_model_fn with ModelType.SAVED_WEIGHTS."
            ))
        _loading.load_weights(model, os.fspath(custom_weights), model_cache)
    return model


def _load_model_from_weights(create_model_fn: Callable[[], Any], weights_path: str,
                             model_cache: ModelCache | None = None) -> Any:
    """``create_model_fn()``, then its weights from ``weights_path`` (Beam's function)."""
    model = create_model_fn()
    _loading.load_weights(model, os.fspath(weights_path), model_cache)
    return model


# --- the handlers -------------------------------------------------------------------------


class _TFModelHandler(ModelHandler):
    """What both handlers share; see ``TFModelHandlerNumpy``."""

    _namespace = "BeamML_TF"

    def __init__(self, owner: str, model_uri: str, model_type: ModelType,
                 create_model_fn: Callable[[], Any] | None, *,
                 load_model_args: dict[str, Any] | None, custom_weights: str,
                 inference_fn: TensorInferenceFn, model_cache: ModelCache | None,
                 batching: dict[str, Any], kwargs: dict[str, Any]):
        unknown = [k for k in kwargs if k not in _KNOWN_KWARGS]
        if unknown:
            accepted = (*_parameters(type(self)), *_KNOWN_KWARGS)
            raise UnknownArgumentError(unknown_message(owner, unknown, accepted))
        if not isinstance(model_uri, str | os.PathLike):
            raise ConfigurationError(
                f"{owner}(model_uri=...) takes a path or URI string; got "
                f"{type(model_uri).__name__} {detail(repr(model_uri))}. Example: "
                f"{owner}(model_uri='gs://bucket/models/m.keras').")
        model_type = _model_type(owner, model_type)
        for name, fn in (("inference_fn", inference_fn), ("create_model_fn", create_model_fn)):
            if fn is not None and not callable(fn):
                raise ConfigurationError(
                    f"{owner}({name}=...) must be a function; got {type(fn).__name__}.")
        if model_cache is not None and not isinstance(model_cache, ModelCache):
            raise ConfigurationError(
                f"{owner}(model_cache=...) takes a beam_infer.ModelCache; got "
                f"{type(model_cache).__name__}.")
        super().__init__(**batching, **kwargs)
        self._model_uri = model_uri
        self._model_type = model_type
        self._inference_fn = inference_fn
        self._create_model_fn = create_model_fn
        self._load_model_args = load_model_args or {}
        self._custom_weights = custom_weights
        self._model_cache = model_cache

    def load_model(self) -> tf.Module:
        """Loads the model on the worker, with GPU memory growth on (see the module doc).

        Raises:
            ValueError: ``ModelType.SAVED_WEIGHTS`` without ``create_model_fn``, nothing
                at ``model_uri`` (``ModelPathError``), or a load that failed
                (``ModelLoadError``).
        """
        _devices.enable_memory_growth()
        cache = {} if self._model_cache is None else {"model_cache": self._model_cache}
        if self._model_type == ModelType.SAVED_WEIGHTS:
            if not self._create_model_fn:
                raise ConfigurationError(
                    "Callable create_model_fn must be passed with ModelType.SAVED_WEIGHTS: "
                    "model_uri holds only weights, and create_model_fn() builds the model "
                    "they are loaded into.")
            return _load_model_from_weights(self._create_model_fn, self._model_uri, **cache)
        return _load_model(self._model_uri, self._custom_weights, self._load_model_args,
                           **cache)

    def update_model_path(self, model_path: str | None = None) -> None:
        """Loads ``model_path`` from the next load on (Beam's side-input model updates)."""
        self._model_uri = model_path if model_path else self._model_uri

    def run_inference(self, batch: Sequence[Any], model: tf.Module,
                      inference_args: dict[str, Any] | None = None
                      ) -> Iterable[PredictionResult]:
        """``inference_fn(model, batch, inference_args, model_uri)``; one result per element.

        Args:
            batch: the elements; the default ``inference_fn`` stacks them into one batch.
            model: what ``load_model`` returned.
            inference_args: keywords for the model call, the same for every batch.
        """
        inference_args = inference_args or {}
        return self._inference_fn(model, batch, inference_args, self._model_uri)

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        """The bytes of data in the batch's arrays or tensors."""
        return sum(_num_bytes(element) for element in batch)

    def get_metrics_namespace(self) -> str:
        """The namespace of RunInference's metrics, Beam's for this handler."""
        return self._namespace


def _parameters(cls: type) -> list[str]:
    import inspect

    return [name for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD]


def _model_type(owner: str, model_type: Any) -> ModelType:
    if isinstance(model_type, ModelType):
        return model_type
    name = getattr(model_type, "name", None)  # Beam's own ModelType, where it is installed
    if isinstance(model_type, enum.Enum) and name in ModelType.__members__:
        return ModelType[name]
    raise ConfigurationError(
        f"{owner}(model_type=...) takes ModelType.SAVED_MODEL or ModelType.SAVED_WEIGHTS; "
        f"got {detail(repr(model_type))}.")


def _num_bytes(element: Any) -> int:
    if isinstance(element, numpy.ndarray):
        return int(element.nbytes)
    if isinstance(element, tf.Tensor) and hasattr(element, "numpy"):
        if element.dtype == tf.string:
            return int(sum(len(v) for v in numpy.ravel(element.numpy())))
        return int(element.shape.num_elements() or 0) * element.dtype.size
    return sys.getsizeof(element)


# Both handlers take Beam's constructor arguments, in Beam's order with Beam's defaults
# (``inspect.signature`` equal to Beam's, which tests check); they differ only in the
# default ``inference_fn``. One function serves both, with that default replaced.
def _init(
        self,
        model_uri: str,
        model_type: ModelType = ModelType.SAVED_MODEL,
        create_model_fn: Callable | None = None,
        *,
        load_model_args: dict[str, Any] | None = None,
        custom_weights: str = "",
        inference_fn: TensorInferenceFn = default_numpy_inference_fn,
        min_batch_size: int | None = None,
        max_batch_size: int | None = None,
        max_batch_duration_secs: int | None = None,
        large_model: bool = False,
        model_copies: int | None = None,
        max_batch_weight: int | None = None,
        element_size_fn: Callable[[Any], int] | None = None,
        batch_length_fn: Callable[[Any], int] | None = None,
        batch_bucket_boundaries: list[int] | None = None,
        model_cache: ModelCache | None = None,
        **kwargs: Any):
    _TFModelHandler.__init__(
        self, type(self).__name__, model_uri, model_type, create_model_fn,
        load_model_args=load_model_args, custom_weights=custom_weights,
        inference_fn=inference_fn, model_cache=model_cache, kwargs=kwargs,
        batching=dict(
            min_batch_size=min_batch_size, max_batch_size=max_batch_size,
            max_batch_duration_secs=max_batch_duration_secs,
            max_batch_weight=max_batch_weight, element_size_fn=element_size_fn,
            batch_length_fn=batch_length_fn,
            batch_bucket_boundaries=batch_bucket_boundaries,
            large_model=large_model, model_copies=model_copies))


def _with_defaults(function: Callable, **defaults: Any) -> Callable:
    """A copy of ``function`` whose keyword-only defaults ``defaults`` are replaced."""
    copy = types.FunctionType(function.__code__, function.__globals__, function.__name__,
                              function.__defaults__, function.__closure__)
    copy.__kwdefaults__ = {**function.__kwdefaults__, **defaults}
    copy.__qualname__ = function.__qualname__
    copy.__annotations__ = dict(function.__annotations__)
    return copy


class TFModelHandlerNumpy(_TFModelHandler, ModelHandler[numpy.ndarray, PredictionResult,
                                                        tf.Module]):
    """Beam's ``TFModelHandlerNumpy``: numpy arrays in, ``PredictionResult`` out.

    Example:
        >>> from apache_beam.ml.inference.base import RunInference
        >>> handler = TFModelHandlerNumpy(model_uri="gs://bucket/models/m.keras")
        >>> # results = arrays | RunInference(handler)

    Constructor arguments (Beam's, in Beam's order):
        model_uri: the model: a ``.keras`` or ``.h5`` file or a SavedModel directory, or
            the weights file with ``ModelType.SAVED_WEIGHTS``; local or on any Beam
            filesystem. It is each result's ``model_id``.
        model_type: ``ModelType.SAVED_MODEL`` (default) or ``ModelType.SAVED_WEIGHTS``.
        create_model_fn: builds the model that ``SAVED_WEIGHTS`` weights are loaded into.
        load_model_args: keywords for ``tf.keras.models.load_model`` (e.g.
            ``{"safe_mode": False}`` for a ``.keras`` file with a ``Lambda`` layer).
        custom_weights: weights loaded into the model after it is loaded.
        inference_fn: ``fn(model, batch, inference_args, model_id)`` returning the
            results; default ``default_numpy_inference_fn``.
        min_batch_size: the smallest batch ``BatchElements`` makes.
        max_batch_size: the largest batch ``BatchElements`` makes.
        max_batch_duration_secs: how long a batch may wait to fill (streaming).
        large_model: share one model per machine across processes.
        model_copies: share this many copies per machine across processes.
        max_batch_weight: the largest total weight of a batch (with ``element_size_fn``).
        element_size_fn: an element's weight.
        batch_length_fn: an element's length, for length-aware batching.
        batch_bucket_boundaries: the length buckets of length-aware batching.
        model_cache: where remote model directories are copied (beam_infer's addition);
            default ``bi.ModelCache()``.
        **kwargs: ``env_vars``: environment variables set before the model loads.

    Raises:
        UnknownArgumentError: a keyword neither Beam nor beam_infer takes.
        ConfigurationError: a ``model_uri``, ``model_type`` or function of the wrong kind.
    """

    _namespace = "BeamML_TF_Numpy"
    __init__ = _init


class TFModelHandlerTensor(_TFModelHandler, ModelHandler[tf.Tensor, PredictionResult,
                                                         tf.Module]):
    """Beam's ``TFModelHandlerTensor``: ``tf.Tensor``s in, ``PredictionResult`` out.

    Takes what ``TFModelHandlerNumpy`` takes; the default ``inference_fn`` is
    ``default_tensor_inference_fn``.

    Example:
        >>> handler = TFModelHandlerTensor(model_uri="/models/m.keras", max_batch_size=64)

    Raises:
        UnknownArgumentError: a keyword neither Beam nor beam_infer takes.
        ConfigurationError: a ``model_uri``, ``model_type`` or function of the wrong kind.
    """

    _namespace = "BeamML_TF_Tensor"
    # Beam's signature, with this handler's default inference_fn.
    __init__ = _with_defaults(_init, inference_fn=default_tensor_inference_fn)
