"""KServe v2 / Open Inference Protocol over REST: infer requests, answers, model metadata.

``POST /v2/models/NAME[/versions/V]/infer`` with ``inputs``: ``{name, shape, datatype,
data}`` per input alias (``data`` flattened in row-major order). BYTES inputs (serialized
Examples are not UTF-8, and JSON strings must be) go in the protocol's binary tensor
extension: the JSON header says ``parameters.binary_data_size``, the header's length
goes in ``Inference-Header-Content-Length``, and each element follows it as a 4-byte
little-endian length and its bytes. Answers are asked for as JSON; a binary answer
(the server's choice) is read too. BYTES outputs become bytes.

``GET /v2/models/NAME[/versions/V]`` is the model's metadata: its inputs and outputs
as ``TensorInfo``s (``-1`` dimensions as None). A v2 model has one signature, so the
client offers it as a ``SignatureDef`` named ``signature_name`` too, for the planner.
The answer's ``model_version`` is the version that answered (None unless a number).
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from beam_infer._signatures import TensorInfo
from beam_infer.remote._common import (
    DEFAULT_TIMEOUT_SECS,
    BearerToken,
    CallRecord,
    RemoteServerError,
    Tls,
    as_numpy,
    row_count,
)
from beam_infer.remote._http import HttpTransport
from beam_infer.remote._tf_serving_grpc import Calls, RemoteResult

PROTOCOL = "kserve_v2"
HEADER = "Inference-Header-Content-Length"

_DATATYPES = {
    tf.bool: "BOOL", tf.uint8: "UINT8", tf.uint16: "UINT16", tf.uint32: "UINT32",
    tf.uint64: "UINT64", tf.int8: "INT8", tf.int16: "INT16", tf.int32: "INT32",
    tf.int64: "INT64", tf.float16: "FP16", tf.float32: "FP32", tf.float64: "FP64",
    tf.string: "BYTES",
}
_DTYPES = {name: dtype for dtype, name in _DATATYPES.items()}


def datatype(dtype: tf.dtypes.DType | np.dtype) -> str:
    dtype = tf.dtypes.as_dtype(dtype) if not isinstance(dtype, np.dtype) or \
        dtype.kind not in "OSU" else tf.string
    try:
        return _DATATYPES[dtype]
    except KeyError:
        raise ValueError(f"{dtype.name} has no Open Inference Protocol datatype") from None


def dtype_of(name: str) -> tf.dtypes.DType:
    try:
        return _DTYPES[name]
    except KeyError:
        raise RemoteServerError(f"unknown Open Inference Protocol datatype {name!r}") from None


def infer_body(feeds: Mapping[str, np.ndarray], *, request_id: str | None = None,
               outputs: Sequence[str] = ()) -> tuple[bytes, dict[str, str]]:
    """An infer request's body and its extra headers (binary BYTES tensors, see above)."""
    header: dict = {"inputs": []}
    if request_id:
        header["id"] = request_id
    if outputs:
        header["outputs"] = [{"name": name} for name in outputs]
    binary = []
    for alias, value in feeds.items():
        array = as_numpy(value)
        entry = {"name": alias, "shape": list(array.shape), "datatype": datatype(array.dtype)}
        if entry["datatype"] == "BYTES":
            raw = b"".join(struct.pack("<I", len(item)) + item
                           for item in (_bytes(v) for v in array.ravel().tolist()))
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            entry["data"] = array.ravel().tolist()
        header["inputs"].append(entry)
    text = json.dumps(header, separators=(",", ":")).encode()
    if not binary:
        return text, {"Content-Type": "application/json"}
    return text + b"".join(binary), {"Content-Type": "application/octet-stream",
                                     HEADER: str(len(text))}


def _bytes(value: object) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def infer_outputs(body: bytes, headers: Mapping[str, str]) -> tuple[dict[str, np.ndarray],
                                                                    str | None]:
    """An infer answer as ``({output name: array}, model_version)``."""
    length = headers.get(HEADER)
    json_part = body[:int(length)] if length else body
    answer = json.loads(json_part)
    offset = len(json_part)
    outputs = {}
    for entry in answer.get("outputs", []):
        dtype = dtype_of(entry["datatype"])
        shape = tuple(entry["shape"])
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = body[offset:offset + size]
            offset += size
            outputs[entry["name"]] = _from_binary(raw, dtype, shape)
        elif dtype == tf.string:
            array = np.empty(len(entry["data"]), dtype=object)
            array[:] = [_bytes(v) for v in entry["data"]]
            outputs[entry["name"]] = array.reshape(shape)
        else:
            outputs[entry["name"]] = np.array(entry["data"],
                                              dtype=dtype.as_numpy_dtype).reshape(shape)
    return outputs, answer.get("model_version")


def _from_binary(raw: bytes, dtype: tf.dtypes.DType, shape: tuple[int, ...]) -> np.ndarray:
    if dtype != tf.string:
        return np.frombuffer(raw, dtype=dtype.as_numpy_dtype).reshape(shape).copy()
    items, i = [], 0
    while i < len(raw):
        (n,) = struct.unpack_from("<I", raw, i)
        items.append(raw[i + 4:i + 4 + n])
        i += 4 + n
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """``GET /v2/models/NAME``: the model's name, versions, platform and tensors."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def signature_def(self) -> meta_graph_pb2.SignatureDef:
        """The model's one signature as a predict SignatureDef."""
        signature = meta_graph_pb2.SignatureDef(method_name=tf.saved_model.PREDICT_METHOD_NAME)
        for infos, target in ((self.inputs, signature.inputs), (self.outputs, signature.outputs)):
            for info in infos:
                target[info.alias].dtype = info.dtype.as_datatype_enum
                shape = target[info.alias].tensor_shape
                if info.shape is None:
                    shape.unknown_rank = True
                else:
                    for d in info.shape:
                        shape.dim.add(size=-1 if d is None else d)
        return signature


def model_metadata(answer: Mapping) -> ModelMetadata:
    def infos(entries) -> tuple[TensorInfo, ...]:
        return tuple(TensorInfo(alias=e["name"], dtype=dtype_of(e["datatype"]),
                                shape=None if e.get("shape") is None else
                                tuple(None if d < 0 else d for d in e["shape"]))
                     for e in sorted(entries or [], key=lambda e: e["name"]))

    return ModelMetadata(name=answer.get("name", ""),
                         versions=tuple(answer.get("versions") or ()),
                         platform=answer.get("platform", ""),
                         inputs=infos(answer.get("inputs")), outputs=infos(answer.get("outputs")))


class KServeV2Client:
    """The Open Inference Protocol (REST) for one model.

    Args:
        base_url: ``http://host:port``.
        model_name: The model's name on the server.
        version: Put ``/versions/V`` in the URLs (KServe 0.21's own server refuses it:
            501; Triton and MLServer take it).
        signature_name: The name the model's one signature is known by in the calls
            (``serving_default``); calls naming another signature are refused.
        timeout_secs, tls, token, pool_size: see ``HttpTransport``.
    """

    def __init__(self, base_url: str, model_name: str, *, version: str | int | None = None,
                 signature_name: str = "serving_default",
                 timeout_secs: float = DEFAULT_TIMEOUT_SECS, tls: Tls | None = None,
                 token: BearerToken | None = None, pool_size: int = 8):
        self.base_url = base_url
        self.model_name = model_name
        self.version = None if version is None else str(version)
        self.signature_name = signature_name
        self._http = HttpTransport(PROTOCOL, timeout_secs=timeout_secs, tls=tls, token=token,
                                   pool_size=pool_size)

    def __repr__(self) -> str:
        return (f"KServeV2Client(base_url={self.base_url!r}, model_name={self.model_name!r}, "
                f"version={self.version!r}, transport={self._http!r})")

    @property
    def url(self) -> str:
        url = f"{self.base_url.rstrip('/')}/v2/models/{self.model_name}"
        return f"{url}/versions/{self.version}" if self.version else url

    def close(self) -> None:
        self._http.close()

    def metadata(self) -> tuple[ModelMetadata, CallRecord]:
        answer, record = self._http.request("GET", self.url, name="metadata")
        return model_metadata(answer.json()), record

    def signature_defs(self) -> tuple[dict[str, meta_graph_pb2.SignatureDef], CallRecord]:
        """``metadata()`` as the planner reads a SavedModel: ``{signature_name: def}``."""
        metadata, record = self.metadata()
        return {self.signature_name: metadata.signature_def()}, record

    def requests(self, calls: Calls) -> list[tuple[bytes, dict[str, str], int]]:
        sent = []
        for name, feeds in calls:
            if name != self.signature_name:
                raise RemoteServerError(
                    f"{self.url} serves one signature, {self.signature_name!r}; asked for "
                    f"{name!r}")
            body, headers = infer_body(feeds)
            sent.append((body, headers, row_count(feeds)))
        return sent

    def request_bytes(self, calls: Calls) -> int:
        return max((len(body) for body, _, _ in self.requests(calls)), default=0)

    @staticmethod
    def prepared_bytes(prepared: Sequence[tuple[bytes, dict[str, str], int]]) -> int:
        return max((len(body) for body, _, _ in prepared), default=0)

    def call(self, calls: Calls, prepared: Sequence | None = None) -> RemoteResult:
        """``prepared``: what ``requests(calls)`` returned, if already built."""
        outputs, records, version = [], [], None
        for body, headers, rows in (self.requests(calls) if prepared is None else prepared):
            answer, record = self._http.request("POST", self.url + "/infer", name="predict",
                                                body=body, headers=headers, rows=rows)
            records.append(record)
            values, answered = infer_outputs(answer.body, answer.headers)
            outputs.append(values)
            version = int(answered) if answered and str(answered).isdigit() else None
        return RemoteResult(outputs, version, records)
