"""The remote codecs without a server: round trips, b64, shapes, dtypes, errors, redaction."""

from __future__ import annotations

import pickle

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from beam_infer.remote import BearerToken, Secret, _kserve_v2, _tf_serving_grpc, _tf_serving_rest
from beam_infer.remote._common import (
    CallRecord,
    RemoteInputError,
    RemoteServerError,
    RequestTooLargeError,
    RetryableRemoteError,
    redact,
)
from beam_infer.remote._http import tf_serving_error_text

BINARY = np.array([b"\x00\xff\x10", b"", "é".encode()], dtype=object)
FEEDS = {"x": np.array([[1.5, -2.0], [3.0, 1e-8]], np.float32),
         "n": np.array([1, 2**40], np.int64), "s": BINARY[:2]}


def _signature(**outputs: tuple[tf.DType, list[int]]) -> meta_graph_pb2.SignatureDef:
    signature = meta_graph_pb2.SignatureDef()
    for alias, (dtype, dims) in outputs.items():
        info = signature.outputs[alias]
        info.dtype = dtype.as_datatype_enum
        for d in dims:
            info.tensor_shape.dim.add(size=d)
    return signature


def _same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k])


def test_grpc_predict_round_trip():
    spec = _tf_serving_grpc.model_spec("m", version=3)
    request = _tf_serving_grpc.predict_request(spec, "sig", FEEDS)
    assert request.model_spec.version.value == 3 and request.model_spec.signature_name == "sig"
    response = _tf_serving_grpc.predict_pb2.PredictResponse()
    for alias, tensor in request.inputs.items():
        response.outputs[alias].CopyFrom(tensor)
    _same(_tf_serving_grpc.predict_outputs(response), FEEDS)
    assert _tf_serving_grpc.answered_version(response.model_spec) is None
    assert _tf_serving_grpc.model_spec("m", version_label="x").version_label == "x"


@pytest.mark.parametrize("array", [
    BINARY, BINARY.reshape(3, 1), np.array([], dtype=object), FEEDS["x"], FEEDS["n"],
    np.array(["text", "é"], dtype=object), np.array([b"a", "mixed"], dtype=object)],
    ids=["bytes", "bytes-2d", "empty", "float32", "int64", "str", "mixed"])
def test_grpc_tensors_are_tf_make_tensor_proto_message_for_message(array):
    assert _tf_serving_grpc.tensor_proto(array) == tf.make_tensor_proto(array)


@pytest.mark.parametrize("columnar", [False, True])
def test_rest_json_round_trip(columnar):
    body = _tf_serving_rest.predict_body("sig", FEEDS, columnar=columnar)
    assert body["signature_name"] == "sig"
    if columnar:
        answer = {"outputs": body["inputs"]}
    else:
        assert body["instances"][0]["s"] == {"b64": "AP8Q"}
        answer = {"predictions": body["instances"]}
    signature = _signature(x=(tf.float32, [-1, 2]), n=(tf.int64, [-1]), s=(tf.string, [-1]))
    _same(_tf_serving_rest.predict_outputs(answer, signature), FEEDS)


def test_rest_one_output_and_text_strings():
    signature = _signature(classes=(tf.string, [-1, 2]))
    out = _tf_serving_rest.predict_outputs({"predictions": [["neg", "pos"], ["a", "é"]]},
                                           signature)
    assert out["classes"].dtype == object and out["classes"].shape == (2, 2)
    assert out["classes"][1, 1] == "é".encode()
    assert _tf_serving_rest.from_json({"b64": "AP8Q"}, tf.string)[()] == b"\x00\xff\x10"
    with pytest.raises(RemoteServerError):
        _tf_serving_rest.predict_outputs({"nothing": 1}, signature)


def test_rest_examples_and_urls():
    example = tf.train.Example()
    example.features.feature["f"].float_list.value.append(0.1)
    example.features.feature["i"].int64_list.value.append(7)
    example.features.feature["b"].bytes_list.value.append(b"\xff")
    assert _tf_serving_rest.example_json(example.SerializeToString()) == {
        "f": [float(np.float32(0.1))], "i": [7], "b": [{"b64": "/w=="}]}
    assert _tf_serving_rest.model_url("http://h/", "m", version=2) == "http://h/v1/models/m/versions/2"
    assert _tf_serving_rest.model_url("http://h", "m", version_label="a") == \
        "http://h/v1/models/m/labels/a"


def test_classify_and_regress_answers_back_into_tensors():
    classify = _signature(classes=(tf.string, [-1, 2]), scores=(tf.float32, [-1, 2]))
    out = _tf_serving_rest.classify_outputs({"results": [[["neg", 0.25], ["pos", 0.75]]]},
                                            classify)
    assert out["classes"].tolist() == [[b"neg", b"pos"]]
    assert out["scores"].dtype == np.float32 and out["scores"].tolist() == [[0.25, 0.75]]
    regress = _signature(outputs=(tf.float32, [-1, 1]))
    assert _tf_serving_rest.regress_outputs({"results": [1.0, 2.0]}, regress)["outputs"].shape \
        == (2, 1)
    result = _tf_serving_grpc.regression_pb2.RegressionResult()
    result.regressions.add(value=3.0)
    assert _tf_serving_grpc.regression_outputs(
        result, _signature(outputs=(tf.float32, [-1])))["outputs"].shape == (1,)


def test_kserve_v2_round_trip_with_binary_bytes():
    body, headers = _kserve_v2.infer_body(FEEDS)
    length = int(headers[_kserve_v2.HEADER])
    header = __import__("json").loads(body[:length])
    assert [i["datatype"] for i in header["inputs"]] == ["FP32", "INT64", "BYTES"]
    assert header["inputs"][2]["parameters"]["binary_data_size"] == len(body) - length
    # The answer as a server with the binary extension writes it: the same layout.
    answer = {"model_name": "m", "model_version": "4", "outputs": [
        {"name": i["name"], "shape": i["shape"], "datatype": i["datatype"],
         **({"data": i["data"]} if "data" in i else {"parameters": i["parameters"]})}
        for i in header["inputs"]]}
    text = __import__("json").dumps(answer).encode()
    outputs, version = _kserve_v2.infer_outputs(
        text + body[length:], {_kserve_v2.HEADER: str(len(text))})
    _same(outputs, FEEDS)
    assert version == "4"
    _, headers = _kserve_v2.infer_body({"x": FEEDS["x"]})
    assert _kserve_v2.HEADER not in headers


def test_kserve_v2_metadata_into_tensor_infos():
    metadata = _kserve_v2.model_metadata({"name": "m", "versions": ["1"], "platform": "tf",
                                         "inputs": [{"name": "x", "datatype": "FP32",
                                                     "shape": [-1, 1]}],
                                         "outputs": [{"name": "y", "datatype": "BYTES",
                                                      "shape": [-1]}]})
    assert metadata.inputs[0].describe() == "x: float32[?,1]"
    assert metadata.outputs[0].dtype == tf.string
    signature = metadata.signature_def()
    assert signature.method_name == tf.saved_model.PREDICT_METHOD_NAME
    assert [d.size for d in signature.inputs["x"].tensor_shape.dim] == [-1, 1]


class _RpcError(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


RECORD = CallRecord("tf_serving_grpc", "predict", "h:1", "X", False, 0.1, 10, 0, 2)


@pytest.mark.parametrize(("code", "details", "kind", "throttled"), [
    (grpc.StatusCode.UNAVAILABLE, "down", RetryableRemoteError, False),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "slow", RetryableRemoteError, False),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "quota", RetryableRemoteError, True),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (5 vs. 4)",
     RequestTooLargeError, False),
    (grpc.StatusCode.INVALID_ARGUMENT, "bad " * 1000, RemoteInputError, False),
    (grpc.StatusCode.NOT_FOUND, "no model", RemoteServerError, False),
    (grpc.StatusCode.FAILED_PRECONDITION, "no signature", RemoteServerError, False),
])
def test_grpc_errors_are_classified_and_bounded(code, details, kind, throttled):
    error = _tf_serving_grpc.classify_error(_RpcError(code, details), RECORD)
    assert type(error) is kind
    assert getattr(error, "throttled", False) is throttled
    assert len(str(error)) <= 2000
    if kind is RemoteInputError:
        assert len(error.server_message) <= 500 and error.server_message.startswith("bad bad")


def test_error_bodies():
    assert tf_serving_error_text(b'{"error": "x"}') == "x"
    assert tf_serving_error_text(b'{"error": {"code": 400, "message": "y"}}') == "y"
    assert tf_serving_error_text(b'{"detail": "z"}') == "z"
    assert tf_serving_error_text(b"plain") == "plain"


def test_tokens_are_redacted(tmp_path, monkeypatch):
    secret = Secret("tok-123")
    assert "tok-123" not in repr(secret) and "tok-123" not in str(secret)
    assert "tok-123" not in repr(BearerToken(value="tok-123"))
    assert BearerToken(value="tok-123").header() == "Bearer tok-123"
    (tmp_path / "t").write_text("from-file\n")
    assert BearerToken(file=str(tmp_path / "t")).token().reveal() == "from-file"
    monkeypatch.setenv("MY_TOKEN", "from-env")
    assert BearerToken(env="MY_TOKEN").header() == "Bearer from-env"
    assert redact("Bearer tok-123 echoed", secret) == "Bearer <redacted> echoed"
    error = _tf_serving_grpc.classify_error(
        _RpcError(grpc.StatusCode.UNAUTHENTICATED, "bad token tok-123"), RECORD, [secret])
    assert "tok-123" not in str(error)
    with pytest.raises(ValueError, match="exactly one"):
        BearerToken(value="a", env="B")
    client = _tf_serving_grpc.TfServingGrpcClient("h:1", "m", token=BearerToken(value="tok-123"))
    assert "tok-123" not in repr(client)
    assert pickle.loads(pickle.dumps(client)).model_name == "m"
