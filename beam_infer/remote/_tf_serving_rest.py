"""TF Serving's REST API (v1): request and answer JSON, metadata, version and label URLs.

``POST /v1/models/NAME[/versions/N | /labels/L]:predict`` with ``signature_name`` and
either ``instances`` (row format: one JSON value per row, or one object per row keyed
by input alias when there are several inputs) or ``inputs`` (columnar: the whole
tensor, or an object of them). DT_STRING inputs are always sent as ``{"b64": ...}``
(serialized Examples are not UTF-8). Answers: ``predictions`` (row) or ``outputs``
(columnar); JSON carries no dtypes, so they are cast to the signature's output dtypes,
read once from ``/v1/models/NAME[/versions/N]/metadata`` (the SignatureDefMap in
proto3 JSON, parsed back into the SavedModel's own ``SignatureDef`` protos). A
DT_STRING output comes back as text, or as ``{"b64": ...}`` when its alias ends in
``_bytes``; both become bytes.

Every call uses ``:predict``, classify and regress signatures included (TF Serving runs
any signature through it), so the answer holds the signature's tensors with their
shapes. ``:classify`` / ``:regress`` take Examples as JSON feature objects and answer
with label/score pairs; ``example_api=True`` uses them, converting both ways.

KServe's v1 API takes the same ``:predict`` bodies but has no metadata route: such an
endpoint is used with ``EndpointSpec(signatures_from=...)``, and a metadata 404 from a
server that answers the model's status route as KServe does says so.

REST answers do not say which version answered: the client reports the version in its
URL, else None.

Floats: TF Serving and Python write a float32 with enough digits to read it back
exactly, so outputs equal the local model's bit for bit.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from beam_infer.remote._common import (
    DEFAULT_TIMEOUT_SECS,
    BearerToken,
    CallRecord,
    NoMetadataRouteError,
    RemoteError,
    RemoteServerError,
    Tls,
    as_numpy,
    row_count,
)
from beam_infer.remote._http import HttpTransport
from beam_infer.remote._tf_serving_grpc import Calls, RemoteResult

PROTOCOL = "tf_serving_rest"
CLASSIFY = tf.saved_model.CLASSIFY_METHOD_NAME
REGRESS = tf.saved_model.REGRESS_METHOD_NAME


# --- JSON tensors ----------------------------------------------------------------------

def to_json(value: np.ndarray) -> object:
    """A numpy array as TF Serving's JSON: nested lists, bytes as ``{"b64": ...}``."""
    array = as_numpy(value)
    if array.dtype.kind in "OSU":
        return _map(array.tolist(), _b64)
    if array.dtype.kind == "b":
        return array.tolist()
    return array.tolist()  # float32 -> Python float: the shortest text that reads back exact


def _b64(leaf: object) -> dict[str, str]:
    if isinstance(leaf, str):
        leaf = leaf.encode()
    return {"b64": base64.b64encode(bytes(leaf)).decode("ascii")}


def _map(value: object, leaf_fn):
    if isinstance(value, list):
        return [_map(v, leaf_fn) for v in value]
    return leaf_fn(value)


def _unbytes(leaf: object) -> bytes:
    if isinstance(leaf, dict) and "b64" in leaf:
        return base64.b64decode(leaf["b64"])
    if isinstance(leaf, str):
        return leaf.encode()
    raise RemoteServerError(f"expected a string in the answer, got {leaf!r:.80}")


def from_json(value: object, dtype: tf.dtypes.DType) -> np.ndarray:
    """TF Serving's JSON for one tensor back into numpy with the signature's dtype."""
    if dtype == tf.string:
        leaves = _map(value, _unbytes)
        array = np.empty(_shape(leaves), dtype=object)
        _fill(array, leaves)
        return array
    return np.array(value, dtype=dtype.as_numpy_dtype)


def _shape(value: object) -> tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return tuple(shape)


def _fill(array: np.ndarray, leaves: object) -> None:
    if array.ndim == 0:
        array[()] = leaves
        return
    for i, leaf in enumerate(leaves):
        if array.ndim == 1:
            array[i] = leaf
        else:
            _fill(array[i], leaf)


def predict_body(signature_name: str, feeds: Mapping[str, np.ndarray], *,
                 columnar: bool = False) -> dict:
    body: dict = {"signature_name": signature_name}
    encoded = {alias: to_json(value) for alias, value in feeds.items()}
    if columnar:
        body["inputs"] = next(iter(encoded.values())) if len(encoded) == 1 else encoded
    elif len(encoded) == 1:
        body["instances"] = next(iter(encoded.values()))
    else:
        rows = row_count(feeds)
        body["instances"] = [{alias: value[i] for alias, value in encoded.items()}
                             for i in range(rows)]
    return body


def predict_outputs(answer: Mapping, signature: meta_graph_pb2.SignatureDef
                    ) -> dict[str, np.ndarray]:
    """A ``:predict`` answer (row or columnar) as numpy, in the signature's dtypes.

    One output: ``predictions`` is a list of its rows, ``outputs`` the tensor. Several:
    ``predictions`` is a list of objects keyed by alias, ``outputs`` one object.
    """
    dtypes = {alias: tf.dtypes.as_dtype(info.dtype) for alias, info in signature.outputs.items()}
    if "predictions" in answer:
        rows = answer["predictions"]
        if len(dtypes) == 1:
            (alias, dtype), = dtypes.items()
            return {alias: from_json(rows, dtype)}
        if not rows:
            return {}
        return {alias: from_json([row[alias] for row in rows], dtypes[alias])
                for alias in rows[0]}
    if "outputs" in answer:
        outputs = answer["outputs"]
        if len(dtypes) == 1:
            (alias, dtype), = dtypes.items()
            return {alias: from_json(outputs, dtype)}
        return {alias: from_json(value, dtypes[alias]) for alias, value in outputs.items()}
    raise RemoteServerError(f"the answer holds neither predictions nor outputs: "
                            f"{sorted(answer)[:10]}")


def example_json(serialized: bytes) -> dict:
    """One serialized ``tf.train.Example`` as ``:classify`` / ``:regress`` take it."""
    example = tf.train.Example.FromString(bytes(serialized))
    features = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind == "float_list":
            features[name] = [float(v) for v in feature.float_list.value]
        elif kind == "int64_list":
            features[name] = list(feature.int64_list.value)
        elif kind == "bytes_list":
            features[name] = [_b64(v) for v in feature.bytes_list.value]
        else:
            features[name] = []
    return features


def examples_body(signature_name: str, serialized: Sequence[bytes]) -> dict:
    return {"signature_name": signature_name,
            "examples": [example_json(s) for s in as_numpy(serialized).ravel().tolist()]}


def classify_outputs(answer: Mapping, signature: meta_graph_pb2.SignatureDef
                     ) -> dict[str, np.ndarray]:
    """``{"results": [[[label, score], ...], ...]}`` back into ``classes`` / ``scores``."""
    rows = answer["results"]
    outputs = {}
    if "classes" in signature.outputs:
        outputs["classes"] = np.array([[str(c[0]).encode() for c in row] for row in rows],
                                      dtype=object).reshape(len(rows), -1)
    if "scores" in signature.outputs:
        outputs["scores"] = np.array([[c[-1] for c in row] for row in rows],
                                     dtype=np.float32).reshape(len(rows), -1)
    return outputs


def regress_outputs(answer: Mapping, signature: meta_graph_pb2.SignatureDef
                    ) -> dict[str, np.ndarray]:
    values = np.array(answer["results"], dtype=np.float32).reshape(-1)
    info = signature.outputs["outputs"]
    if not info.tensor_shape.unknown_rank and len(info.tensor_shape.dim) == 2:
        values = values.reshape(-1, 1)
    return {"outputs": values}


def signature_defs(answer: Mapping) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of a ``/metadata`` answer."""
    try:
        packed = answer["metadata"]["signature_def"]
    except (KeyError, TypeError):
        raise RemoteServerError("the metadata answer has no metadata.signature_def") from None
    signature_map = json_format.ParseDict(packed, get_model_metadata_pb2.SignatureDefMap(),
                                          ignore_unknown_fields=True)
    return dict(signature_map.signature_def)


def model_url(base_url: str, model_name: str, *, version: int | None = None,
              version_label: str | None = None) -> str:
    url = f"{base_url.rstrip('/')}/v1/models/{model_name}"
    if version is not None:
        return f"{url}/versions/{int(version)}"
    if version_label:
        return f"{url}/labels/{version_label}"
    return url


# --- the client ------------------------------------------------------------------------

class TfServingRestClient:
    """TF Serving's REST API for one model (and version or label).

    Args:
        base_url: ``http://host:port`` (``https://`` for TLS).
        model_name: The served model's name.
        version / version_label: as in the URL; neither: the latest.
        columnar: Send ``inputs`` instead of ``instances``.
        example_api: ``:classify`` / ``:regress`` for those signatures (see the module
            docstring); one request per signature either way.
        timeout_secs, tls, token, pool_size: see ``HttpTransport``.
        signatures: The model's SignatureDefs, if already read (else read on first use).
    """

    def __init__(self, base_url: str, model_name: str, *, version: int | None = None,
                 version_label: str | None = None, columnar: bool = False,
                 example_api: bool = False, timeout_secs: float = DEFAULT_TIMEOUT_SECS,
                 tls: Tls | None = None, token: BearerToken | None = None,
                 pool_size: int = 8,
                 signatures: Mapping[str, meta_graph_pb2.SignatureDef] | None = None):
        if version is not None and version_label:
            raise ValueError("give a version or a version_label, not both")
        self.base_url = base_url
        self.model_name = model_name
        self.version = version
        self.version_label = version_label
        self.columnar = columnar
        self.example_api = example_api
        self._http = HttpTransport(PROTOCOL, timeout_secs=timeout_secs, tls=tls, token=token,
                                   pool_size=pool_size)
        self._signatures = dict(signatures) if signatures is not None else None

    def __repr__(self) -> str:
        return (f"TfServingRestClient(base_url={self.base_url!r}, "
                f"model_name={self.model_name!r}, version={self.version!r}, "
                f"version_label={self.version_label!r}, transport={self._http!r})")

    @property
    def url(self) -> str:
        return model_url(self.base_url, self.model_name, version=self.version,
                         version_label=self.version_label)

    def close(self) -> None:
        self._http.close()

    def metadata(self) -> tuple[dict[str, meta_graph_pb2.SignatureDef], int | None, CallRecord]:
        """The model's SignatureDefs, the version that answered and the call's record."""
        url = model_url(self.base_url, self.model_name, version=self.version) + "/metadata"
        if self.version_label:  # TF Serving has no labels/L/metadata route
            url = model_url(self.base_url, self.model_name) + "/metadata"
        try:
            answer, record = self._http.request("GET", url, name="metadata")
        except RemoteServerError as e:
            if e.record is None or e.record.status != "404" or not self._kserve_v1():
                raise
            raise NoMetadataRouteError(
                f"{e}. The server answers GET {model_url(self.base_url, self.model_name)} as "
                "KServe's v1 API does, which has no metadata route: pass "
                "EndpointSpec(signatures_from=<the SavedModel it serves>), or use its v2 URL "
                f"({self.base_url.rstrip('/')}/v2/models/{self.model_name}) for a tensor signature",
                e.record) from None
        parsed = answer.json()
        self._signatures = signature_defs(parsed)
        version = parsed.get("model_spec", {}).get("version")
        return dict(self._signatures), int(version) if version else None, record

    def _kserve_v1(self) -> bool:
        """Whether the server answers the model's status route as KServe's v1 API does
        (``{"name": ..., "ready": ...}``; TF Serving answers ``model_version_status``)."""
        try:
            answer, _ = self._http.request("GET", model_url(self.base_url, self.model_name),
                                           name="metadata")
            status = answer.json()
        except (RemoteError, ValueError):
            return False
        return isinstance(status, dict) and "ready" in status and \
            "model_version_status" not in status

    def _signature(self, name: str) -> meta_graph_pb2.SignatureDef:
        if self._signatures is None:
            self.metadata()
        if name not in self._signatures:
            raise RemoteServerError(f"signature {name!r} is not served by {self.url}; "
                                    f"served: {sorted(self._signatures)}")
        return self._signatures[name]

    def requests(self, calls: Calls) -> list[tuple[str, str, bytes, int]]:
        """What ``call`` sends: (URL, metric name, body, rows) per call."""
        sent = []
        for name, feeds in calls:
            method = self._signature(name).method_name if self.example_api else ""
            if method in (CLASSIFY, REGRESS):
                verb = "classify" if method == CLASSIFY else "regress"
                body = examples_body(name, next(iter(feeds.values())))
            else:
                verb, body = "predict", predict_body(name, feeds, columnar=self.columnar)
            sent.append((f"{self.url}:{verb}", verb,
                         json.dumps(body, separators=(",", ":")).encode(), row_count(feeds)))
        return sent

    def request_bytes(self, calls: Calls) -> int:
        """The largest body ``call(calls)`` sends, in bytes (for capping batches)."""
        return max((len(body) for _, _, body, _ in self.requests(calls)), default=0)

    @staticmethod
    def prepared_bytes(prepared: Sequence[tuple[str, str, bytes, int]]) -> int:
        """The largest body of ``requests(calls)``, in bytes."""
        return max((len(body) for _, _, body, _ in prepared), default=0)

    def call(self, calls: Calls, prepared: Sequence | None = None) -> RemoteResult:
        """``prepared``: what ``requests(calls)`` returned, if already built."""
        outputs, records = [], []
        sent = self.requests(calls) if prepared is None else prepared
        for (name, _), (url, verb, body, rows) in zip(calls, sent, strict=True):
            answer, record = self._http.request(
                "POST", url, name=verb, body=body, rows=rows,
                headers={"Content-Type": "application/json"})
            records.append(record)
            parsed = answer.json()
            signature = self._signature(name)
            if verb == "classify":
                outputs.append(classify_outputs(parsed, signature))
            elif verb == "regress":
                outputs.append(regress_outputs(parsed, signature))
            else:
                outputs.append(predict_outputs(parsed, signature))
        return RemoteResult(outputs, self.version, records)
