"""The SavedModel on disk: ``saved_model.pb`` read from any Beam filesystem, a MetaGraph
chosen by its tags, and its signatures planned (see ``beam_infer._signatures``).

Everything here reads ``saved_model.pb`` only, so it runs while the pipeline is built,
before any worker exists. Listings and file names come from storage and are untrusted:
messages escape and cut them.
"""

from __future__ import annotations

import os
import posixpath

import tensorflow as tf
from apache_beam.io.filesystems import FileSystems
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from beam_infer._config import ModelSpec
from beam_infer._errors import ModelPathError, TagsError
from beam_infer._signatures import Signature, SignaturePlan, plan, signatures_of
from beam_infer.saved_model._versions import version_number


def read_saved_model(model_path: str) -> saved_model_pb2.SavedModel:
    """Parses ``saved_model.pb`` (or ``.pbtxt``) under ``model_path`` on any Beam filesystem.

    The model files are looked up by name, never the directory itself: object stores
    (``gs://``, ``s3://``) have no directories, and a model copied there without folder
    placeholder objects has no object named like its folder.

    Raises:
        ModelPathError: the path does not exist or holds no SavedModel.
    """
    binary = posixpath.join(model_path, tf.saved_model.SAVED_MODEL_FILENAME_PB)
    text = posixpath.join(model_path, tf.saved_model.SAVED_MODEL_FILENAME_PBTXT)
    saved_model = saved_model_pb2.SavedModel()
    if FileSystems.exists(binary):
        with FileSystems.open(binary) as f:
            saved_model.ParseFromString(f.read())
        return saved_model
    if FileSystems.exists(text):
        from google.protobuf import text_format

        with FileSystems.open(text) as f:
            text_format.Parse(f.read().decode("utf-8"), saved_model)
        return saved_model
    missing = (f"SavedModel file does not exist at: {model_path.rstrip('/')}/"
               "{saved_model.pbtxt|saved_model.pb}")
    file_hint = _model_file_hint(model_path)
    if file_hint:
        raise ModelPathError(file_hint)
    found = _list_children(model_path)
    if not found and not FileSystems.exists(model_path):
        raise ModelPathError(
            f"model path {model_path!r} does not exist: {missing}. Point model_path at a "
            "SavedModel directory (the folder that holds saved_model.pb and variables/)."
        )
    versions = sorted((c for c in found if version_number(c) is not None), key=int)
    hint = (
        f" It holds numbered version folders ({_listed(versions)}): point model_path at "
        f"one of them, e.g. {posixpath.join(model_path, versions[-1])!r}."
        if versions
        else " Export the model with tf.saved_model.save(...) or Keras model.export(...)."
    )
    raise ModelPathError(
        f"no SavedModel in {model_path!r}: {missing}; found: "
        f"{_listed(found) if found else 'an empty directory'}.{hint}"
    )


_KERAS_FILES = (".keras", ".h5", ".hdf5")


def _model_file_hint(model_path: str) -> str | None:
    """What to pass instead when ``model_path`` names a model *file*, else None."""
    if not _is_file(model_path):
        return None
    name = posixpath.basename(model_path.rstrip("/"))
    folder = posixpath.dirname(model_path.rstrip("/")) or "."
    if name in (tf.saved_model.SAVED_MODEL_FILENAME_PB, tf.saved_model.SAVED_MODEL_FILENAME_PBTXT):
        return (f"model path {model_path!r} is the {name} file of a SavedModel; pass its "
                f"folder instead: model_path={folder!r}.")
    if name.lower().endswith(_KERAS_FILES):
        return (f"model path {model_path!r} is a Keras model file, not a SavedModel "
                "directory. Export a SavedModel from it and pass that folder: "
                "keras.models.load_model(path).export('/models/m/1') (Keras 3), or "
                "tf.saved_model.save(model, '/models/m/1').")
    return (f"model path {model_path!r} is a file; model_path names the SavedModel "
            "directory, the folder that holds saved_model.pb and variables/.")


def _is_file(path: str) -> bool:
    if FileSystems.get_scheme(path) in (None, "file"):
        return os.path.isfile(path.removeprefix("file://"))
    if path.endswith("/"):
        return False
    try:  # an object store: an object of exactly this name
        return any(m.path == path for m in FileSystems.match([path])[0].metadata_list)
    except Exception:  # noqa: BLE001 - only used to pick the message
        return False


def select_meta_graph(
    saved_model: saved_model_pb2.SavedModel, tags: tuple[str, ...], model_path: str
) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraph whose tag set equals ``tags``.

    Raises:
        TagsError: no MetaGraph has exactly these tags; the message lists the tag sets.
    """
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(tags):
            return meta_graph
    available = "; ".join(
        "{" + ", ".join(sorted(m.meta_info_def.tags)) + "}" for m in saved_model.meta_graphs
    )
    raise TagsError(
        f"tags {{{', '.join(sorted(tags))}}} not found in {model_path}; available tag sets: "
        f"{available or 'none'}. Pass one of them as ModelSpec(tags=...) "
        "(saved_model_spec.tag in an InferenceSpecType)."
    )



def _list_children(path: str) -> list[str]:
    """Names directly under ``path`` (folders too), for error messages.

    On object stores a folder is a name prefix: it is found from the objects below it,
    with or without a placeholder object of its own.
    """
    if FileSystems.get_scheme(path) in (None, "file"):
        local = path.removeprefix("file://")
        return sorted(os.listdir(local)) if os.path.isdir(local) else []
    prefix = path.rstrip("/") + "/"
    try:
        matches = FileSystems.match([prefix + "**"])[0].metadata_list
    except Exception:  # noqa: BLE001 - only used to enrich an error message
        return []
    return sorted({m.path[len(prefix):].split("/")[0] for m in matches
                   if m.path.startswith(prefix)} - {""})


def _listed(names: list[str], limit: int = 20) -> str:
    """``a, b, c`` for a message: names from a listing are untrusted, so non-printable
    ones are escaped and a long listing is cut."""
    shown = [n if n.isprintable() else ascii(n) for n in names[:limit]]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(shown) + more


def read_meta_graph(model_path: str, tags: tuple[str, ...]) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraph tagged ``tags`` in the SavedModel at ``model_path``.

    Raises:
        ModelPathError, TagsError: see ``read_saved_model`` and ``select_meta_graph``.
    """
    return select_meta_graph(read_saved_model(model_path), tags, model_path)


def read_signatures(model_path: str, tags: tuple[str, ...]) -> dict[str, Signature]:
    """The signatures of the MetaGraph tagged ``tags`` in the SavedModel at ``model_path``.

    Raises:
        ModelPathError, TagsError: see ``read_saved_model`` and ``select_meta_graph``.
    """
    return signatures_of(read_meta_graph(model_path, tags).signature_def)


def plan_signatures(spec: ModelSpec) -> SignaturePlan:
    """Reads the model behind ``spec`` and decides how its signatures are served.

    Raises:
        ModelPathError, TagsError: see ``read_saved_model`` and ``select_meta_graph``.
        SignatureError: a signature is missing, or cannot be fed.
    """
    available = read_signatures(spec.model_path, spec.effective_tags)
    return plan(available, spec.effective_signature_names, spec.model_path)
