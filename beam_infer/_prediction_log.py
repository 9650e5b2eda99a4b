"""Building ``tensorflow.serving.PredictionLog``s with TF Serving's and tfx-bsl's layout.

One log per element. Predict logs carry the serialized element in
``request.inputs[alias]`` (DT_STRING, shape [1]) and every output sliced to ``[1, ...]``;
classify, regress and multi-inference logs echo the Example in
``request.input.example_list`` — exactly as tfx-bsl writes them, so downstream code
written for tfx-bsl reads ours unchanged. Tensor inputs go in ``request.inputs[alias]``
as each element's tensor with a leading 1, like the outputs.

Predict logs are the hot path on small models, so they are written on the wire: each
element's pieces (constant headers cached per batch, plus the example's or row's bytes)
are joined, in C when the batch's payloads have one length, and the logs are parsed by
upb a chunk at a time instead of built field by field.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    prediction_log_pb2,
    regression_pb2,
)

from beam_infer._errors import InputError
from beam_infer._signatures import CLASSIFY, Signature

PredictionLog = prediction_log_pb2.PredictionLog

# numpy dtype -> (TensorProto value field, DataType), for the per-value path.
_VALUE_FIELDS = {
    np.dtype(np.float32): ("float_val", types_pb2.DT_FLOAT),
    np.dtype(np.float64): ("double_val", types_pb2.DT_DOUBLE),
    np.dtype(np.int32): ("int_val", types_pb2.DT_INT32),
    np.dtype(np.int16): ("int_val", types_pb2.DT_INT16),
    np.dtype(np.int8): ("int_val", types_pb2.DT_INT8),
    np.dtype(np.uint8): ("int_val", types_pb2.DT_UINT8),
    np.dtype(np.int64): ("int64_val", types_pb2.DT_INT64),
    np.dtype(np.bool_): ("bool_val", types_pb2.DT_BOOL),
}
# Dtypes tf.make_tensor_proto packs into tensor_content when a tensor has >1 value.
_PACKED = {np.dtype(t) for t in (np.float16, np.float32, np.float64, np.int32, np.uint8,
                                  np.int16, np.int8, np.int64)}


def row_tensor_proto(row: np.ndarray) -> tensor_pb2.TensorProto:
    """``tf.make_tensor_proto(row, shape=[1, *row.shape])``, byte for byte, made faster.

    This is tfx-bsl's "mimic tensor::Split" slice of a batched output.
    """
    field = _VALUE_FIELDS.get(row.dtype)
    if field is None and row.dtype != object:
        return tf.make_tensor_proto(row, dtype=tf.as_dtype(row.dtype).as_datatype_enum,
                                    shape=(1, *row.shape))
    proto = tensor_pb2.TensorProto(tensor_shape=_shape_proto((1, *row.shape)))
    if row.dtype == object:
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode()
                                for v in row.ravel())
        return proto
    name, proto.dtype = field
    if row.dtype in _PACKED and row.size > 1:
        proto.tensor_content = np.ascontiguousarray(row).tobytes()
    else:
        getattr(proto, name).extend(row.ravel().tolist())
    return proto


_SHAPES: dict[tuple[int, ...], tensor_shape_pb2.TensorShapeProto] = {}


def _shape_proto(shape: tuple[int, ...]) -> tensor_shape_pb2.TensorShapeProto:
    proto = _SHAPES.get(shape)
    if proto is None:
        proto = tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape])
        _SHAPES[shape] = proto
    return proto


def check_batch_outputs(outputs: Mapping[str, np.ndarray], batch_size: int,
                        signature_name: str) -> None:
    """Every output must have the batch as its first dimension."""
    for alias, value in outputs.items():
        if value.ndim < 1 or value.shape[0] != batch_size:
            raise InputError(
                f"signature {signature_name!r} returned output {alias!r} with shape "
                f"{list(value.shape)} for a batch of {batch_size}; every output needs the "
                "batch as its first dimension. Export the signature so it maps a batch of "
                "N inputs to outputs of shape [N, ...]."
            )


def row_tensor_parts(batch: np.ndarray) -> tuple[bytes, list[bytes]]:
    """Each row's encoded tensor as one prefix shared by all rows plus the row's own bytes.

    Fixed-width numbers are stored raw (``tensor_content``, or packed ``float_val`` /
    ``double_val`` for one value), so every row's encoding is one constant prefix plus
    the row's bytes: one proto is built per batch, and rows are cut from one buffer by a
    numpy view. Other rows are encoded one by one, with an empty prefix.
    """
    rows = len(batch)
    if rows == 0:
        return b"", []
    row_size = int(np.prod(batch.shape[1:]))
    if batch.dtype in _RAW_ALWAYS or (batch.dtype in _PACKED and row_size > 1):
        contiguous = np.ascontiguousarray(batch)
        width = contiguous[0].nbytes
        first = row_tensor_proto(contiguous[0]).SerializeToString()
        if width and first.endswith(contiguous[0].tobytes()):
            # Void items are raw bytes: unlike "S" items, trailing zero bytes are kept.
            payloads = contiguous.reshape(rows, -1).view(f"V{width}").ravel().tolist()
            return first[:-width], payloads
    # Rows of a 1-D object array are bare bytes; asarray makes them 0-d arrays again.
    return b"", [row_tensor_proto(np.asarray(row, dtype=batch.dtype)).SerializeToString()
                 for row in batch]


# Dtypes whose values are raw little-endian bytes at any row size.
_RAW_ALWAYS = {np.dtype(np.float32), np.dtype(np.float64)}


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_VARINTS = [_varint(i) for i in range(1 << 14)]


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte(s), the payload's length, the payload."""
    size = len(payload)
    return tag + (_VARINTS[size] if size < 16384 else _varint(size)) + payload


# Wire tags (field number << 3 | 2) of the length-delimited fields a predict log uses.
_LOG_PREDICT = b"\x32"  # PredictionLog.predict_log = 6
_PREDICT_REQUEST = b"\x0a"  # PredictLog.request = 1
_PREDICT_RESPONSE = b"\x12"  # PredictLog.response = 2
_REQUEST_MODEL_SPEC = b"\x0a"  # PredictRequest.model_spec = 1
_REQUEST_INPUTS = b"\x12"  # PredictRequest.inputs = 2 (map entries)
_RESPONSE_OUTPUTS = b"\x0a"  # PredictResponse.outputs = 1
_RESPONSE_MODEL_SPEC = b"\x12"  # PredictResponse.model_spec = 2
_MAP_KEY, _MAP_VALUE = b"\x0a", b"\x12"
_SPEC_NAME = b"\x0a"  # ModelSpec.name = 1
_SPEC_VERSION = b"\x12"  # ModelSpec.version = 2 (google.protobuf.Int64Value)
_INT64_VALUE = b"\x08"  # Int64Value.value = 1 (varint)
_SIGNATURE_NAME = b"\x1a"  # ModelSpec.signature_name = 3
_STRING_VAL = b"\x42"  # TensorProto.string_val = 8
# dtype: DT_STRING, tensor_shape { dim { size: 1 } }: a serialized example's tensor.
_EXAMPLE_TENSOR_PREFIX = b"\x08\x07\x12\x04\x12\x02\x08\x01"


class _Headers(dict):
    """The bytes that precede a payload of each length in one fixed wrapping of it.

    Nested length prefixes depend only on the payload's length, so they are encoded once
    per distinct length; a batch usually has one or a few.
    """

    def __init__(self, wrap: Callable[[bytes], bytes]):
        super().__init__()
        self._wrap = wrap

    def __missing__(self, length: int) -> bytes:
        encoded = self._wrap(bytes(length))
        header = encoded[: len(encoded) - length]
        self[length] = header
        return header


def _input_piece(alias: bytes, tensor: bytes) -> bytes:
    """An encoded PredictionLog holding only ``request.inputs[alias] = tensor``."""
    entry = _field(_MAP_KEY, alias) + _field(_MAP_VALUE, tensor)
    return _field(_LOG_PREDICT, _field(_PREDICT_REQUEST, _field(_REQUEST_INPUTS, entry)))


def _output_piece(alias: bytes, tensor: bytes) -> bytes:
    """An encoded PredictionLog holding only ``response.outputs[alias] = tensor``."""
    entry = _field(_MAP_KEY, alias) + _field(_MAP_VALUE, tensor)
    return _field(_LOG_PREDICT, _field(_PREDICT_RESPONSE, _field(_RESPONSE_OUTPUTS, entry)))


def _spec_piece(signature_name: str, model: tuple[str, int] | None = None) -> bytes:
    """An encoded PredictionLog holding only the request's and response's model_spec.

    ``model`` is the (name, version) that answered, for versioned base paths.
    """
    spec = _field(_SIGNATURE_NAME, signature_name.encode())
    if model is not None:
        name, version = model
        spec = (_field(_SPEC_NAME, name.encode())
                + _field(_SPEC_VERSION, _INT64_VALUE + _varint(version)) + spec)
    return _field(_LOG_PREDICT, _field(_PREDICT_REQUEST, _field(_REQUEST_MODEL_SPEC, spec))
                  + _field(_PREDICT_RESPONSE, _field(_RESPONSE_MODEL_SPEC, spec)))


@dataclasses.dataclass(frozen=True)
class _Column:
    """One field of every log in a batch: a payload per element, and its wrapping."""

    payloads: Sequence[bytes]
    headers: _Headers


def _tensor_column(batch: np.ndarray, piece: Callable[[bytes], bytes]) -> _Column:
    """A column of ``piece(row tensor)`` for every row of ``batch``."""
    prefix, payloads = row_tensor_parts(batch)
    return _Column(payloads, _Headers(lambda payload: piece(prefix + payload)))


def _parse_logs(spec: bytes, columns: Sequence[_Column]) -> list[PredictionLog]:
    """Parses each element's pieces as one PredictionLog.

    Encoded messages concatenated parse as their merge (protobuf's wire format rule), so
    each piece sets its own fields and upb, in C, does the rest.
    """
    if len({len(column.payloads) for column in columns}) > 1:
        raise ValueError(f"columns of different lengths: {[len(c.payloads) for c in columns]}")
    widths = [set(map(len, column.payloads)) for column in columns]
    if all(len(w) == 1 for w in widths):
        # The common case, one payload length per column: every log has one length and
        # every header is the same, so each framed log is joined in C with no Python
        # step per element.
        headers = [column.headers[width] for column, (width,) in zip(columns, widths,
                                                                       strict=True)]
        size = len(spec) + sum(map(len, headers)) + sum(width for (width,) in widths)
        streams: list[Iterable[bytes]] = []
        for i, (column, header) in enumerate(zip(columns, headers, strict=True)):
            lead = _frame(size) + spec if i == 0 else b""
            streams += [itertools.repeat(lead + header), column.payloads]
        # Not strict: the repeats are endless, the payloads (checked above) set the end.
        framed = list(map(b"".join, zip(*streams, strict=False)))
    else:
        framed = [_frame_log(spec + b"".join(column.headers[len(p)] + p
                                             for column, p in zip(columns, payloads,
                                                                  strict=True)))
                  for payloads in zip(*(column.payloads for column in columns), strict=True)]
    return _parse_framed(framed)


# Logs parsed per _LogChunk message. Parsing messages one by one costs one upb arena each
# (about 2/3 of the time of a small log); a chunk's logs share one arena, so a log kept
# after its siblings are gone keeps the chunk's memory: at most _CHUNK_LOGS logs of at
# most _CHUNK_BYTES together, while a log of that size or more is parsed on its own.
_CHUNK_LOGS = 16
_CHUNK_BYTES = 16 * 1024
_CHUNK_FIELD = b"\x0a"  # _LogChunk.logs = 1


def _log_chunk_class() -> type:
    """A message of one ``repeated PredictionLog logs = 1``: no TF Serving message has
    one, so it is declared here, in a package of its own in the default pool."""
    name = "beam_infer_internal.PredictionLogChunk"
    pool = descriptor_pool.Default()
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto(
        name="beam_infer_internal/prediction_log_chunk.proto", package="beam_infer_internal",
        syntax="proto3", dependency=[PredictionLog.DESCRIPTOR.file.name])
    file.message_type.add(name="PredictionLogChunk").field.add(
        name="logs", number=1, label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        type_name="." + PredictionLog.DESCRIPTOR.full_name)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


_LogChunk = _log_chunk_class()


def _frame(size: int) -> bytes:
    """The tag and length that make a log of ``size`` bytes one entry of a _LogChunk."""
    return _CHUNK_FIELD + (_VARINTS[size] if size < 16384 else _varint(size))


def _frame_log(encoded: bytes) -> bytes:
    return _frame(len(encoded)) + encoded


def _parse_framed(framed: list[bytes]) -> list[PredictionLog]:
    """The logs of framed encodings (see ``_frame``), in order, parsed a chunk at a time."""
    if not framed:
        return []
    per_chunk = max(1, min(_CHUNK_LOGS, _CHUNK_BYTES * len(framed) // sum(map(len, framed))))
    logs: list[PredictionLog] = []
    for start in range(0, len(framed), per_chunk):
        logs += _LogChunk.FromString(b"".join(framed[start:start + per_chunk])).logs
    return logs


def _output_columns(outputs: Mapping[str, np.ndarray]) -> list[_Column]:
    return [_tensor_column(value, functools.partial(_output_piece, alias.encode()))
            for alias, value in outputs.items()]


def predict_logs(serialized: Sequence[bytes], outputs: Mapping[str, np.ndarray], *,
                 input_alias: str, signature_name: str,
                 model: tuple[str, int] | None = None) -> list[PredictionLog]:
    """Predict logs for a batch of serialized examples.

    ``model``: the (name, version) that answered, recorded in both model_specs.
    """
    check_batch_outputs(outputs, len(serialized), signature_name)
    alias = input_alias.encode()

    def wrap(example: bytes) -> bytes:  # a DT_STRING [1] tensor holding the example
        return _input_piece(alias, _EXAMPLE_TENSOR_PREFIX + _field(_STRING_VAL, example))

    return _parse_logs(_spec_piece(signature_name, model),
                       [_Column(serialized, _Headers(wrap)), *_output_columns(outputs)])


def tensor_predict_logs(rows: Mapping[str, Sequence[np.ndarray]],
                        outputs: Mapping[str, np.ndarray], batch_size: int, *,
                        signature_name: str,
                        model: tuple[str, int] | None = None) -> list[PredictionLog]:
    """Predict logs for tensor inputs: each element's tensors with a leading 1."""
    check_batch_outputs(outputs, batch_size, signature_name)
    inputs = [
        _tensor_column(value, functools.partial(_input_piece, alias.encode()))
        if isinstance(value, np.ndarray) else
        _Column([row_tensor_proto(np.asarray(r)).SerializeToString() for r in value],
                _Headers(functools.partial(_input_piece, alias.encode())))
        for alias, value in rows.items()]
    return _parse_logs(_spec_piece(signature_name, model),
                       [*inputs, *_output_columns(outputs)])


def classifications(outputs: Mapping[str, np.ndarray], batch_size: int,
                    signature_name: str) -> list[classification_pb2.Classifications]:
    """Per-element ``Classifications`` from a classify signature's ``classes``/``scores``."""
    classes = outputs.get(tf.saved_model.CLASSIFY_OUTPUT_CLASSES)
    scores = outputs.get(tf.saved_model.CLASSIFY_OUTPUT_SCORES)
    for alias, value in (("classes", classes), ("scores", scores)):
        if value is not None and (value.ndim != 2 or value.shape[0] != batch_size):
            raise InputError(
                f"classify signature {signature_name!r} returned {alias!r} with shape "
                f"{list(value.shape)} for a batch of {batch_size}; TF Serving needs "
                "[batch_size, num_classes]."
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise InputError(
            f"classify signature {signature_name!r} returned {classes.shape[1]} classes but "
            f"{scores.shape[1]} scores per element; they must match."
        )
    result = []
    for i in range(batch_size):
        element = classification_pb2.Classifications()
        labels = classes[i].tolist() if classes is not None else None
        values = scores[i].tolist() if scores is not None else None
        for c in range(len(labels if labels is not None else values)):
            klass = element.classes.add()
            if labels is not None:
                klass.label = labels[c]
            if values is not None:
                klass.score = values[c]
        result.append(element)
    return result


def regressions(outputs: Mapping[str, np.ndarray], batch_size: int,
                signature_name: str) -> list[regression_pb2.Regression]:
    """Per-element ``Regression`` from a regress signature's ``outputs``."""
    value = outputs[tf.saved_model.REGRESS_OUTPUTS]
    if not (value.ndim == 1 or (value.ndim == 2 and value.shape[1] == 1)) \
            or value.shape[0] != batch_size:
        raise InputError(
            f"regress signature {signature_name!r} returned 'outputs' with shape "
            f"{list(value.shape)} for a batch of {batch_size}; TF Serving needs [batch_size] "
            "or [batch_size, 1]."
        )
    return [regression_pb2.Regression(value=v) for v in value.ravel().tolist()]


def _echo_example(example_list, serialized: bytes) -> None:
    example_list.examples.add().ParseFromString(serialized)


def classify_logs(serialized: Sequence[bytes], outputs: Mapping[str, np.ndarray], *,
                  signature_name: str) -> list[PredictionLog]:
    results = classifications(outputs, len(serialized), signature_name)
    return _example_logs("classify_log", "classifications", serialized, results)


def regress_logs(serialized: Sequence[bytes], outputs: Mapping[str, np.ndarray], *,
                 signature_name: str) -> list[PredictionLog]:
    results = regressions(outputs, len(serialized), signature_name)
    return _example_logs("regress_log", "regressions", serialized, results)


def _example_logs(kind: str, field: str, serialized: Sequence[bytes],
                  results: Sequence[Any]) -> list[PredictionLog]:
    """Classify/regress logs: the Example echoed in the request, its result in the response."""
    logs = []
    for element, result in zip(serialized, results, strict=True):
        log = PredictionLog()
        entry = getattr(log, kind)
        _echo_example(entry.request.input.example_list, element)
        getattr(entry.response.result, field).append(result)
        logs.append(log)
    return logs


def multi_inference_logs(
    serialized: Sequence[bytes],
    results: Sequence[tuple[Signature, Mapping[str, np.ndarray]]],
) -> list[PredictionLog]:
    """One ``multi_inference_log`` per element, a result per signature in order."""
    per_signature = [
        (signature,
         classifications(outputs, len(serialized), signature.name)
         if signature.method_name == CLASSIFY
         else regressions(outputs, len(serialized), signature.name))
        for signature, outputs in results
    ]
    logs = []
    for i, element in enumerate(serialized):
        log = PredictionLog()
        _echo_example(log.multi_inference_log.request.input.example_list, element)
        response = log.multi_inference_log.response
        for signature, values in per_signature:
            result: inference_pb2.InferenceResult = response.results.add()
            if signature.method_name == CLASSIFY:
                result.classification_result.classifications.append(values[i])
            else:
                result.regression_result.regressions.append(values[i])
            result.model_spec.signature_name = signature.name
        logs.append(log)
    return logs


def stamp_model_spec(logs: Sequence[PredictionLog], name: str, version: int,
                     signature_name: str) -> None:
    """Records which model and version answered, where TF Serving's messages say it.

    Only for versioned base paths: logs of a plain SavedModel directory stay exactly as
    tfx-bsl writes them (no name, no version).
    """
    for log in logs:
        kind = log.WhichOneof("log_type")
        if kind == "multi_inference_log":
            for result in log.multi_inference_log.response.results:
                result.model_spec.name = name
                result.model_spec.version.value = version
            continue
        entry = getattr(log, kind)
        for message in (entry.request, entry.response):
            message.model_spec.name = name
            message.model_spec.version.value = version
            message.model_spec.signature_name = signature_name

