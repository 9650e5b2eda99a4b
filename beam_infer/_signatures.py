"""Reading a SavedModel's MetaGraphs and SignatureDefs, and choosing the inference API.

The choice follows TensorFlow Serving: a signature's ``method_name`` says predict,
classify or regress; several classify/regress signatures asked for together form one
multi-inference call. Everything here reads ``saved_model.pb`` only, so it runs while
the pipeline is built, before any worker exists.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import posixpath

import tensorflow as tf
from apache_beam.io.filesystems import FileSystems
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from beam_infer._config import ModelSpec
from beam_infer._errors import ModelPathError, SignatureError, TagsError
from beam_infer._versions import version_number

PREDICT = tf.saved_model.PREDICT_METHOD_NAME
CLASSIFY = tf.saved_model.CLASSIFY_METHOD_NAME
REGRESS = tf.saved_model.REGRESS_METHOD_NAME


class Feed(enum.Enum):
    """What a predict signature is fed.

    ``EXAMPLES``: one DT_STRING input fed serialized ``tf.train.Example``s (every
    classify/regress signature, and a predict signature whose only input is a string).
    ``TENSORS``: named tensors stacked from the elements (any other predict signature).
    A one-string-input predict signature is planned as ``EXAMPLES`` but takes raw string
    tensors too when the elements are ``str``, ``np.ndarray``, ``dict`` or ``tf.Tensor``.
    """

    EXAMPLES = "examples"
    TENSORS = "tensors"


class Operation(enum.Enum):
    """The TF Serving API a set of signatures is served with."""

    PREDICT = "predict"
    CLASSIFY = "classify"
    REGRESS = "regress"
    MULTI_INFERENCE = "multi_inference"


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One named input or output of a signature."""

    alias: str
    dtype: tf.dtypes.DType
    shape: tuple[int | None, ...] | None  # None: unknown rank

    def describe(self) -> str:
        """``examples: string[?]``-style text, as errors and ``inspect`` print it."""
        if self.shape is None:
            dims = "<unknown rank>"
        else:
            dims = "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"
        return f"{self.alias}: {self.dtype.name}{dims}"


@dataclasses.dataclass(frozen=True)
class Signature:
    """A SignatureDef reduced to what inference needs."""

    name: str
    method_name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def input(self, alias: str) -> TensorInfo | None:
        return next((t for t in self.inputs if t.alias == alias), None)

    def output(self, alias: str) -> TensorInfo | None:
        return next((t for t in self.outputs if t.alias == alias), None)

    def describe(self) -> str:
        ins = ", ".join(t.describe() for t in self.inputs) or "none"
        outs = ", ".join(t.describe() for t in self.outputs) or "none"
        return f"{self.name} ({self.method_name}; inputs: {ins}; outputs: {outs})"


@dataclasses.dataclass(frozen=True)
class SignaturePlan:
    """The signatures one RunInference step calls, and how.

    Attributes:
        operation: The TF Serving API whose PredictionLog layout is produced.
        signatures: The signatures called, in the order they were asked for.
        input_alias: The alias of the first input (the one string input fed serialized
            examples when ``feed`` is ``EXAMPLES``).
        feed: Whether elements are fed as serialized examples or as named tensors.
    """

    operation: Operation
    signatures: tuple[Signature, ...]
    input_alias: str
    feed: Feed = Feed.EXAMPLES


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


def signatures_of(meta_graph: meta_graph_pb2.MetaGraphDef) -> dict[str, Signature]:
    """Every SignatureDef of a MetaGraph, sorted by name."""
    return {
        name: Signature(
            name=name,
            method_name=sig.method_name,
            inputs=tuple(_tensor_info(a, t) for a, t in sorted(sig.inputs.items())),
            outputs=tuple(_tensor_info(a, t) for a, t in sorted(sig.outputs.items())),
        )
        for name, sig in sorted(meta_graph.signature_def.items())
        if not name.startswith("__")  # e.g. __saved_model_init_op
    }


def plan_signatures(spec: ModelSpec) -> SignaturePlan:
    """Reads the model behind ``spec`` and decides how its signatures are served.

    Raises:
        ModelPathError, TagsError: see ``read_saved_model`` and ``select_meta_graph``.
        SignatureError: a signature is missing, or cannot be fed.
    """
    saved_model = read_saved_model(spec.model_path)
    meta_graph = select_meta_graph(saved_model, spec.effective_tags, spec.model_path)
    available = signatures_of(meta_graph)
    chosen = []
    for name in spec.effective_signature_names:
        if name not in available:
            raise SignatureError(
                f"signature {name!r} not found in {spec.model_path}; available: "
                f"{', '.join(available) or 'none'}. Pass one of them as "
                "ModelSpec(signature_names=(...)) (saved_model_spec.signature_name)."
            )
        chosen.append(available[name])
    if len(set(spec.effective_signature_names)) != len(chosen):
        raise SignatureError(
            f"signature_names lists a signature twice: {spec.effective_signature_names}; "
            "name each signature once."
        )
    feeds = [_feed(signature, spec.model_path) for signature in chosen]
    for signature in chosen:
        _check_method_outputs(signature, spec.model_path)
    return SignaturePlan(
        operation=_operation(chosen, spec.model_path),
        signatures=tuple(chosen),
        input_alias=chosen[0].inputs[0].alias,
        feed=feeds[0],
    )


def _operation(chosen: list[Signature], model_path: str) -> Operation:
    methods = [s.method_name for s in chosen]
    if len(chosen) == 1:
        return {PREDICT: Operation.PREDICT, CLASSIFY: Operation.CLASSIFY,
                REGRESS: Operation.REGRESS}[methods[0]]
    if any(m == PREDICT for m in methods):
        listed = ", ".join(f"{s.name} ({s.method_name})" for s in chosen)
        raise SignatureError(
            f"several signatures were asked of {model_path}: {listed}; only classify and "
            "regress signatures combine into one multi-inference call. Run predict "
            "signatures in separate RunInference steps."
        )
    return Operation.MULTI_INFERENCE


def _feed(signature: Signature, model_path: str) -> Feed:
    """EXAMPLES for one string input; TENSORS for any other predict signature."""
    if signature.method_name not in (PREDICT, CLASSIFY, REGRESS):
        raise SignatureError(
            f"signature {signature.name!r} in {model_path} has method_name "
            f"{signature.method_name!r}; beam_infer serves {PREDICT}, {CLASSIFY} and "
            f"{REGRESS} signatures. Re-export the model with one of those."
        )
    if len(signature.inputs) == 1 and signature.inputs[0].dtype == tf.string:
        expected = tf.saved_model.CLASSIFY_INPUTS
        if signature.method_name != PREDICT and signature.inputs[0].alias != expected:
            raise SignatureError(
                f"signature {signature.name!r} in {model_path} is a "
                f"{signature.method_name} signature whose input is named "
                f"{signature.inputs[0].alias!r}; TensorFlow Serving requires {expected!r}."
            )
        return Feed.EXAMPLES
    if signature.method_name == PREDICT and signature.inputs:
        return Feed.TENSORS
    if signature.method_name == PREDICT:
        raise SignatureError(
            f"signature {signature.name!r} in {model_path} takes no inputs; RunInference "
            "feeds each element to a signature input. Export a signature with at least one "
            "input, or pick another with ModelSpec(signature_names=...)."
        )
    raise SignatureError(
        f"signature {signature.name!r} in {model_path} takes "
        f"{', '.join(t.describe() for t in signature.inputs) or 'no inputs'}; "
        "RunInference feeds tf.train.Example, tf.train.SequenceExample or bytes as one "
        "1-D string tensor, so the signature must have exactly one string input. Export "
        "a signature that parses serialized examples (tf.io.parse_example), or pick "
        "another with ModelSpec(signature_names=...)."
    )


def _check_method_outputs(signature: Signature, model_path: str) -> None:
    if signature.method_name == CLASSIFY:
        classes = signature.output(tf.saved_model.CLASSIFY_OUTPUT_CLASSES)
        scores = signature.output(tf.saved_model.CLASSIFY_OUTPUT_SCORES)
        problems = []
        if classes is None and scores is None:
            problems.append("it has neither a 'classes' nor a 'scores' output")
        if classes is not None and classes.dtype != tf.string:
            problems.append(f"'classes' is {classes.dtype.name}, not string")
        if scores is not None and scores.dtype != tf.float32:
            problems.append(f"'scores' is {scores.dtype.name}, not float32")
    elif signature.method_name == REGRESS:
        outputs = signature.output(tf.saved_model.REGRESS_OUTPUTS)
        problems = []
        if outputs is None:
            problems.append("it has no 'outputs' output")
        elif outputs.dtype != tf.float32:
            problems.append(f"'outputs' is {outputs.dtype.name}, not float32")
    else:
        return
    if problems:
        raise SignatureError(
            f"{signature.method_name} signature {signature.name!r} in {model_path} cannot "
            f"be served: {'; '.join(problems)}. Found {signature.describe()}. Export it "
            "with tf.compat.v1.saved_model.classification_signature_def / "
            "regression_signature_def, or serve it as a predict signature."
        )


def _tensor_info(alias: str, info: meta_graph_pb2.TensorInfo) -> TensorInfo:
    shape = None
    if not info.tensor_shape.unknown_rank:
        shape = tuple(None if d.size < 0 else d.size for d in info.tensor_shape.dim)
    return TensorInfo(alias=alias, dtype=tf.dtypes.as_dtype(info.dtype), shape=shape)


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
