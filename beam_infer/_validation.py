"""Cheap, certain checks of each element before it reaches the model.

What a signature needs is read from the model's graph while the pipeline is built (the
backend hands it over: a SavedModel's MetaGraph; a backend without a graph, such as an
endpoint, gets the type and tensor checks only):
when the serialized input flows (through function calls and ``Identity`` only) into a
``ParseExample``/``ParseExampleV2`` op, the elements must be ``tf.train.Example``s and
the op's attributes say which features it requires, of which kind and length; the same
for a ``ParseSequenceExample(V2)``'s context features. When the graph transforms the
input first, or a parse op's keys are computed rather than constant, no feature rule
is derived and only the element's Python type is checked: a check is made only when it
is certain that the model would fail on the element too.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.framework import function_pb2, node_def_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from beam_infer import _tensors
from beam_infer._encoding import wrong_type_message
from beam_infer._errors import InputError
from beam_infer._messages import preview
from beam_infer._signatures import (
    Feed,
    Operation,
    Signature,
    SignaturePlan,
)

_KINDS = {tf.float32: "float_list", tf.int64: "int64_list", tf.string: "bytes_list"}
_KIND_NAMES = {"float_list": "float", "int64_list": "int64", "bytes_list": "bytes"}
_EXAMPLE_PARSERS = {"ParseExample", "ParseExampleV2"}
_SEQUENCE_PARSERS = {"ParseSequenceExample", "ParseSequenceExampleV2"}
_PASS_THROUGH = {"Identity", "IdentityN"}
_CALLS = {"PartitionedCall", "StatefulPartitionedCall"}


@dataclasses.dataclass(frozen=True)
class FeatureRule:
    """What one parsed feature must look like.

    Attributes:
        name: The feature key.
        kind: ``float_list``, ``int64_list`` or ``bytes_list``.
        length: The fixed number of values, or None when any number is accepted.
        required: The parse op has no default for it, so it must be present.
    """

    name: str
    kind: str
    length: int | None
    required: bool
    shape: tuple[int, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why an element cannot be scored: the stage, the error type's name and a message."""

    stage: str
    error_type: str
    message: str


@dataclasses.dataclass(frozen=True)
class Validator:
    """Checks one (unkeyed) element against what the signature takes.

    Attributes:
        signature_name: Named in messages.
        accepts_sequence_examples: False for classify/regress and Example-parsing models.
        proto: ``"Example"``, ``"SequenceExample"`` or None when the graph does not say.
        features: Rules for the parsed features (context features of a SequenceExample).
        predicts: The signature is a predict signature (named in messages).
        tensor_signature: The predict signature tensor elements are fed to: every
            element for a tensor-input signature (``feeds_tensors``), and ``str``,
            arrays, dicts and ``tf.Tensor``s for a one-string-input one (raw strings).
        feeds_tensors: Every element is fed as tensors (``Feed.TENSORS``).
        strict_casts: Tensor values are cast only losslessly
            (``ModelSpec.strict_input_casts``), as the batch will be.

    Example:
        >>> validator = Validator.for_plan(model_path, tags, plan)
        >>> validator.check(b"not a proto")  # -> Failure(stage="decode", ...)
    """

    signature_name: str
    accepts_sequence_examples: bool
    proto: str | None = None
    features: tuple[FeatureRule, ...] = ()
    predicts: bool = False
    tensor_signature: Signature | None = None
    feeds_tensors: bool = False
    strict_casts: bool = False

    @classmethod
    def for_plan(cls, plan: SignaturePlan, *,
                 meta_graph: meta_graph_pb2.MetaGraphDef | None = None,
                 strict_casts: bool = False) -> Validator:
        """The checks ``plan``'s signatures allow; feature rules from the graph if given.

        Args:
            plan: The signatures the elements are fed to.
            meta_graph: The graph behind them (a SavedModel's), whose example parsers
                give the feature rules; None (e.g. a model behind an endpoint): the type
                and tensor checks only.
            strict_casts: As ``ModelSpec.strict_input_casts``.
        """
        predicts = plan.operation is Operation.PREDICT
        first = plan.signatures[0]
        if plan.feed is Feed.TENSORS:
            return cls(signature_name=first.name, accepts_sequence_examples=False,
                       predicts=True, tensor_signature=first, feeds_tensors=True,
                       strict_casts=strict_casts)
        proto, features = _rules(meta_graph, plan) if meta_graph is not None else (None, ())
        return cls(signature_name=first.name,
                   accepts_sequence_examples=predicts and proto != "Example", proto=proto,
                   features=features, predicts=predicts,
                   tensor_signature=first if predicts else None, strict_casts=strict_casts)

    def check(self, element: Any) -> Failure | None:
        """None when the element passes every check, else why it cannot be scored."""
        if element is None:
            return Failure("decode", "InputError", (
                f"element is None; signature {self.signature_name!r} takes "
                f"{self._accepted()}. Drop or repair missing rows before RunInference."))
        if self.tensor_signature is not None and (
                self.feeds_tensors or _tensors.is_tensor_element(element)):
            return self._check_tensors(element, self.tensor_signature)
        if isinstance(element, bytes):
            return self._check_bytes(element)
        if isinstance(element, tf.train.SequenceExample) and not self.accepts_sequence_examples:
            return Failure("decode", "InputError", (
                f"got a tf.train.SequenceExample, but signature {self.signature_name!r} "
                "parses tf.train.Example; pass a tf.train.Example (or its serialized bytes)."))
        if isinstance(element, tf.train.Example | tf.train.SequenceExample):
            return self._check_features(element)
        return Failure("decode", "InputError", wrong_type_message(
            element, self.signature_name, self.accepts_sequence_examples,
            predicts=self.predicts))

    def _accepted(self) -> str:
        if self.feeds_tensors:
            return "tensors (a dict keyed by input alias, or an array for one input)"
        if self.accepts_sequence_examples:
            return "tf.train.Example, tf.train.SequenceExample or bytes"
        return "tf.train.Example or bytes"

    def _check_tensors(self, element: Any, signature: Signature) -> Failure | None:
        """The per-element half of what ``_tensors.batch_tensors`` checks for a batch.

        Raw strings fed to a signature that parses them as examples are checked as
        serialized examples too: that is what the model will do with them.
        """
        inputs = signature.inputs
        try:
            if len(inputs) > 1 or isinstance(element, Mapping):
                _tensors.check_keys(element, signature)
        except InputError as e:
            # Not a dict at all is the wrong type; a dict with the wrong keys, wrong input.
            return Failure("validate" if isinstance(element, Mapping) else "decode",
                           "InputError", str(e))
        for info in inputs:
            value = element[info.alias] if isinstance(element, Mapping) else element
            try:
                array = _tensors.as_array(value, info, signature, strict=self.strict_casts)
            except InputError as e:
                return Failure("decode", "InputError", str(e))
            except (TypeError, ValueError) as e:  # e.g. ragged nested lists
                return Failure("decode", type(e).__name__, (
                    f"input {info.alias!r} of signature {signature.name!r} takes "
                    f"{info.describe()}, but the element's value cannot be made an array: "
                    f"{e}. Pass a rectangular np.ndarray."))
            try:
                _tensors.check_row_shape(array.shape, info, signature, None)
            except InputError as e:
                return Failure("validate", "InputError", str(e))
            if not self.feeds_tensors and self.proto is not None:
                for serialized in array.ravel():
                    failure = self._check_bytes(serialized)
                    if failure is not None:
                        return failure
        return None

    def _check_bytes(self, element: bytes) -> Failure | None:
        if self.proto is None:
            return None
        proto_type = tf.train.Example if self.proto == "Example" else tf.train.SequenceExample
        try:
            parsed = proto_type.FromString(element)
        except DecodeError as e:
            return Failure("decode", "DecodeError", (
                f"{len(element)} bytes {preview(element, 40)} do not parse as a "
                f"tf.train.{self.proto} ({e}); signature {self.signature_name!r} parses "
                f"serialized tf.train.{self.proto}s. Check what the input holds (e.g. read "
                f"TFRecords with coder=beam.coders.ProtoCoder(tf.train.{self.proto}))."))
        return self._check_features(parsed)

    def _check_features(self, element: tf.train.Example | tf.train.SequenceExample
                        ) -> Failure | None:
        if not self.features:
            return None
        features = (element.features if isinstance(element, tf.train.Example)
                    else element.context).feature
        for rule in self.features:
            # TF's parser treats a Feature with no list set like a missing one.
            feature = features.get(rule.name)
            kind = feature.WhichOneof("kind") if feature is not None else None
            if kind is None:
                if rule.required:
                    found = ", ".join(sorted(features)) or "none"
                    return Failure("validate", "InputError", (
                        f"feature {rule.name!r} is missing; signature "
                        f"{self.signature_name!r} requires it ({_describe(rule)}). "
                        f"Features found: {found}."))
                continue
            if kind != rule.kind:
                return Failure("validate", "InputError", (
                    f"feature {rule.name!r} holds {_KIND_NAMES[kind]} values ({kind}); "
                    f"signature {self.signature_name!r} parses it as "
                    f"{_KIND_NAMES[rule.kind]} ({_describe(rule)}). Write it as "
                    f"tf.train.Feature({rule.kind}=...)."))
            count = len(getattr(feature, kind).value)
            if rule.length is not None and count != rule.length:
                return Failure("validate", "InputError", (
                    f"feature {rule.name!r} has {count} value{'s' * (count != 1)}; "
                    f"signature {self.signature_name!r} parses it as a fixed-length "
                    f"feature of {rule.length} ({_describe(rule)}). Pad or trim it to "
                    f"{rule.length} value{'s' * (rule.length != 1)}."))
        return None


def _describe(rule: FeatureRule) -> str:
    """``float, 1 value`` / ``int64, shape [2, 3], 6 values`` / ``bytes, any number``."""
    parts = [_KIND_NAMES[rule.kind]]
    if rule.shape is not None and len(rule.shape) != 1:
        parts.append(f"shape {list(rule.shape)}")
    parts.append("any number of values" if rule.length is None
                 else f"{rule.length} value{'s' * (rule.length != 1)}")
    return ", ".join(parts)


# --- reading the rules from the graph -------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Scope:
    """The nodes of the top-level graph or of one library function, by name."""

    nodes: Mapping[str, node_def_pb2.NodeDef]

    def consumers(self, source: str) -> Iterator[tuple[node_def_pb2.NodeDef, int]]:
        for node in self.nodes.values():
            for index, name in enumerate(node.input):
                if _producer(name) == source and _output_index(name) == 0:
                    yield node, index


def _producer(input_name: str) -> str:
    return input_name.lstrip("^").split(":")[0]


def _output_index(input_name: str) -> int:
    parts = input_name.split(":")
    return int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 0


def _rules(meta_graph: meta_graph_pb2.MetaGraphDef, plan: SignaturePlan
           ) -> tuple[str | None, tuple[FeatureRule, ...]]:
    library = {f.signature.name: f for f in meta_graph.graph_def.library.function}
    top = _Scope({n.name: n for n in meta_graph.graph_def.node})
    parsers: list[tuple[node_def_pb2.NodeDef, _Scope]] = []
    for signature in plan.signatures:
        tensor = meta_graph.signature_def[signature.name].inputs[plan.input_alias].name
        parsers.extend(_find_parsers(top, _producer(tensor), library, depth=0))
    kinds = {"Example" if n.op in _EXAMPLE_PARSERS else "SequenceExample" for n, _ in parsers}
    if len(kinds) != 1:
        return None, ()
    rules: dict[str, FeatureRule] = {}
    for node, scope in parsers:
        try:
            found = _example_rules(node, scope) if node.op in _EXAMPLE_PARSERS \
                else _sequence_context_rules(node, scope)
        except _UncertainError:
            return kinds.pop(), ()
        for rule in found:
            rules.setdefault(rule.name, rule)
    return kinds.pop(), tuple(rules.values())


def _find_parsers(scope: _Scope, source: str, library: Mapping[str, function_pb2.FunctionDef],
                  depth: int) -> list[tuple[node_def_pb2.NodeDef, _Scope]]:
    """Parse ops fed ``source`` unchanged, following calls into library functions."""
    if depth > 20:
        return []
    found = []
    for node, index in scope.consumers(source):
        if node.op in _EXAMPLE_PARSERS | _SEQUENCE_PARSERS and index == 0:
            found.append((node, scope))
        elif node.op in _PASS_THROUGH:
            found.extend(_find_parsers(scope, node.name, library, depth + 1))
        elif node.op in _CALLS and node.attr["f"].func.name in library:
            function = library[node.attr["f"].func.name]
            if index < len(function.signature.input_arg):
                inner = _Scope({n.name: n for n in function.node_def})
                found.extend(_find_parsers(inner, function.signature.input_arg[index].name,
                                           library, depth + 1))
    return found


class _UncertainError(Exception):
    """A parse op's keys or defaults are not constants: no rule can be certain."""


def _constant(scope: _Scope, input_name: str) -> np.ndarray:
    node = scope.nodes.get(_producer(input_name))
    while node is not None and node.op in _PASS_THROUGH:
        node = scope.nodes.get(_producer(node.input[0]))
    if node is None or node.op != "Const":
        raise _UncertainError(input_name)
    return tf.make_ndarray(node.attr["value"].tensor)


def _keys(scope: _Scope, input_name: str) -> list[str]:
    return [k.decode() if isinstance(k, bytes) else str(k)
            for k in np.atleast_1d(_constant(scope, input_name)).tolist()]


def _dense_rules(keys: Sequence[str], types: Sequence[int], shapes: Sequence[Any],
                 defaults: Sequence[str], scope: _Scope) -> list[FeatureRule]:
    rules = []
    for key, dtype, shape_proto, default in zip(keys, types, shapes, defaults, strict=True):
        kind = _KINDS.get(tf.dtypes.as_dtype(dtype))
        if kind is None:
            raise _UncertainError(key)
        shape = None if shape_proto.unknown_rank else tuple(d.size for d in shape_proto.dim)
        fixed = shape is not None and all(d >= 0 for d in shape)
        has_default = _constant(scope, default).size > 0
        rules.append(FeatureRule(
            name=key, kind=kind,
            length=math.prod(shape) if fixed else None,
            # Variable-length dense features (FixedLenSequenceFeature) may be missing.
            required=fixed and not has_default,
            shape=shape if fixed else None,
        ))
    return rules


def _kind_rules(keys: Sequence[str], types: Sequence[int]) -> list[FeatureRule]:
    rules = []
    for key, dtype in zip(keys, types, strict=True):
        kind = _KINDS.get(tf.dtypes.as_dtype(dtype))
        if kind is None:
            raise _UncertainError(key)
        rules.append(FeatureRule(name=key, kind=kind, length=None, required=False))
    return rules


def _example_rules(node: node_def_pb2.NodeDef, scope: _Scope) -> list[FeatureRule]:
    attr = node.attr
    dense_types = list(attr["Tdense"].list.type)
    shapes = list(attr["dense_shapes"].list.shape)
    if node.op == "ParseExampleV2":
        # inputs: serialized, names, sparse_keys, dense_keys, ragged_keys, dense_defaults...
        sparse = _kind_rules(_keys(scope, node.input[2]), list(attr["sparse_types"].list.type))
        ragged = _kind_rules(_keys(scope, node.input[4]),
                             list(attr["ragged_value_types"].list.type))
        dense_keys = _keys(scope, node.input[3])
        defaults = list(node.input[5:5 + len(dense_types)])
        return _dense_rules(dense_keys, dense_types, shapes, defaults, scope) + sparse + ragged
    # ParseExample: serialized, names, sparse_keys[Nsparse], dense_keys[Ndense], defaults.
    num_sparse, num_dense = attr["Nsparse"].i, attr["Ndense"].i
    inputs = list(node.input)
    sparse_keys = [_keys(scope, n)[0] for n in inputs[2:2 + num_sparse]]
    dense_keys = [_keys(scope, n)[0] for n in inputs[2 + num_sparse:2 + num_sparse + num_dense]]
    defaults = inputs[2 + num_sparse + num_dense:2 + num_sparse + 2 * num_dense]
    sparse = _kind_rules(sparse_keys, list(attr["sparse_types"].list.type))
    return _dense_rules(dense_keys, dense_types, shapes, defaults, scope) + sparse


def _sequence_context_rules(node: node_def_pb2.NodeDef, scope: _Scope) -> list[FeatureRule]:
    if node.op != "ParseSequenceExampleV2":
        raise _UncertainError(node.op)
    attr = node.attr
    # inputs: serialized, debug_name, context_sparse_keys, context_dense_keys,
    # context_ragged_keys, feature_list_{sparse,dense,ragged}_keys,
    # feature_list_dense_missing_assumed_empty, context_dense_defaults...
    dense_types = list(attr["Tcontext_dense"].list.type)
    defaults = list(node.input[9:9 + len(dense_types)])
    dense = _dense_rules(_keys(scope, node.input[3]), dense_types,
                         list(attr["context_dense_shapes"].list.shape), defaults, scope)
    sparse = _kind_rules(_keys(scope, node.input[2]),
                         list(attr["context_sparse_types"].list.type))
    return dense + sparse
