"""The TF Serving stand-in answers as TF Serving does: what the remote-client tests trust.

Plain gRPC stubs and ``requests`` against ``tests/emulators/tf_serving.py``: predict on
the ``five`` model (y = 5x, version 2 y = 10x), classify / regress / multi-inference on
the estimator-style TF1 model, metadata, versions and labels, error codes, each fault.
"""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from beam_infer.saved_model._files import read_saved_model
from tests.support import model_zoo

pytestmark = pytest.mark.emulators

TIMEOUT = 60.0


def examples(*values: float) -> list[bytes]:
    return [e.SerializeToString() for e in model_zoo.make_examples(values)]


@pytest.fixture
def stub(tf_serving):
    with grpc.insecure_channel(tf_serving.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def predict_request(name="five", signature="serving_default", alias="examples", values=(1.0, 2.0),
                    version=None, label=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(examples(*values)))
    return request


def test_predict_answers_with_outputs_and_the_version(stub):
    response = stub.Predict(predict_request(), timeout=TIMEOUT)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["output_0"]),
                                  [[10.0], [20.0]])  # latest: version 2, y = 10x
    assert response.model_spec.name == "five"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"


@pytest.mark.parametrize(("version", "label", "expected"),
                         [(1, None, 5.0), (2, None, 10.0), (None, "stable", 5.0),
                          (None, "canary", 10.0)])
def test_versions_and_labels(stub, version, label, expected):
    response = stub.Predict(predict_request(version=version, label=label, values=(1.0,)),
                            timeout=TIMEOUT)
    assert tf.make_ndarray(response.outputs["output_0"]).tolist() == [[expected]]
    assert response.model_spec.version.value == expected / 5


@pytest.mark.parametrize(("kwargs", "code", "text"), [
    ({"name": "nope"}, grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
    ({"version": 7}, grpc.StatusCode.NOT_FOUND, "Specific(five, 7)"),
    ({"label": "gone"}, grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label"),
    ({"signature": "nope"}, grpc.StatusCode.FAILED_PRECONDITION,
     'Serving signature key "nope" not found.'),
    ({"alias": "wrong"}, grpc.StatusCode.INVALID_ARGUMENT, "input size does not match signature"),
])
def test_predict_errors_have_tf_servings_codes(stub, kwargs, code, text):
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(predict_request(**kwargs), timeout=TIMEOUT)
    assert raised.value.code() == code
    assert text in raised.value.details()


def test_a_bad_example_is_invalid_argument_with_tensorflows_message(stub):
    request = predict_request()
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([b"not an example"]))
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parse" in raised.value.details().lower()


def test_output_filter(stub):
    request = predict_request(name="tf1", signature="classify", alias="inputs")
    request.output_filter.append("scores")
    response = stub.Predict(request, timeout=TIMEOUT)
    assert sorted(response.outputs) == ["scores"]
    request.output_filter.append("nope")
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _input(request, *values):
    for e in model_zoo.make_examples(values):
        request.input.example_list.examples.add().CopyFrom(e)
    return request


def test_classify_and_regress_on_the_tf1_model(stub):
    request = _input(classification_pb2.ClassificationRequest(), 1.0)
    request.model_spec.name, request.model_spec.signature_name = "tf1", "classify"
    request.model_spec.version.value = 1
    response = stub.Classify(request, timeout=TIMEOUT)
    (row,) = response.result.classifications
    assert [c.label for c in row.classes] == ["neg", "pos"]
    np.testing.assert_allclose([c.score for c in row.classes],
                               tf.nn.softmax([0.0, 5.0]).numpy(), rtol=1e-6)
    assert response.model_spec.version.value == 1
    request = _input(regression_pb2.RegressionRequest(), 1.0, 3.0)
    request.model_spec.name, request.model_spec.signature_name = "tf1", "regress"
    request.model_spec.version.value = 1
    response = stub.Regress(request, timeout=TIMEOUT)
    assert [r.value for r in response.result.regressions] == [5.0, 15.0]


def test_classify_refuses_a_regress_signature(stub):
    request = _input(classification_pb2.ClassificationRequest(), 1.0)
    request.model_spec.name, request.model_spec.signature_name = "tf1", "regress"
    with pytest.raises(grpc.RpcError) as raised:
        stub.Classify(request, timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "method_name" in raised.value.details()


def test_multi_inference(stub):
    request = _input(inference_pb2.MultiInferenceRequest(), 2.0)
    for name, method in (("classify", tf.saved_model.CLASSIFY_METHOD_NAME),
                         ("regress", tf.saved_model.REGRESS_METHOD_NAME)):
        task = request.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = "tf1", name
        task.model_spec.version.value = 1
    response = stub.MultiInference(request, timeout=TIMEOUT)
    classify, regress = response.results
    assert classify.model_spec.signature_name == "classify"
    assert len(classify.classification_result.classifications[0].classes) == 2
    assert regress.regression_result.regressions[0].value == 10.0


def test_metadata_is_the_saved_models_signature_def_map(stub, tf_serving):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "tf1"
    response = stub.GetModelMetadata(request, timeout=TIMEOUT)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    (graph,) = read_saved_model(tf_serving.paths["tf1"][2]).meta_graphs
    assert dict(signature_map.signature_def) == dict(graph.signature_def)
    assert response.model_spec.version.value == 2
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=request.model_spec), timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- REST ---------------------------------------------------------------------------------

def test_rest_predict_row_and_columnar(tf_serving):
    url = f"{tf_serving.rest_url}/v1/models/five/versions/1:predict"
    b64 = [{"b64": __import__("base64").b64encode(e).decode()} for e in examples(1.0, 2.0)]
    row = requests.post(url, json={"instances": b64}, timeout=TIMEOUT)
    assert row.json() == {"predictions": [[5.0], [10.0]]}
    columnar = requests.post(url, json={"inputs": b64}, timeout=TIMEOUT)
    assert columnar.json() == {"outputs": [[5.0], [10.0]]}
    multi = requests.post(f"{tf_serving.rest_url}/v1/models/tensors:predict", json={
        "instances": [{"x": [1.0, 2.0], "count": 2, "label": "a"}]}, timeout=TIMEOUT)
    assert multi.json() == {"predictions": [{"total": 30.0, "doubled": [2.0, 4.0],
                                             "shout": "A"}]}


def test_rest_classify_regress_labels_and_metadata(tf_serving):
    base = f"{tf_serving.rest_url}/v1/models/tf1"
    classify = requests.post(f"{base}/versions/1:classify", json={
        "signature_name": "classify", "examples": [{"x": 1.0}]}, timeout=TIMEOUT).json()
    assert [label for label, _ in classify["results"][0]] == ["neg", "pos"]
    regress = requests.post(f"{base}/versions/1:regress", json={
        "signature_name": "regress", "examples": [{"x": [2.0]}]}, timeout=TIMEOUT).json()
    assert regress == {"results": [10.0]}
    label = requests.post(f"{tf_serving.rest_url}/v1/models/five/labels/stable:predict", json={
        "instances": [{"b64": __import__("base64").b64encode(examples(1.0)[0]).decode()}]},
        timeout=TIMEOUT)
    assert label.json() == {"predictions": [[5.0]]}
    metadata = requests.get(f"{base}/versions/1/metadata", timeout=TIMEOUT).json()
    assert metadata["model_spec"]["version"] == "1"
    assert "classify" in metadata["metadata"]["signature_def"]["signature_def"]
    status = requests.get(base, timeout=TIMEOUT).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"


def test_rest_errors(tf_serving):
    missing = requests.post(f"{tf_serving.rest_url}/v1/models/nope:predict",
                            json={"instances": [1]}, timeout=TIMEOUT)
    assert missing.status_code == 404 and "Servable not found" in missing.json()["error"]
    bad = requests.post(f"{tf_serving.rest_url}/v1/models/five:predict",
                        json={"instances": ["not an example"]}, timeout=TIMEOUT)
    assert bad.status_code == 400 and bad.json()["error"]


# --- faults ---------------------------------------------------------------------------------

def test_grpc_faults(stub, tf_serving):
    tf_serving.faults.fail_next(2)
    tf_serving.faults.fail_next(1, "exhausted")
    codes = []
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(predict_request(), timeout=TIMEOUT)
        codes.append(raised.value.code())
    assert codes == [grpc.StatusCode.UNAVAILABLE] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
    stub.Predict(predict_request(), timeout=TIMEOUT)
    tf_serving.faults.delay_next(1, 30.0)
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(predict_request(), timeout=1.0)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    tf_serving.faults.bad_values.add(2.0)
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(predict_request(values=(1.0, 2.0)), timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x=2.0 is marked bad" in raised.value.details()
    assert tf_serving.faults.requests["Predict"] == 6
    assert tf_serving.faults.scored == {1.0: 1, 2.0: 1}  # only the one that answered


def test_grpc_restart_on_the_same_port(tf_serving):
    with grpc.insecure_channel(tf_serving.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        stub.Predict(predict_request(), timeout=TIMEOUT)
        tf_serving.faults.delay_next(1, 20.0)
        errors = []

        def slow():
            try:
                stub.Predict(predict_request(), timeout=TIMEOUT)
            except grpc.RpcError as e:
                errors.append(e.code())

        thread = threading.Thread(target=slow)
        thread.start()
        while tf_serving.faults.requests["Predict"] < 2:
            thread.join(0.05)
        tf_serving.grpc.restart()
        thread.join(TIMEOUT)
        assert errors == [grpc.StatusCode.UNAVAILABLE]
        response = stub.Predict(predict_request(), timeout=TIMEOUT, wait_for_ready=True)
        assert response.model_spec.version.value == 2


def test_rest_faults(tf_serving):
    url = f"{tf_serving.rest_url}/v1/models/tf1:regress"
    body = {"signature_name": "regress", "examples": [{"x": 1.0}]}
    tf_serving.faults.fail_next(1)
    tf_serving.faults.fail_next(1, "exhausted")
    assert requests.post(url, json=body, timeout=TIMEOUT).status_code == 503
    assert requests.post(url, json=body, timeout=TIMEOUT).status_code == 429
    tf_serving.faults.drop_next(1)
    with pytest.raises(requests.ConnectionError):
        requests.post(url, json=body, timeout=TIMEOUT)
    tf_serving.faults.delay_next(1, 2.0)
    with pytest.raises(requests.Timeout):
        requests.post(url, json=body, timeout=0.5)
    tf_serving.rest.restart()
    assert requests.post(url, json=body, timeout=TIMEOUT).json() == {"results": [10.0]}
    # The delayed request is still scored, after the client gave up (as a real server does).
    deadline = time.monotonic() + TIMEOUT
    while tf_serving.faults.rows_scored < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tf_serving.faults.scored == {1.0: 2}


# --- KServe (its own ModelServer, in a subprocess) -----------------------------------------

def test_kserve_v1_and_v2_answer_and_fault(kserve_server):
    url = kserve_server.url
    v1 = requests.post(f"{url}/v1/models/dense:predict", json={"instances": [[1.0], [2.0]]},
                       timeout=TIMEOUT)
    assert v1.json() == {"predictions": [[5.0], [10.0]]}
    v2 = requests.post(f"{url}/v2/models/dense/infer", json={"inputs": [
        {"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [1.0, 2.0]}]},
        timeout=TIMEOUT).json()
    assert v2["outputs"][0]["data"] == [5.0, 10.0] and v2["outputs"][0]["shape"] == [2, 1]
    metadata = requests.get(f"{url}/v2/models/dense", timeout=TIMEOUT).json()
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}]
    kserve_server.control(fail=1, status=503)
    kserve_server.control(fail=1, status=429)
    body = {"instances": [[3.0]]}
    assert requests.post(f"{url}/v1/models/dense:predict", json=body,
                         timeout=TIMEOUT).status_code == 503
    assert requests.post(f"{url}/v1/models/dense:predict", json=body,
                         timeout=TIMEOUT).status_code == 429
    kserve_server.control(bad=[3.0])
    bad = requests.post(f"{url}/v1/models/dense:predict", json=body, timeout=TIMEOUT)
    assert bad.status_code == 400 and "x=3.0 is marked bad" in bad.json()["error"]
    kserve_server.control(delay=1, delay_secs=3.0)
    with pytest.raises(requests.Timeout):
        requests.post(f"{url}/v1/models/dense:predict", json={"instances": [[4.0]]}, timeout=0.5)
    counters = kserve_server.control()
    assert counters["requests"] == 6
