"""A TF Serving stand-in for tests: real SavedModels behind a gRPC PredictionService and
TF Serving's REST API (v1), on loopback, with faults a test switches on.

No TF Serving binary is installable here (see EMULATORS.md), so this module serves the
models itself, in the test process: ``tf.saved_model.load`` for each version, the
signature called as TF Serving calls it, answers built as TF Serving builds them.

gRPC (``tensorflow_serving.apis.prediction_service_pb2_grpc``'s servicer, on grpcio):

* ``Predict``: ``inputs`` by alias (the set must equal the signature's), ``output_filter``,
  any signature (classify and regress ones too, as TF Serving allows), ``model_spec``
  echoed with the version that answered. A dtype that does not match is
  INVALID_ARGUMENT ("Expects arg[i] to be float but string is provided"), like
  TensorFlow's; errors raised by the model (``tf.errors``) keep their code and message.
* ``Classify`` / ``Regress``: ``Input.example_list`` fed to the signature's ``inputs``;
  the signature's method_name must match; Classifications / Regressions as TF Serving
  builds them. ``MultiInference``: tasks of one model, distinct classify/regress
  signatures, one result per task with its ``model_spec``.
* ``GetModelMetadata``: ``metadata_field`` ``["signature_def"]``, answered with the
  MetaGraph's whole SignatureDefMap packed in an ``Any`` (``__saved_model_init_op``
  included, as TF Serving returns it).
* Versions: numbered versions per model, the latest when none is asked for, and
  version labels. Unknown model or version: NOT_FOUND ``Servable not found for
  request: Specific(five, 3)``; unknown label: INVALID_ARGUMENT ``Unrecognized
  servable version label: x``; unknown signature: FAILED_PRECONDITION for Predict
  (``Serving signature key "x" not found.``), INVALID_ARGUMENT for Classify/Regress,
  as TF Serving answers them.

REST (``http.server`` in a thread): ``GET /v1/models/NAME[/versions/N|/labels/L]``
(status), ``GET /v1/models/NAME[/versions/N]/metadata``, ``POST ...:predict`` (row
``instances`` and columnar ``inputs``, ``{"b64": ...}`` inputs, row ``predictions`` and
columnar ``outputs``, string outputs as text unless the alias ends in ``_bytes``),
``:classify`` and ``:regress`` (Examples as JSON feature objects; ``results``), errors
as ``{"error": "..."}`` with TF Serving's HTTP status for each code.

Where it differs from TF Serving: no batching scheduler, model config file, file
system polling, warm-up replay, ``example_list_with_context``, ``context`` in REST
classify bodies, ``PredictStreamed``, request logging or monitoring endpoints; a
string output that is not UTF-8 is written with replacement characters (TF Serving
writes the raw bytes); error texts of our own checks follow TF Serving's wording, but
not always to the letter.

Faults (``Faults``, shared by both servers, reset per test by the ``tf_serving``
fixture): the next N requests fail with UNAVAILABLE / 503 or RESOURCE_EXHAUSTED / 429,
or answer after a delay, or (REST) drop the connection without an answer; rows whose
feature ``x`` (an Example's, or a float tensor's value) is in ``bad_values`` make their
request fail with INVALID_ARGUMENT / 400 naming the value; ``restart_grpc()`` /
``restart_rest()`` stop the server (dropping calls in flight) and start it again on the
same port. Counters: requests per method, rows scored, and how often each row was
scored (``scored``, keyed by ``x`` when the row has one), so tests can assert nothing
was scored twice, and the ``authorization`` each request carried (``authorizations``).

Security options of each server (default: plain text, no token): ``tls=ServerTls(cert_file,
key_file)`` serves gRPC with ``grpc.ssl_server_credentials`` and REST behind an
``ssl.SSLContext`` (``https://``); ``token="..."`` requires ``Bearer <token>`` in the
``authorization`` metadata / ``Authorization`` header and answers UNAUTHENTICATED / 401
(echoing what it got, as some proxies do, so tests see the client redact it) otherwise.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import contextlib
import dataclasses
import http.server
import json
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import any_pb2, json_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.emulators._server import HOST, free_port

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
StatusCode = grpc.StatusCode

_HTTP_STATUS = {
    StatusCode.INVALID_ARGUMENT: 400, StatusCode.FAILED_PRECONDITION: 400,
    StatusCode.OUT_OF_RANGE: 400, StatusCode.NOT_FOUND: 404, StatusCode.ALREADY_EXISTS: 409,
    StatusCode.PERMISSION_DENIED: 403, StatusCode.UNAUTHENTICATED: 401,
    StatusCode.RESOURCE_EXHAUSTED: 429, StatusCode.UNAVAILABLE: 503,
    StatusCode.DEADLINE_EXCEEDED: 504, StatusCode.UNIMPLEMENTED: 501,
    StatusCode.CANCELLED: 499,
}


class ServingError(Exception):
    """A gRPC status to answer with (an HTTP status and ``{"error": ...}`` over REST)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# --- faults and counters ---------------------------------------------------------------

class Faults:
    """What the servers do wrong, and what they counted; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._plan: collections.deque[tuple[str, float]] = collections.deque()
            self.bad_values: set[float] = set()
            self.requests: collections.Counter[str] = collections.Counter()
            self.rows_scored = 0
            self.scored: collections.Counter = collections.Counter()
            self.authorizations: list[str | None] = []

    def fail_next(self, n: int, kind: str = "unavailable") -> None:
        """The next ``n`` requests fail: ``"unavailable"`` (UNAVAILABLE / 503) or
        ``"exhausted"`` (RESOURCE_EXHAUSTED / 429)."""
        assert kind in ("unavailable", "exhausted"), kind
        with self._lock:
            self._plan.extend([(kind, 0.0)] * n)

    def delay_next(self, n: int, secs: float) -> None:
        """The next ``n`` requests are answered after ``secs`` seconds."""
        with self._lock:
            self._plan.extend([("delay", secs)] * n)

    def drop_next(self, n: int) -> None:
        """The next ``n`` REST requests get their connection closed, no answer."""
        with self._lock:
            self._plan.extend([("drop", 0.0)] * n)

    def take(self, method: str) -> tuple[str, float] | None:
        with self._lock:
            self.requests[method] += 1
            return self._plan.popleft() if self._plan else None

    def check_rows(self, keys: list) -> None:
        bad = [k for k in keys if isinstance(k, float) and k in self.bad_values]
        if bad:
            raise ServingError(StatusCode.INVALID_ARGUMENT,
                               f"input value x={bad[0]!r} is marked bad (row "
                               f"{keys.index(bad[0])} of {len(keys)})")

    def count(self, keys: list) -> None:
        with self._lock:
            self.rows_scored += len(keys)
            self.scored.update(keys)

    def authorize(self, expected: str | None, got: str | None) -> None:
        """Records ``got`` (the request's authorization); raises UNAUTHENTICATED when
        ``expected`` (a token) is set and ``got`` is not ``Bearer <expected>``."""
        self.authorizations.append(got)  # atomic: no lock on the benchmark's hot path
        if expected is not None and got != f"Bearer {expected}":
            raise ServingError(StatusCode.UNAUTHENTICATED,
                               f"invalid or missing bearer token (got {got!r})")

    @property
    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())


def row_keys(feeds: Mapping[str, np.ndarray]) -> list:
    """One key per row: its ``x`` (an Example's feature, a float tensor's first value) or
    its bytes."""
    if not feeds:
        return []
    first = next(iter(feeds.values()))
    keys = []
    for row in first:
        if isinstance(row, bytes):
            keys.append(_example_x(row))
        else:
            flat = np.asarray(row).ravel()
            keys.append(float(flat[0]) if flat.size and flat.dtype.kind == "f"
                        else np.asarray(row).tobytes())
    return keys


def _example_x(serialized: bytes) -> object:
    try:
        example = tf.train.Example.FromString(serialized)
    except Exception:  # noqa: BLE001 - not an Example: key it by its bytes
        return serialized
    feature = example.features.feature.get("x")
    if feature is not None and feature.float_list.value:
        return float(feature.float_list.value[0])
    return serialized


# --- the models ------------------------------------------------------------------------

@dataclasses.dataclass
class Servable:
    name: str
    version: int
    path: str
    signature_defs: dict[str, meta_graph_pb2.SignatureDef]
    root: object

    def run(self, signature_name: str, feeds: Mapping[str, np.ndarray]
            ) -> dict[str, np.ndarray]:
        signature = self.signature_defs[signature_name]
        for i, (alias, info) in enumerate(sorted(signature.inputs.items())):
            expected = tf.dtypes.as_dtype(info.dtype)
            got = _dtype_of(feeds[alias])
            if got != expected:
                raise ServingError(StatusCode.INVALID_ARGUMENT,
                                   f"Expects arg[{i}] to be {expected.name} but {got.name} "
                                   "is provided")
        function = self.root.signatures[signature_name]
        try:
            outputs = function(**{a: tf.constant(v) for a, v in feeds.items()})
        except tf.errors.OpError as e:
            raise ServingError(StatusCode(_code(e.error_code)), e.message) from None
        except (TypeError, ValueError) as e:
            raise ServingError(StatusCode.INVALID_ARGUMENT, str(e)) from None
        return {alias: t.numpy() for alias, t in outputs.items()}


def _code(number: int) -> tuple:
    return next(c.value for c in StatusCode if c.value[0] == number)


def _dtype_of(value: np.ndarray) -> tf.dtypes.DType:
    return tf.string if value.dtype.kind in "OSU" else tf.dtypes.as_dtype(value.dtype)


def _read_signature_defs(path: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    graph = next(g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags)
    return dict(graph.signature_def)


class Repository:
    """Models by name, each with numbered versions (``{version: SavedModel path}``) and
    optional labels (``{label: version}``)."""

    def __init__(self, models: Mapping[str, Mapping[int, str]],
                 labels: Mapping[str, Mapping[str, int]] | None = None):
        self.labels = {name: dict(v) for name, v in (labels or {}).items()}
        self.models: dict[str, dict[int, Servable]] = {}
        for name, versions in models.items():
            self.models[name] = {
                int(v): Servable(name, int(v), path, _read_signature_defs(path),
                                 tf.saved_model.load(path, tags=["serve"]))
                for v, path in versions.items()}

    def resolve(self, name: str, version: int | None = None, label: str | None = None
                ) -> Servable:
        versions = self.models.get(name)
        if label:
            if versions is None or label not in self.labels.get(name, {}):
                raise ServingError(StatusCode.INVALID_ARGUMENT,
                                   f"Unrecognized servable version label: {label}")
            version = self.labels[name][label]
        if versions is None or (version is not None and version not in versions):
            what = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            raise ServingError(StatusCode.NOT_FOUND, f"Servable not found for request: {what}")
        return versions[version if version is not None else max(versions)]

    def from_spec(self, spec) -> Servable:
        return self.resolve(spec.name, spec.version.value if spec.HasField("version") else None,
                            spec.version_label or None)


def _signature(servable: Servable, name: str, method: str | None,
               code: grpc.StatusCode) -> meta_graph_pb2.SignatureDef:
    name = name or tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
    signature = servable.signature_defs.get(name)
    if signature is None:
        if method is None:
            raise ServingError(code, f'Serving signature key "{name}" not found.')
        raise ServingError(code, f"No signature was found with the name: {name}")
    if method is not None and signature.method_name != method:
        kind = "classification" if method == tf.saved_model.CLASSIFY_METHOD_NAME \
            else "regression"
        raise ServingError(StatusCode.INVALID_ARGUMENT,
                           f"Expected {kind} signature method_name to be {method}. Was: "
                           f"{signature.method_name}")
    return signature


def predict(repository: Repository, faults: Faults, model: tuple[str, int | None, str | None],
            signature_name: str, feeds: Mapping[str, np.ndarray], output_filter=()
            ) -> tuple[Servable, str, dict[str, np.ndarray]]:
    servable = repository.resolve(*model)
    name = signature_name or tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
    signature = _signature(servable, name, None, StatusCode.FAILED_PRECONDITION)
    expected, sent = set(signature.inputs), set(feeds)
    if expected != sent:
        raise ServingError(
            StatusCode.INVALID_ARGUMENT,
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - expected))}}}. Missing but required: "
            f"{{{','.join(sorted(expected - sent))}}}.")
    for alias in output_filter:
        if alias not in signature.outputs:
            raise ServingError(
                StatusCode.INVALID_ARGUMENT,
                f"output tensor alias not found in signature: {alias} Outputs expected to "
                f"be in the set {{{','.join(sorted(signature.outputs))}}}.")
    keys = row_keys(feeds)
    faults.check_rows(keys)
    outputs = servable.run(name, feeds)
    if output_filter:
        outputs = {a: v for a, v in outputs.items() if a in set(output_filter)}
    faults.count(keys)
    return servable, name, outputs


def run_examples(repository: Repository, faults: Faults, servable: Servable,
                 signature_name: str, method: str, serialized: list[bytes]
                 ) -> tuple[str, object]:
    """Classify or regress serialized Examples; returns (signature name, result proto)."""
    name = signature_name or tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
    signature = _signature(servable, name, method, StatusCode.INVALID_ARGUMENT)
    if not serialized:
        raise ServingError(StatusCode.INVALID_ARGUMENT, "Input is empty.")
    alias = tf.saved_model.CLASSIFY_INPUTS
    if alias not in signature.inputs:
        raise ServingError(StatusCode.INVALID_ARGUMENT,
                           f"No {alias} input found in signature {name}")
    feeds = {alias: np.array(serialized, dtype=object)}
    keys = row_keys(feeds)
    faults.check_rows(keys)
    outputs = servable.run(name, feeds)
    n = len(serialized)
    if method == tf.saved_model.CLASSIFY_METHOD_NAME:
        result = classification_pb2.ClassificationResult()
        classes, scores = outputs.get("classes"), outputs.get("scores")
        for value, what in ((classes, "classes"), (scores, "scores")):
            if value is not None and (value.ndim != 2 or value.shape[0] != n):
                raise ServingError(StatusCode.INVALID_ARGUMENT,
                                   f"Expected {what} Tensor of shape [batch_size num_classes]"
                                   f" but got {list(value.shape)}")
        width = (classes if classes is not None else scores).shape[1]
        for i in range(n):
            row = result.classifications.add()
            for c in range(width):
                klass = row.classes.add()
                if classes is not None:
                    klass.label = classes[i, c].decode("utf-8", "replace")
                if scores is not None:
                    klass.score = float(scores[i, c])
    else:
        result = regression_pb2.RegressionResult()
        values = outputs["outputs"]
        if values.shape[0] != n or values.size != n:
            raise ServingError(StatusCode.INVALID_ARGUMENT,
                               f"Expected output Tensor shape to be either [batch_size] or "
                               f"[batch_size, 1] but got {list(values.shape)}")
        for v in values.ravel():
            result.regressions.add(value=float(v))
    faults.count(keys)
    return name, result


def _model_spec(target, servable: Servable, signature_name: str = "") -> None:
    target.name = servable.name
    target.version.value = servable.version
    target.signature_name = signature_name


@dataclasses.dataclass(frozen=True)
class ServerTls:
    """A server's certificate chain and private key, PEM files."""

    cert_file: str
    key_file: str

    def grpc_credentials(self) -> grpc.ServerCredentials:
        with open(self.key_file, "rb") as key, open(self.cert_file, "rb") as chain:
            return grpc.ssl_server_credentials([(key.read(), chain.read())])

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


# --- gRPC ------------------------------------------------------------------------------

class _Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, repository: Repository, faults: Faults, token: str | None = None):
        self.repository = repository
        self.faults = faults
        self.token = token

    def _guard(self, method: str, context: grpc.ServicerContext) -> None:
        planned = self.faults.take(method)
        if planned is None:
            return
        kind, secs = planned
        if kind == "unavailable":
            raise ServingError(StatusCode.UNAVAILABLE, "injected fault: server unavailable")
        if kind == "exhausted":
            raise ServingError(StatusCode.RESOURCE_EXHAUSTED, "injected fault: too many requests")
        if kind == "delay":
            end = time.monotonic() + secs
            while time.monotonic() < end and context.is_active():
                time.sleep(0.05)
            if not context.is_active():  # the client gave up (deadline, restart): no work
                raise ServingError(StatusCode.CANCELLED, "the client cancelled the call")

    def _serve(self, method, request, context, answer):
        try:
            metadata = dict(context.invocation_metadata())
            self.faults.authorize(self.token, metadata.get("authorization"))
            self._guard(method, context)
            return answer(request)
        except ServingError as e:
            context.abort(e.code, e.message)

    def Predict(self, request, context):
        def answer(request):
            feeds = {a: tf.make_ndarray(t) for a, t in request.inputs.items()}
            spec = request.model_spec
            servable, name, outputs = predict(
                self.repository, self.faults,
                (spec.name, spec.version.value if spec.HasField("version") else None,
                 spec.version_label or None),
                spec.signature_name, feeds, list(request.output_filter))
            response = predict_pb2.PredictResponse()
            _model_spec(response.model_spec, servable, name)
            for alias, value in outputs.items():
                response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
            return response
        return self._serve("Predict", request, context, answer)

    def _examples(self, request) -> list[bytes]:
        which = request.input.WhichOneof("kind")
        if which == "example_list_with_context":
            raise ServingError(StatusCode.UNIMPLEMENTED,
                               "example_list_with_context is not served by this emulator")
        if which is None:
            raise ServingError(StatusCode.INVALID_ARGUMENT, "Input is empty.")
        return [e.SerializeToString() for e in request.input.example_list.examples]

    def Classify(self, request, context):
        return self._one("Classify", request, context, tf.saved_model.CLASSIFY_METHOD_NAME,
                         classification_pb2.ClassificationResponse)

    def Regress(self, request, context):
        return self._one("Regress", request, context, tf.saved_model.REGRESS_METHOD_NAME,
                         regression_pb2.RegressionResponse)

    def _one(self, method, request, context, method_name, response_type):
        def answer(request):
            servable = self.repository.from_spec(request.model_spec)
            name, result = run_examples(self.repository, self.faults, servable,
                                        request.model_spec.signature_name, method_name,
                                        self._examples(request))
            response = response_type()
            _model_spec(response.model_spec, servable, name)
            response.result.CopyFrom(result)
            return response
        return self._serve(method, request, context, answer)

    def MultiInference(self, request, context):
        def answer(request):
            if not request.tasks:
                raise ServingError(StatusCode.INVALID_ARGUMENT, "Tasks is empty.")
            names = {t.model_spec.name for t in request.tasks}
            if len(names) > 1:
                raise ServingError(StatusCode.INVALID_ARGUMENT, "All ModelSpecs in a "
                                   "MultiInferenceRequest must access the same model name.")
            seen = set()
            for task in request.tasks:
                if task.model_spec.signature_name in seen:
                    raise ServingError(StatusCode.INVALID_ARGUMENT, "Duplicate evaluation of "
                                       f"signature: {task.model_spec.signature_name}")
                seen.add(task.model_spec.signature_name)
                if task.method_name not in (tf.saved_model.CLASSIFY_METHOD_NAME,
                                            tf.saved_model.REGRESS_METHOD_NAME):
                    raise ServingError(StatusCode.UNIMPLEMENTED,
                                       f"Unsupported signature method_name: {task.method_name}")
            servable = self.repository.from_spec(request.tasks[0].model_spec)
            serialized = self._examples(request)
            response = inference_pb2.MultiInferenceResponse()
            for task in request.tasks:
                name, result = run_examples(self.repository, self.faults, servable,
                                            task.model_spec.signature_name, task.method_name,
                                            serialized)
                entry = response.results.add()
                _model_spec(entry.model_spec, servable, name)
                if task.method_name == tf.saved_model.CLASSIFY_METHOD_NAME:
                    entry.classification_result.CopyFrom(result)
                else:
                    entry.regression_result.CopyFrom(result)
            return response
        return self._serve("MultiInference", request, context, answer)

    def GetModelMetadata(self, request, context):
        def answer(request):
            return metadata_response(self.repository, request.model_spec,
                                     list(request.metadata_field))
        return self._serve("GetModelMetadata", request, context, answer)


def metadata_response(repository: Repository, spec, fields: list[str]
                      ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    if not fields:
        raise ServingError(StatusCode.INVALID_ARGUMENT,
                           "GetModelMetadataRequest must specify at least one metadata_field")
    for field in fields:
        if field != "signature_def":
            raise ServingError(StatusCode.INVALID_ARGUMENT,
                               f"Metadata field {field} is not supported")
    servable = repository.from_spec(spec)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    _model_spec(response.model_spec, servable)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in servable.signature_defs.items():
        signature_map.signature_def[name].CopyFrom(signature)
    packed = any_pb2.Any()
    packed.Pack(signature_map)
    response.metadata["signature_def"].CopyFrom(packed)
    return response


class GrpcServer:
    """The gRPC PredictionService on ``HOST:port``; ``restart()`` keeps the port.

    ``tls``: serve TLS with this certificate; ``token``: require it (module docstring)."""

    def __init__(self, repository: Repository, faults: Faults, port: int | None = None, *,
                 tls: ServerTls | None = None, token: str | None = None):
        self.repository, self.faults = repository, faults
        self.port = port or free_port()
        self.tls, self.token = tls, token
        self._server: grpc.Server | None = None

    @property
    def target(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self, timeout_secs: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_secs
        while True:
            server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8), options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0)])
            prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
                _Servicer(self.repository, self.faults, self.token), server)
            try:
                bound = server.add_secure_port(self.target, self.tls.grpc_credentials()) \
                    if self.tls is not None else server.add_insecure_port(self.target)
            except RuntimeError:
                bound = 0
            if bound == self.port:
                server.start()
                self._server = server
                return
            if time.monotonic() > deadline:
                pytest.fail(f"the gRPC server could not bind {self.target} again", pytrace=False)
            time.sleep(0.2)

    def stop(self, grace_secs: float | None = 0) -> None:
        if self._server is not None:
            self._server.stop(grace_secs).wait(30)
            self._server = None

    def restart(self, down_secs: float = 0.0) -> None:
        """Stops the server (calls in flight fail) and starts it on the same port."""
        self.stop()
        time.sleep(down_secs)
        self.start()


# --- REST ------------------------------------------------------------------------------

_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                    r"(?::(?P<verb>predict|classify|regress)|(?P<metadata>/metadata))?$")


def _json_to_tensor(value: object, info: meta_graph_pb2.TensorInfo) -> np.ndarray:
    dtype = tf.dtypes.as_dtype(info.dtype)
    if dtype == tf.string:
        def leaf(v):
            if isinstance(v, dict) and "b64" in v:
                return base64.b64decode(v["b64"])
            if isinstance(v, str):
                return v.encode()
            raise ServingError(StatusCode.INVALID_ARGUMENT,
                               f"JSON Value: {json.dumps(v)} not formatted correctly for "
                               "string / base64 data")

        def walk(v):
            return [walk(x) for x in v] if isinstance(v, list) else leaf(v)
        leaves = walk(value)
        shape, probe = [], leaves
        while isinstance(probe, list):
            shape.append(len(probe))
            probe = probe[0] if probe else None
        array = np.empty(shape, dtype=object)
        for index in np.ndindex(*shape):
            item = leaves
            for i in index:
                item = item[i]
            array[index] = item
        return array
    try:
        return np.array(value, dtype=dtype.as_numpy_dtype)
    except (TypeError, ValueError) as e:
        raise ServingError(StatusCode.INVALID_ARGUMENT,
                           f"JSON Value not formatted correctly for {dtype.name}: {e}") from None


def _tensor_to_json(alias: str, value: np.ndarray) -> object:
    if value.dtype.kind in "OSU":
        def leaf(v):
            if alias.endswith("_bytes"):
                return {"b64": base64.b64encode(v).decode()}
            return v.decode("utf-8", "replace")
        def walk(v):
            return [walk(x) for x in v] if isinstance(v, list) else leaf(v)
        return walk(value.tolist())
    return value.tolist()


def _example_from_json(features: Mapping) -> bytes:
    example = tf.train.Example()
    for name, value in features.items():
        values = value if isinstance(value, list) else [value]
        feature = example.features.feature[name]
        if all(isinstance(v, bool | int) for v in values) and values:
            feature.int64_list.value.extend(int(v) for v in values)
        elif all(isinstance(v, int | float) for v in values) and values:
            feature.float_list.value.extend(float(v) for v in values)
        else:
            feature.bytes_list.value.extend(
                base64.b64decode(v["b64"]) if isinstance(v, dict) else str(v).encode()
                for v in values)
    return example.SerializeToString()


class _RestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _RestHttpServer

    def log_message(self, format, *args):
        pass

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):  # the handshake, in this thread
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()

    def _send(self, status: int, body: object, headers: Mapping[str, str] | None = None
              ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def do_GET(self):
        self._handle(None)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self._handle(self.rfile.read(length))

    def _handle(self, body: bytes | None) -> None:
        app = self.server.app
        match = _ROUTE.match(self.path)
        method = "REST " + (match.group("verb") or ("metadata" if match and match.group(
            "metadata") else "status") if match else "REST ?")
        try:
            app.faults.authorize(self.server.token, self.headers.get("Authorization"))
        except ServingError as e:
            return self._send(401, {"error": e.message}, {"WWW-Authenticate": "Bearer"})
        planned = app.faults.take(method)
        if planned is not None:
            kind, secs = planned
            if kind == "drop":
                return self._drop()
            if kind == "delay":
                time.sleep(secs)
            else:
                code = StatusCode.UNAVAILABLE if kind == "unavailable" \
                    else StatusCode.RESOURCE_EXHAUSTED
                return self._send(_HTTP_STATUS[code], {"error": f"injected fault: {code.name}"})
        try:
            if match is None:
                raise ServingError(StatusCode.NOT_FOUND, f"Malformed request: {self.path}")
            status, answer = app.answer(match, body)
        except ServingError as e:
            status, answer = _HTTP_STATUS.get(e.code, 500), {"error": e.message}
        with contextlib.suppress(OSError):
            self._send(status, answer)


class _RestHttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: RestApi
    token: str | None = None
    ssl_context: ssl.SSLContext | None = None

    def get_request(self):
        sock, address = super().get_request()
        if self.ssl_context is not None:  # the handshake runs in the request's thread
            sock = self.ssl_context.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request, client_address) -> None:
        pass  # a client that refused our certificate, or hung up: nothing to report


class RestApi:
    """TF Serving's REST API over a ``Repository`` (see the module docstring)."""

    def __init__(self, repository: Repository, faults: Faults):
        self.repository, self.faults = repository, faults

    def answer(self, match: re.Match, body: bytes | None) -> tuple[int, object]:
        name, label = match.group("name"), match.group("label")
        version = int(match.group("version")) if match.group("version") else None
        verb = match.group("verb")
        if body is None and verb:
            raise ServingError(StatusCode.INVALID_ARGUMENT, f"{verb} takes a POST")
        if match.group("metadata"):
            if label:
                raise ServingError(StatusCode.NOT_FOUND, "Malformed request: metadata "
                                   "of a version label")
            servable = self.repository.resolve(name, version)
            spec = get_model_metadata_pb2.GetModelMetadataResponse().model_spec
            spec.name, spec.version.value = name, servable.version
            response = metadata_response(self.repository, spec, ["signature_def"])
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signature_map)
            return 200, {"model_spec": {"name": name, "signature_name": "",
                                        "version": str(servable.version)},
                         "metadata": {"signature_def": json_format.MessageToDict(
                             signature_map, preserving_proto_field_name=True)}}
        if verb is None:
            servable = self.repository.resolve(name, version, label)
            return 200, {"model_version_status": [{
                "version": str(servable.version), "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""}}]}
        try:
            request = json.loads(body or b"{}")
        except ValueError as e:
            raise ServingError(StatusCode.INVALID_ARGUMENT, f"JSON Parse error: {e}") from None
        servable = self.repository.resolve(name, version, label)
        signature_name = request.get("signature_name") or "serving_default"
        if verb == "predict":
            return 200, self._predict(servable, signature_name, request)
        method = tf.saved_model.CLASSIFY_METHOD_NAME if verb == "classify" \
            else tf.saved_model.REGRESS_METHOD_NAME
        examples = request.get("examples")
        if not isinstance(examples, list):
            raise ServingError(StatusCode.INVALID_ARGUMENT,
                               "'examples' key is missing in the request")
        _, result = run_examples(self.repository, self.faults, servable, signature_name,
                                 method, [_example_from_json(e) for e in examples])
        if verb == "classify":
            return 200, {"results": [[[c.label, c.score] for c in row.classes]
                                     for row in result.classifications]}
        return 200, {"results": [r.value for r in result.regressions]}

    def _predict(self, servable: Servable, signature_name: str, request: dict) -> dict:
        signature = _signature(servable, signature_name, None, StatusCode.FAILED_PRECONDITION)
        inputs = dict(signature.inputs)
        if ("instances" in request) == ("inputs" in request):
            raise ServingError(StatusCode.INVALID_ARGUMENT, "Missing 'inputs' or 'instances' "
                               "key" if "instances" not in request else
                               "Not formatted correctly: both 'instances' and 'inputs' given")
        row = "instances" in request
        data = request["instances" if row else "inputs"]
        named = isinstance(data, dict) and not set(data) <= {"b64"} if not row else \
            bool(data) and isinstance(data[0], dict) and set(data[0]) != {"b64"}
        if row and named:
            feeds = {alias: _json_to_tensor([r.get(alias) for r in data], inputs[alias])
                     for alias in data[0] if alias in inputs}
            feeds.update({a: np.zeros(0) for a in data[0] if a not in inputs})
        elif named:
            feeds = {alias: _json_to_tensor(v, inputs[alias]) if alias in inputs else np.zeros(0)
                     for alias, v in data.items()}
        elif len(inputs) == 1:
            (alias, info), = inputs.items()
            feeds = {alias: _json_to_tensor(data, info)}
        else:
            raise ServingError(StatusCode.INVALID_ARGUMENT, "instances/inputs must be objects "
                               f"keyed by input name: the signature has {len(inputs)} inputs")
        _, _, outputs = predict(self.repository, self.faults,
                                (servable.name, servable.version, None), signature_name, feeds)
        if row:
            if len(outputs) == 1:
                (alias, value), = outputs.items()
                return {"predictions": _tensor_to_json(alias, value)}
            encoded = {a: _tensor_to_json(a, v) for a, v in outputs.items()}
            n = len(next(iter(encoded.values())))
            return {"predictions": [{a: v[i] for a, v in encoded.items()} for i in range(n)]}
        if len(outputs) == 1:
            (alias, value), = outputs.items()
            return {"outputs": _tensor_to_json(alias, value)}
        return {"outputs": {a: _tensor_to_json(a, v) for a, v in outputs.items()}}


class RestServer:
    """TF Serving's REST API on ``HOST:port`` in a thread; ``restart()`` keeps the port.

    ``tls``: serve https with this certificate; ``token``: require it (module docstring)."""

    def __init__(self, repository: Repository, faults: Faults, port: int | None = None, *,
                 tls: ServerTls | None = None, token: str | None = None):
        self.api = RestApi(repository, faults)
        self.port = port or free_port()
        self.tls, self.token = tls, token
        self._server: _RestHttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, ``https://`` with TLS."""
        return f"{'https' if self.tls is not None else 'http'}://{HOST}:{self.port}"

    def start(self, timeout_secs: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_secs
        while True:
            try:
                server = _RestHttpServer((HOST, self.port), _RestHandler)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the REST server could not bind {self.url}", pytrace=False)
                time.sleep(0.2)
        server.app = self.api
        server.token = self.token
        server.ssl_context = self.tls.ssl_context() if self.tls is not None else None
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={
            "poll_interval": 0.1}, name="tf-serving-rest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(30)
            self._server = self._thread = None

    def restart(self, down_secs: float = 0.0) -> None:
        self.stop()
        time.sleep(down_secs)
        self.start()


# --- fixtures --------------------------------------------------------------------------

@dataclasses.dataclass
class TfServing:
    """Both servers over one repository and one ``Faults``."""

    repository: Repository
    faults: Faults
    grpc: GrpcServer
    rest: RestServer
    paths: dict[str, dict[int, str]]

    @property
    def grpc_target(self) -> str:
        return self.grpc.target

    @property
    def rest_url(self) -> str:
        return self.rest.url


@contextlib.contextmanager
def serving(models: Mapping[str, Mapping[int, str]],
            labels: Mapping[str, Mapping[str, int]] | None = None) -> Iterator[TfServing]:
    repository = Repository(models, labels)
    faults = Faults()
    grpc_server, rest_server = GrpcServer(repository, faults), RestServer(repository, faults)
    grpc_server.start()
    try:
        rest_server.start()
        try:
            yield TfServing(repository, faults, grpc_server, rest_server,
                            {n: dict(v) for n, v in models.items()})
        finally:
            rest_server.stop()
    finally:
        grpc_server.stop()


@pytest.fixture(scope="session")
def tf_serving_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TfServing]:
    """Models: ``five`` (version 1 y = 5x, version 2 y = 10x; labels stable=1, canary=2),
    ``tf1`` (the estimator-style classify/regress/predict model, versions 1 and 2) and
    ``tensors`` (named-tensor predict signatures), all from tests/support/model_zoo.py."""
    from pipelines import models as demo
    from tests.support import model_zoo

    root = tmp_path_factory.mktemp("tf_serving")
    five = {v: demo.build_multiplier_model(str(root / "five" / str(v)), 5.0 * v) for v in (1, 2)}
    tf1 = {v: model_zoo.tf1_estimator_style(root / "tf1" / str(v), factor=5.0 * v)
           for v in (1, 2)}
    tensors = {1: model_zoo.tf_module_tensors(root / "tensors" / "1")}
    with serving({"five": five, "tf1": tf1, "tensors": tensors},
                 labels={"five": {"stable": 1, "canary": 2}}) as servers:
        yield servers


@pytest.fixture
def tf_serving(tf_serving_session: TfServing) -> Iterator[TfServing]:
    """The session's TF Serving stand-in with no faults and zeroed counters."""
    tf_serving_session.faults.reset()
    yield tf_serving_session
    tf_serving_session.faults.reset()
