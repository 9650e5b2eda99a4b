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
replace it keep working.

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

import contextlib
import enum
import logging
import os
import posixpath
import re
import shutil
import sys
import tempfile
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy
import tensorflow as tf
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from beam_infer._config import ModelCache
from beam_infer._errors import (
    ConfigurationError,
    InputError,
    ModelLoadError,
    ModelPathError,
    UnknownArgumentError,
)
from beam_infer._keywords import unknown_message
from beam_infer._messages import bounded, detail, first_line
from beam_infer.saved_model import _devices, _model_cache

__all__ = [
    "ModelType",
    "TFModelHandlerNumpy",
    "TFModelHandlerTensor",
    "default_numpy_inference_fn",
    "default_tensor_inference_fn",
]

_LOG = logging.getLogger(__name__)

TensorInferenceFn = Callable[
    [tf.Module, Sequence[numpy.ndarray | tf.Tensor], dict[str, Any], str | None],
    Iterable[PredictionResult]]

_KNOWN_KWARGS = ("env_vars",)  # the only keyword Beam's ModelHandler reads from **kwargs
_VERSION = re.compile(r"^\d+$")
_CHECKPOINT_PART = re.compile(r"\.(index|data-\d{5}-of-\d{5})$")


class ModelType(enum.Enum):
    """How ``model_uri`` is loaded, as Beam's ``ModelType``.

    Attributes:
        SAVED_MODEL: a whole model: a ``.keras`` or ``.h5`` file or a SavedModel directory.
        SAVED_WEIGHTS: weights only; ``create_model_fn()`` builds the model and
            ``model.load_weights(model_uri)`` fills it.
    """

    SAVED_MODEL = 1
    SAVED_WEIGHTS = 2


class TFModelLoadError(ModelLoadError, ValueError):
    """A model or its weights could not be loaded by a ``TFModelHandler*``.

    A ``ValueError``, which Beam's handlers raise for a failed load, and a
    ``bi.ModelLoadError``, which beam_infer's own loads raise.
    """


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
            f"array: {type(e).__name__}: {_sentence(e)} Found {detail(', '.join(shapes))}. "
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


# --- loading ------------------------------------------------------------------------------


def _load_model(model_uri: str, custom_weights: str, load_model_args: dict[str, Any],
                model_cache: ModelCache | None = None) -> Any:
    """Loads a whole model (Beam's ``_load_model``), then ``custom_weights`` if given.

    Raises:
        ValueError: a ``ModelPathError`` when nothing is at ``model_uri``, else a
            ``ModelLoadError`` saying why the load failed.
    """
    uri = _resolve_handle(os.fspath(model_uri))
    with _local_path(uri, model_cache, what="model_uri") as local:
        model = _load_whole_model(local, uri, load_model_args)
    if custom_weights:
        if not hasattr(model, "load_weights"):
            raise TFModelLoadError(bounded(
                f"custom_weights={custom_weights!r} needs a Keras model, but {uri!r} loaded "
                f"as {type(model).__name__} (a SavedModel that Keras cannot load), which has "
                "no load_weights. Save the model as a .keras file, or load the weights into "
                "it inside create_model_fn with ModelType.SAVED_WEIGHTS."
            ))
        _load_weights(model, os.fspath(custom_weights), model_cache)
    return model


def _load_model_from_weights(create_model_fn: Callable[[], Any], weights_path: str,
                             model_cache: ModelCache | None = None) -> Any:
    """``create_model_fn()``, then its weights from ``weights_path`` (Beam's function)."""
    model = create_model_fn()
    _load_weights(model, os.fspath(weights_path), model_cache)
    return model


def _load_weights(model: Any, weights_uri: str, model_cache: ModelCache | None) -> None:
    with _local_path(weights_uri, model_cache, what="weights", prefix_ok=True) as local:
        try:
            model.load_weights(local)
        except Exception as e:  # Keras raises many kinds; report each with the path
            raise TFModelLoadError(bounded(
                f"model.load_weights failed for {weights_uri!r}: {type(e).__name__}: "
                f"{_sentence(e)} Check that the weights were saved from a model built like "
                "this one (model.save_weights), in a format this Keras reads (Keras 3: "
                ".weights.h5)."
            )) from e


def _resolve_handle(uri: str) -> str:
    """What Beam's ``hub.resolve(uri)`` returns; see the module docstring."""
    try:
        import tensorflow_hub as hub
    except ImportError:
        if uri.startswith(("http://", "https://")):
            raise TFModelLoadError(bounded(
                f"Unable to load the TensorFlow model: model_uri {uri!r} is a web address "
                "(a TF Hub or Kaggle handle), and downloading one needs tensorflow_hub, "
                "which is not installed. Download the model and pass its local path or a "
                "Beam filesystem URI (gs://...), or pip install tensorflow_hub."
            )) from None
        return uri
    try:
        return hub.resolve(uri)
    except Exception as e:  # any download or archive error, as Beam reports it
        raise TFModelLoadError(bounded(
            f"Unable to load the TensorFlow model: tensorflow_hub could not resolve "
            f"{uri!r}: {type(e).__name__}: {_sentence(e)} Check the handle, or download "
            "the model and pass its path."
        )) from e


@contextlib.contextmanager
def _local_path(uri: str, cache: ModelCache | None, *, what: str,
                prefix_ok: bool = False) -> Iterator[str]:
    """A local path holding ``uri`` while the ``with`` block runs.

    Local paths are used in place; remote directories come from the model cache; remote
    files (or, with ``prefix_ok``, a checkpoint prefix's files) are copied to a private
    temporary directory that is removed afterwards.
    """
    if _model_cache.is_local(uri):
        local = uri.removeprefix("file://")
        if not (os.path.exists(local) or (prefix_ok and _local_prefix_files(local))):
            raise ModelPathError(_missing_message(uri, what, _local_children(local)))
        yield local
        return
    files = _remote_files(uri, prefix_ok)
    if files:
        with _temporary_copy(uri, files) as local:
            yield local
        return
    if _remote_children(uri) == []:  # None: it cannot be listed; the copy says why
        raise ModelPathError(_missing_message(uri, what, _remote_children(_parent(uri)) or []))
    try:
        with _model_cache.local_copy(uri, cache) as local:
            try:
                yield local
            except TFModelLoadError:
                _model_cache.forget(uri, cache)  # a copy taken mid-upload is not reused
                raise
    except ModelLoadError as e:
        if isinstance(e, ValueError):
            raise
        raise TFModelLoadError(str(e)) from e


def _sentence(error: BaseException) -> str:
    """An error's first line (bounded), ending with one full stop."""
    return first_line(error).rstrip(". ") + "."


def _missing_message(uri: str, what: str, siblings: list[str]) -> str:
    near = f" Its folder holds: {detail(', '.join(sorted(siblings)[:20]))}." if siblings else ""
    return bounded(
        f"{what} {uri!r} does not exist on this worker: nothing is there.{near} Pass the "
        "path of a .keras or .h5 file or of a SavedModel directory (the folder that holds "
        "saved_model.pb), on local disk or any Beam filesystem (gs://, s3://, ...), that "
        "stays in place while the job runs."
    )


def _remote_files(uri: str, prefix_ok: bool) -> list[str]:
    """The remote object named ``uri`` (or, with ``prefix_ok``, ``uri.*`` checkpoint parts)."""
    if uri.endswith("/"):
        return []
    patterns = [uri] + ([uri + ".*"] if prefix_ok else [])
    try:
        results = FileSystems.match(patterns)
    except Exception:  # noqa: BLE001 - a scheme that cannot list is reported by the copy
        return []
    exact = [m.path for m in results[0].metadata_list if m.path == uri]
    if exact or not prefix_ok:
        return exact
    return [m.path for m in results[1].metadata_list
            if _CHECKPOINT_PART.search(m.path[len(uri):])]


def _remote_children(uri: str) -> list[str] | None:
    """The first name parts under ``uri`` (object stores list objects, not folders).

    None when the filesystem cannot list it (its own error is reported by the copy).
    """
    prefix = uri.rstrip("/") + "/"
    try:
        matches = FileSystems.match([prefix + "**"], limits=[1000])[0].metadata_list
    except Exception:  # noqa: BLE001 - only used to pick the message
        return None
    return sorted({m.path[len(prefix):].split("/", 1)[0] for m in matches} - {""})


def _parent(uri: str) -> str:
    return posixpath.dirname(uri.rstrip("/"))


def _local_children(path: str) -> list[str]:
    parent = os.path.dirname(os.path.abspath(path))
    with contextlib.suppress(OSError):
        return os.listdir(parent)
    return []


def _local_prefix_files(prefix: str) -> list[str]:
    folder, name = os.path.split(os.path.abspath(prefix))
    with contextlib.suppress(OSError):
        return [n for n in os.listdir(folder)
                if n.startswith(name) and _CHECKPOINT_PART.search(n[len(name):])]
    return []


@contextlib.contextmanager
def _temporary_copy(uri: str, sources: list[str]) -> Iterator[str]:
    """Copies remote files into a fresh private directory; yields the local ``uri``."""
    folder = tempfile.mkdtemp(prefix="beam_infer-file-")  # mode 0700
    try:
        base = posixpath.basename(uri)
        for source in sources:
            target = os.path.join(folder, base + source[len(uri):])
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                with FileSystems.open(source) as src, \
                        os.fdopen(os.open(target, flags, 0o600), "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except Exception as e:  # any filesystem's error
                raise TFModelLoadError(bounded(
                    f"could not copy {source!r} to local disk: {type(e).__name__}: "
                    f"{_sentence(e)} Check that workers can read the path and have "
                    "disk space in the temp directory."
                )) from e
        yield os.path.join(folder, base)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _load_whole_model(local: str, uri: str, load_model_args: dict[str, Any]) -> Any:
    hint = _path_hint(local, uri)
    if hint and (os.path.isdir(local) or os.path.basename(local) in _SAVED_MODEL_FILES):
        raise ModelPathError(hint)  # certainly not loadable: say what to pass instead
    try:
        if os.path.isdir(local) and _keras_major() >= 3:
            return _load_saved_model_dir(local, load_model_args)
        return tf.keras.models.load_model(local, **load_model_args)
    except Exception as e:  # Keras and TensorFlow raise many kinds; Beam wraps them all
        raise TFModelLoadError(bounded(
            f"Unable to load the TensorFlow model {uri!r}: {type(e).__name__}: "
            f"{_sentence(e)} {hint or _FORMATS}"
        )) from e


_SAVED_MODEL_FILES = (tf.saved_model.SAVED_MODEL_FILENAME_PB,
                      tf.saved_model.SAVED_MODEL_FILENAME_PBTXT)
_FORMATS = ("Pass a .keras or .h5 file saved with model.save(...), or a SavedModel "
            "directory written with tf.saved_model.save(...) or model.export(...).")


def _path_hint(local: str, uri: str) -> str | None:
    """What to pass instead when ``uri`` is certainly not a whole model, else None."""
    name = os.path.basename(local.rstrip("/"))
    if name in _SAVED_MODEL_FILES:
        return (f"model_uri {uri!r} is the {name} file of a SavedModel; pass its folder "
                f"instead: model_uri={_parent(uri)!r}.")
    if name.endswith(".weights.h5") or _CHECKPOINT_PART.search(name):
        return (f"model_uri {uri!r} looks like a weights file, not a whole model. Pass "
                "model_type=ModelType.SAVED_WEIGHTS with create_model_fn= a function that "
                "builds the model, or load a whole model and pass this as custom_weights=.")
    if os.path.isdir(local) and not any(
            os.path.exists(os.path.join(local, f)) for f in _SAVED_MODEL_FILES):
        found = sorted(os.listdir(local))
        versions = sorted((f for f in found if _VERSION.match(f)), key=int)
        if versions:
            return (f"model_uri {uri!r} holds numbered version folders ({', '.join(versions)})"
                    f", not a model; point it at one of them, e.g. "
                    f"{posixpath.join(uri, versions[-1])!r}.")
        listed = detail(", ".join(found[:20])) if found else "an empty directory"
        return (f"model_uri {uri!r} is a directory without saved_model.pb (found: {listed}). "
                + _FORMATS)
    return None


def _keras_major() -> int:
    version = str(getattr(tf.keras, "__version__", "2"))
    return int(version.split(".", 1)[0]) if version[:1].isdigit() else 2


def _load_saved_model_dir(local: str, load_model_args: dict[str, Any]) -> Any:
    """A SavedModel directory under Keras 3, which ``load_model`` refuses."""
    if os.path.exists(os.path.join(local, "keras_metadata.pb")):
        try:
            import tf_keras
        except ImportError:
            _LOG.info("tf_keras is not installed; loading %s with tf.saved_model.load", local)
        else:
            return tf_keras.models.load_model(local, **load_model_args)
    # tf.saved_model.load takes only these; Keras' options (compile, custom_objects,
    # safe_mode) have no meaning for it.
    args = {k: v for k, v in load_model_args.items() if k in ("tags", "options")}
    return tf.saved_model.load(local, **args)


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
