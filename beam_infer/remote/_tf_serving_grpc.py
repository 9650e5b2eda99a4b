"""TF Serving's gRPC ``PredictionService``: requests from calls, answers back as numpy.

A call is ``(signature name, {input alias: batch})``, as ``ServingModel.call`` takes it;
its answer is ``{output alias: batch}`` with the dtypes and shapes the SavedModel itself
returns, so the same PredictionLogs come out of a local and a remote model.

Every call goes through ``Predict`` by default, classify and regress signatures
included (TF Serving runs any signature through Predict): its answer holds the
signature's output tensors as they are (``classes`` DT_STRING [N, C], ``outputs``
float32 [N, 1]), exactly the dict the local model gives. ``Classify`` / ``Regress`` /
``MultiInference`` (``example_api=True``) answer with Classifications and Regressions
instead, which lose the output shapes and need the signature (from
``GetModelMetadata``) to be turned back into tensors, and take ``tf.train.Example``s
only (no SequenceExamples); they save requests when several signatures are asked for
(one MultiInference instead of one Predict each).

``metadata()`` reads ``GetModelMetadata``: the model's SignatureDefs (the same protos
the SavedModel holds, so one planner reads both) and the version that answered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import wrappers_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from beam_infer._messages import detail
from beam_infer.remote._common import (
    DEFAULT_TIMEOUT_SECS,
    BearerToken,
    CallRecord,
    RemoteError,
    RemoteInputError,
    RemoteServerError,
    RequestTooLargeError,
    RetryableRemoteError,
    Stopwatch,
    Tls,
    UntrustedServerError,
    as_numpy,
    read_ca_file,
    redact,
    row_count,
    untrusted_server,
)

CLASSIFY = tf.saved_model.CLASSIFY_METHOD_NAME
REGRESS = tf.saved_model.REGRESS_METHOD_NAME
PROTOCOL = "tf_serving_grpc"

#: gRPC's default cap is 4 MiB; bulk scoring needs more (TF Serving #288).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

Calls = Sequence[tuple[str, Mapping[str, np.ndarray]]]

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.RESOURCE_EXHAUSTED}


@dataclasses.dataclass(frozen=True)
class RemoteResult:
    """What a remote ``call`` gives back: one output dict per call (the batch first), the
    version that answered (None when the protocol does not say) and one record per request."""

    outputs: list[dict[str, np.ndarray]]
    version: int | None
    records: list[CallRecord]


# --- codecs (pure) ---------------------------------------------------------------------

def model_spec(name: str, *, version: int | None = None, version_label: str | None = None,
               signature_name: str = "") -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=name, signature_name=signature_name)
    if version is not None:
        spec.version.CopyFrom(wrappers_pb2.Int64Value(value=int(version)))
    elif version_label:
        spec.version_label = version_label
    return spec


def predict_request(spec: model_pb2.ModelSpec, signature_name: str,
                    feeds: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()
                    ) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(output_filter=list(output_filter))
    request.model_spec.CopyFrom(spec)
    request.model_spec.signature_name = signature_name
    for alias, value in feeds.items():
        request.inputs[alias].CopyFrom(tensor_proto(as_numpy(value)))
    return request


def tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """``tf.make_tensor_proto(array)``, the same message; an array of bytes (serialized
    examples, raw strings) is built in one call, without TF's Python loop per item."""
    if array.dtype == object:
        items = array.ravel().tolist()
        if set(map(type, items)) == {bytes}:
            return tensor_pb2.TensorProto(
                dtype=types_pb2.DT_STRING, string_val=items,
                tensor_shape=tensor_shape_pb2.TensorShapeProto(
                    dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape]))
    return tf.make_tensor_proto(array)


def predict_outputs(response: predict_pb2.PredictResponse) -> dict[str, np.ndarray]:
    return {alias: tf.make_ndarray(tensor) for alias, tensor in response.outputs.items()}


def answered_version(spec: model_pb2.ModelSpec) -> int | None:
    return spec.version.value if spec.HasField("version") else None


def example_input(serialized: Sequence[bytes] | np.ndarray) -> input_pb2.Input:
    """Serialized ``tf.train.Example``s as TF Serving's ``Input.example_list``."""
    result = input_pb2.Input()
    for record in as_numpy(serialized).ravel().tolist():
        result.example_list.examples.add().ParseFromString(bytes(record))
    return result


def classification_outputs(result: classification_pb2.ClassificationResult,
                           signature: meta_graph_pb2.SignatureDef) -> dict[str, np.ndarray]:
    """Classifications back into the ``classes`` / ``scores`` tensors of the signature."""
    outputs: dict[str, np.ndarray] = {}
    rows = list(result.classifications)
    if tf.saved_model.CLASSIFY_OUTPUT_CLASSES in signature.outputs:
        outputs["classes"] = np.array(
            [[c.label.encode() for c in row.classes] for row in rows], dtype=object
        ).reshape(len(rows), -1)
    if tf.saved_model.CLASSIFY_OUTPUT_SCORES in signature.outputs:
        outputs["scores"] = np.array(
            [[c.score for c in row.classes] for row in rows], dtype=np.float32
        ).reshape(len(rows), -1)
    return outputs


def regression_outputs(result: regression_pb2.RegressionResult,
                       signature: meta_graph_pb2.SignatureDef) -> dict[str, np.ndarray]:
    """Regressions back into the signature's ``outputs`` tensor ([N] or [N, 1])."""
    values = np.array([r.value for r in result.regressions], dtype=np.float32)
    info = signature.outputs[tf.saved_model.REGRESS_OUTPUTS]
    if not info.tensor_shape.unknown_rank and len(info.tensor_shape.dim) == 2:
        values = values.reshape(-1, 1)
    return {"outputs": values}


def signature_defs(response: get_model_metadata_pb2.GetModelMetadataResponse
                   ) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs a ``GetModelMetadata`` answer packs (a SignatureDefMap in an Any)."""
    packed = response.metadata.get("signature_def")
    if packed is None:
        raise RemoteServerError("GetModelMetadata answered without signature_def metadata")
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    if not packed.Unpack(signature_map):
        raise RemoteServerError(f"GetModelMetadata's signature_def is a {packed.type_url}, "
                                "not a tensorflow.serving.SignatureDefMap")
    return dict(signature_map.signature_def)


def classify_error(error: grpc.RpcError, record: CallRecord, secrets: Sequence = (), *,
                   tls: Tls | None = None) -> RemoteError:
    """The beam_infer error for a failed RPC (see ``_common``)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    text = redact(details or "", *secrets)
    message = f"TF Serving {record.method} at {record.target} failed: {code.name}: {text}"
    fix = untrusted_server(text, tls, grpc=True) if code is grpc.StatusCode.UNAVAILABLE \
        else None
    if fix is not None:  # a refused certificate is refused again: not retried
        return UntrustedServerError(f"TF Serving {record.method} at {record.target}: {fix} "
                                    f"({code.name}: {detail(text)})", record)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in text:
        return RequestTooLargeError(message, record)
    if code in _RETRYABLE:
        return RetryableRemoteError(message, record,
                                    throttled=code is grpc.StatusCode.RESOURCE_EXHAUSTED)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return RemoteInputError(message, record, server_message=text)
    return RemoteServerError(message, record)


# --- the client ------------------------------------------------------------------------

class TfServingGrpcClient:
    """A TF Serving ``PredictionService`` over gRPC for one model (and version or label).

    Args:
        target: ``host:port``.
        model_name: The served model's name.
        version: Ask this version; ``version_label``: ask the version this label points
            at; neither: the latest.
        timeout_secs: Each RPC's deadline.
        tls: Use TLS (None: plain text, for loopback and sidecars).
        token: A bearer token sent as ``authorization`` metadata.
        max_message_bytes: The send and receive cap of the channel.
        example_api: Call Classify / Regress / MultiInference for classify and regress
            signatures instead of Predict (see the module docstring); needs
            ``signatures`` or a ``metadata()`` call first.
        signatures: The model's SignatureDefs, if already read.
    """

    def __init__(self, target: str, model_name: str, *, version: int | None = None,
                 version_label: str | None = None,
                 timeout_secs: float = DEFAULT_TIMEOUT_SECS, tls: Tls | None = None,
                 token: BearerToken | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 example_api: bool = False,
                 signatures: Mapping[str, meta_graph_pb2.SignatureDef] | None = None):
        if version is not None and version_label:
            raise ValueError("give a version or a version_label, not both")
        self.target = target
        self.model_name = model_name
        self.version = version
        self.version_label = version_label
        self.timeout_secs = timeout_secs
        self.example_api = example_api
        self._tls = tls
        self._token = token
        self._max = max_message_bytes
        self._signatures = dict(signatures) if signatures is not None else None
        self._channel: grpc.Channel | None = None
        self._stub: prediction_service_pb2_grpc.PredictionServiceStub | None = None

    def __repr__(self) -> str:
        return (f"TfServingGrpcClient(target={self.target!r}, model_name={self.model_name!r}, "
                f"version={self.version!r}, version_label={self.version_label!r}, "
                f"tls={self._tls is not None}, token={'<redacted>' if self._token else None})")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_channel"] = state["_stub"] = None
        return state

    def _spec(self, signature_name: str = "") -> model_pb2.ModelSpec:
        return model_spec(self.model_name, version=self.version,
                          version_label=self.version_label, signature_name=signature_name)

    def _service(self) -> prediction_service_pb2_grpc.PredictionServiceStub:
        if self._stub is None:
            options = [("grpc.max_send_message_length", self._max),
                       ("grpc.max_receive_message_length", self._max)]
            if self._tls is not None:
                root = read_ca_file(self._tls)
                if self._tls.server_name:
                    options.append(("grpc.ssl_target_name_override", self._tls.server_name))
                self._channel = grpc.secure_channel(
                    self.target, grpc.ssl_channel_credentials(root_certificates=root), options)
            else:
                self._channel = grpc.insecure_channel(self.target, options)
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        return self._stub

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = self._stub = None

    def _rpc(self, method: str, name: str, request, rows: int):
        metadata = []
        secret = None
        if self._token is not None:
            secret = self._token.token()
            metadata.append(("authorization", "Bearer " + secret.reveal()))
        watch = Stopwatch()
        size = request.ByteSize()
        try:
            response = getattr(self._service(), method)(
                request, timeout=self.timeout_secs, metadata=metadata or None)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
            record = CallRecord(PROTOCOL, name, self.target, code.name, False, watch.secs(),
                                size, 0, rows)
            raise classify_error(e, record, [secret], tls=self._tls) from None
        record = CallRecord(PROTOCOL, name, self.target, "OK", True, watch.secs(), size,
                            response.ByteSize(), rows)
        return response, record

    def metadata(self) -> tuple[dict[str, meta_graph_pb2.SignatureDef], int | None, CallRecord]:
        """The model's SignatureDefs, the version that answered and the call's record."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.CopyFrom(self._spec())
        response, record = self._rpc("GetModelMetadata", "metadata", request, 0)
        self._signatures = signature_defs(response)
        return dict(self._signatures), answered_version(response.model_spec), record

    def requests(self, calls: Calls) -> list[tuple[str, str, object, int]]:
        """The RPCs ``call`` makes for ``calls``: (method, metric name, request, rows)."""
        if self.example_api and calls and all(
                self._method(name) in (CLASSIFY, REGRESS) for name, _ in calls):
            feed = next(iter(calls[0][1].values()))
            rows = len(feed)
            examples = example_input(feed)
            if len(calls) > 1:
                request = inference_pb2.MultiInferenceRequest(input=examples)
                for name, _ in calls:
                    task = request.tasks.add(method_name=self._method(name))
                    task.model_spec.CopyFrom(self._spec(name))
                return [("MultiInference", "multi_inference", request, rows)]
            name = calls[0][0]
            if self._method(name) == CLASSIFY:
                request = classification_pb2.ClassificationRequest(input=examples)
                kind = ("Classify", "classify")
            else:
                request = regression_pb2.RegressionRequest(input=examples)
                kind = ("Regress", "regress")
            request.model_spec.CopyFrom(self._spec(name))
            return [(*kind, request, rows)]
        return [("Predict", "predict", predict_request(self._spec(), name, feeds),
                 row_count(feeds)) for name, feeds in calls]

    def request_bytes(self, calls: Calls) -> int:
        """The largest request ``call(calls)`` sends, in bytes (for capping batches)."""
        return max((r.ByteSize() for _, _, r, _ in self.requests(calls)), default=0)

    @staticmethod
    def prepared_bytes(prepared: Sequence[tuple[str, str, object, int]]) -> int:
        """The largest of ``requests(calls)``'s requests, in bytes."""
        return max((r.ByteSize() for _, _, r, _ in prepared), default=0)

    def call(self, calls: Calls, prepared: Sequence | None = None) -> RemoteResult:
        """Runs the calls on one batch; see the module docstring.

        ``prepared``: what ``requests(calls)`` returned, if already built (not rebuilt).
        """
        outputs: list[dict[str, np.ndarray]] = []
        records: list[CallRecord] = []
        version = None
        for method, name, request, rows in (self.requests(calls) if prepared is None
                                            else prepared):
            response, record = self._rpc(method, name, request, rows)
            records.append(record)
            if method == "Predict":
                outputs.append(predict_outputs(response))
                version = answered_version(response.model_spec)
            elif method == "MultiInference":
                for (signature_name, _), result in zip(calls, response.results, strict=True):
                    signature = self._signatures[signature_name]
                    outputs.append(
                        classification_outputs(result.classification_result, signature)
                        if result.HasField("classification_result") else
                        regression_outputs(result.regression_result, signature))
                    version = answered_version(result.model_spec)
            else:
                signature = self._signatures[calls[0][0]]
                outputs.append(classification_outputs(response.result, signature)
                               if method == "Classify" else
                               regression_outputs(response.result, signature))
                version = answered_version(response.model_spec)
        return RemoteResult(outputs, version, records)

    def _method(self, signature_name: str) -> str:
        if self._signatures is None:
            self.metadata()
        signature = self._signatures.get(signature_name)
        return signature.method_name if signature is not None else ""
