"""Signatures as inference sees them, and the plan of how they are served.

``signatures_of`` turns SignatureDefs (a SavedModel's, read by
``saved_model._files``, or a model server's metadata) into ``Signature``s; ``plan``
chooses the inference API the way TensorFlow Serving does: a signature's
``method_name`` says predict, classify or regress; several classify/regress signatures
asked for together form one multi-inference call. Nothing here reads files or calls a
server: every backend plans the same way.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence

import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from beam_infer._errors import SignatureError

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


def signatures_of(signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]
                  ) -> dict[str, Signature]:
    """Every SignatureDef (of a MetaGraph, or a model server's metadata), sorted by name."""
    return {
        name: Signature(
            name=name,
            method_name=sig.method_name,
            inputs=tuple(_tensor_info(a, t) for a, t in sorted(sig.inputs.items())),
            outputs=tuple(_tensor_info(a, t) for a, t in sorted(sig.outputs.items())),
        )
        for name, sig in sorted(signature_defs.items())
        if not name.startswith("__")  # e.g. __saved_model_init_op
    }


def plan(available: Mapping[str, Signature], signature_names: Sequence[str], where: str
         ) -> SignaturePlan:
    """Decides how the signatures asked for are served, from what the model offers.

    Args:
        available: The model's signatures by name (see ``signatures_of``).
        signature_names: The signatures asked for, in order.
        where: The model, as messages name it (a path, an endpoint).

    Raises:
        SignatureError: a signature is missing, named twice, or cannot be fed.
    """
    chosen = []
    for name in signature_names:
        if name not in available:
            raise SignatureError(
                f"signature {name!r} not found in {where}; available: "
                f"{', '.join(available) or 'none'}. Pass one of them as "
                "ModelSpec(signature_names=(...)) (saved_model_spec.signature_name)."
            )
        chosen.append(available[name])
    if len(set(signature_names)) != len(chosen):
        raise SignatureError(
            f"signature_names lists a signature twice: {tuple(signature_names)}; "
            "name each signature once."
        )
    feeds = [_feed(signature, where) for signature in chosen]
    for signature in chosen:
        _check_method_outputs(signature, where)
    return SignaturePlan(
        operation=_operation(chosen, where),
        signatures=tuple(chosen),
        input_alias=chosen[0].inputs[0].alias,
        feed=feeds[0],
    )


def _operation(chosen: list[Signature], where: str) -> Operation:
    methods = [s.method_name for s in chosen]
    if len(chosen) == 1:
        return {PREDICT: Operation.PREDICT, CLASSIFY: Operation.CLASSIFY,
                REGRESS: Operation.REGRESS}[methods[0]]
    if any(m == PREDICT for m in methods):
        listed = ", ".join(f"{s.name} ({s.method_name})" for s in chosen)
        raise SignatureError(
            f"several signatures were asked of {where}: {listed}; only classify and "
            "regress signatures combine into one multi-inference call. Run predict "
            "signatures in separate RunInference steps."
        )
    return Operation.MULTI_INFERENCE


def _feed(signature: Signature, where: str) -> Feed:
    """EXAMPLES for one string input; TENSORS for any other predict signature."""
    if signature.method_name not in (PREDICT, CLASSIFY, REGRESS):
        raise SignatureError(
            f"signature {signature.name!r} in {where} has method_name "
            f"{signature.method_name!r}; beam_infer serves {PREDICT}, {CLASSIFY} and "
            f"{REGRESS} signatures. Re-export the model with one of those."
        )
    if len(signature.inputs) == 1 and signature.inputs[0].dtype == tf.string:
        expected = tf.saved_model.CLASSIFY_INPUTS
        if signature.method_name != PREDICT and signature.inputs[0].alias != expected:
            raise SignatureError(
                f"signature {signature.name!r} in {where} is a "
                f"{signature.method_name} signature whose input is named "
                f"{signature.inputs[0].alias!r}; TensorFlow Serving requires {expected!r}."
            )
        return Feed.EXAMPLES
    if signature.method_name == PREDICT and signature.inputs:
        return Feed.TENSORS
    if signature.method_name == PREDICT:
        raise SignatureError(
            f"signature {signature.name!r} in {where} takes no inputs; RunInference "
            "feeds each element to a signature input. Export a signature with at least one "
            "input, or pick another with ModelSpec(signature_names=...)."
        )
    raise SignatureError(
        f"signature {signature.name!r} in {where} takes "
        f"{', '.join(t.describe() for t in signature.inputs) or 'no inputs'}; "
        "RunInference feeds tf.train.Example, tf.train.SequenceExample or bytes as one "
        "1-D string tensor, so the signature must have exactly one string input. Export "
        "a signature that parses serialized examples (tf.io.parse_example), or pick "
        "another with ModelSpec(signature_names=...)."
    )


def _check_method_outputs(signature: Signature, where: str) -> None:
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
            f"{signature.method_name} signature {signature.name!r} in {where} cannot "
            f"be served: {'; '.join(problems)}. Found {signature.describe()}. Export it "
            "with tf.compat.v1.saved_model.classification_signature_def / "
            "regression_signature_def, or serve it as a predict signature."
        )


def _tensor_info(alias: str, info: meta_graph_pb2.TensorInfo) -> TensorInfo:
    shape = None
    if not info.tensor_shape.unknown_rank:
        shape = tuple(None if d.size < 0 else d.size for d in info.tensor_shape.dim)
    return TensorInfo(alias=alias, dtype=tf.dtypes.as_dtype(info.dtype), shape=shape)


