"""Where the models of Beam's TF handlers come from (``_beam_api``'s loading).

``resolve_handle`` does what Beam's ``hub.resolve`` does (``tensorflow_hub`` when it is
installed; without it a web address fails saying so, anything else is a path).
``local_path`` gives a local path for a URI while a ``with`` block runs: local paths in
place; remote SavedModel directories from beam_infer's model cache (``_model_cache``);
remote files, or a checkpoint prefix's files, copied into a fresh private temporary
directory (mode 0700, files created exclusively, no links followed) removed afterwards,
because Keras reads a model file whole. ``load_whole_model`` loads a ``.keras`` / ``.h5``
file or a SavedModel directory (under Keras 3: ``tf_keras`` for a Keras 2 SavedModel,
else ``tf.saved_model.load``), ``load_weights`` a model's weights. Every failure is a
``TFModelLoadError`` (a ``ValueError``, as Beam raises, and a ``bi.ModelLoadError``) or a
``ModelPathError`` for a path with nothing there, with bounded text saying what was found
and what to pass instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import tensorflow as tf
from apache_beam.io.filesystems import FileSystems

from beam_infer._config import ModelCache
from beam_infer._errors import ModelLoadError, ModelPathError
from beam_infer._messages import bounded, detail, sentence
from beam_infer.saved_model import _model_cache

_LOG = logging.getLogger(__name__)

_VERSION = re.compile(r"^\d+$")
_CHECKPOINT_PART = re.compile(r"\.(index|data-\d{5}-of-\d{5})$")


class TFModelLoadError(ModelLoadError, ValueError):
    """A model or its weights could not be loaded by a ``TFModelHandler*``.

    A ``ValueError``, which Beam's handlers raise for a failed load, and a
    ``bi.ModelLoadError``, which beam_infer's own loads raise.
    """


def load_weights(model: Any, weights_uri: str, model_cache: ModelCache | None) -> None:
    with local_path(weights_uri, model_cache, what="weights", prefix_ok=True) as local:
        try:
            model.load_weights(local)
        except Exception as e:  # Keras raises many kinds; report each with the path
            raise TFModelLoadError(bounded(
                f"model.load_weights failed for {weights_uri!r}: {type(e).__name__}: "
                f"{sentence(e)} Check that the weights were saved from a model built like "
                "this one (model.save_weights), in a format this Keras reads (Keras 3: "
                ".weights.h5)."
            )) from e


def resolve_handle(uri: str) -> str:
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
            f"{uri!r}: {type(e).__name__}: {sentence(e)} Check the handle, or download "
            "the model and pass its path."
        )) from e


@contextlib.contextmanager
def local_path(uri: str, cache: ModelCache | None, *, what: str,
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
                    f"{sentence(e)} Check that workers can read the path and have "
                    "disk space in the temp directory."
                )) from e
        yield os.path.join(folder, base)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def load_whole_model(local: str, uri: str, load_model_args: dict[str, Any]) -> Any:
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
            f"{sentence(e)} {hint or _FORMATS}"
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
