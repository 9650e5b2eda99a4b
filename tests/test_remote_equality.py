"""Scoring at an endpoint equals scoring the SavedModel itself, through real Beam pipelines.

For the same model, elements and signature, ``bi.RunInference(bi.EndpointSpec(...))``
against the TF Serving stand-in (gRPC and REST, tests/emulators/tf_serving.py) writes the
PredictionLogs and lean results ``bi.RunInference(bi.ModelSpec(...))`` writes for the
local base path of the same numbered versions (``model_spec`` records the name and the
version that answered on both sides): predict, classify, regress and multi-inference,
keyed and unkeyed, ``(key, [examples])`` lists, pre-batched input. KServe v2 (KServe's own
ModelServer) for a tensor signature; Vertex at the HTTP boundary.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import typing

import numpy as np
import pytest

import beam_infer as bi
from tests.support.remote_helpers import TIMEOUT, TOKEN, base_path, canonical, examples, score

pytestmark = pytest.mark.emulators

GRPC, REST = "grpc", "rest"


def endpoint(tf_serving, kind: str, model: str, **fields) -> bi.EndpointSpec:
    fields.setdefault("timeout_secs", TIMEOUT)
    if kind == GRPC:
        return bi.EndpointSpec.from_url(f"grpc://{tf_serving.grpc_target}/models/{model}",
                                        **fields)
    return bi.EndpointSpec.from_url(f"{tf_serving.rest_url}/v1/models/{model}", **fields)


def local(tf_serving, model: str, version: int | None = None, **fields) -> bi.ModelSpec:
    policy = bi.VersionPolicy.specific(version) if version is not None else None
    return bi.ModelSpec(model_path=base_path(tf_serving, model), version_policy=policy,
                        **fields)


def assert_same(remote_spec, local_spec, elements, tmp_path, **kwargs) -> list:
    remote, _ = score(remote_spec, elements, str(tmp_path / "remote"), **kwargs)
    here, _ = score(local_spec, elements, str(tmp_path / "local"), **kwargs)
    assert len(remote) == len(here) == len(elements)
    assert canonical(remote) == canonical(here)
    return remote


@pytest.mark.parametrize("kind", [GRPC, REST])
def test_predict_on_examples_keyed_and_unkeyed(tf_serving, tmp_path, kind):
    values = [1.0, -2.5, 3.25, 0.0, 7.0]
    logs = assert_same(endpoint(tf_serving, kind, "five"), local(tf_serving, "five"),
                       examples(*values), tmp_path / "plain")
    assert {log.predict_log.response.model_spec.version.value for log in logs} == {2}
    keyed = [(f"k{i}", e) for i, e in enumerate(examples(*values))]
    assert_same(endpoint(tf_serving, kind, "five"), local(tf_serving, "five"), keyed,
                tmp_path / "keyed")
    lists = [("a", examples(1.0, 2.0)), ("b", examples(3.0))]
    assert_same(endpoint(tf_serving, kind, "five"), local(tf_serving, "five"), lists,
                tmp_path / "lists")
    assert tf_serving.faults.scored[7.0] == 2  # plain and keyed, each once


@pytest.mark.parametrize("kind", [GRPC, REST])
def test_pinned_versions_and_labels_record_the_version_that_answered(tf_serving, tmp_path,
                                                                     kind):
    values = examples(1.0, 2.0)
    logs = assert_same(endpoint(tf_serving, kind, "five", version=1),
                       local(tf_serving, "five", 1), values, tmp_path / "v1")
    assert {log.predict_log.response.model_spec.version.value for log in logs} == {1}
    if kind == GRPC:  # gRPC answers say which version a label points at
        assert_same(endpoint(tf_serving, kind, "five", version_label="stable"),
                    local(tf_serving, "five", 1), values, tmp_path / "stable")


# The example API (Classify/Regress/MultiInference RPCs) serves classify and regress
# signatures only, so it is not paired with predict.
_MODES = [(GRPC, {}), (GRPC, {"example_api": True}), (REST, {}), (REST, {"example_api": True}),
          (REST, {"columnar": True})]
_SIGNATURES = [("classify",), ("regress",), ("classify", "regress"), ("predict",)]


@pytest.mark.parametrize(("kind", "fields", "signatures"), [
    (kind, fields, signatures) for signatures in _SIGNATURES for kind, fields in _MODES
    if not (fields.get("example_api") and signatures == ("predict",))])
def test_classify_regress_multi_inference_and_predict(tf_serving, tmp_path, kind, fields,
                                                      signatures):
    keyed = [(i, e) for i, e in enumerate(examples(1.0, -2.5, 3.25))]
    assert_same(endpoint(tf_serving, kind, "tf1", version=1, signature_names=signatures,
                         **fields),
                local(tf_serving, "tf1", 1, signature_names=signatures), keyed, tmp_path)


@pytest.mark.parametrize("kind", [GRPC, REST])
def test_lean_results_and_tensor_signatures(tf_serving, tmp_path, kind):
    rows = [{"x": np.array([1.0, 2.0], np.float32), "count": np.int64(2), "label": b"ab"},
            {"x": np.array([0.5, -1.0], np.float32), "count": np.int64(3), "label": b"cd"}]
    assert_same(endpoint(tf_serving, kind, "tensors"), local(tf_serving, "tensors"), rows,
                tmp_path / "logs")
    assert_same(endpoint(tf_serving, kind, "tensors"), local(tf_serving, "tensors"), rows,
                tmp_path / "lean", output=bi.Output.RESULT)
    assert_same(endpoint(tf_serving, kind, "five"), local(tf_serving, "five"),
                examples(1.0, 4.0), tmp_path / "lean_examples", output=bi.Output.RESULT)


@pytest.mark.parametrize("kind", [GRPC, REST])
def test_requests_split_by_rows_and_bytes_join_in_order(tf_serving, tmp_path, kind):
    values = [float(i) for i in range(40)]
    spec = endpoint(tf_serving, kind, "five", max_request_rows=7, max_request_bytes=400,
                    max_in_flight=3, batching=bi.BatchConfig(min_batch_size=40,
                                                             max_batch_size=40))
    assert_same(spec, local(tf_serving, "five", batching=spec.batching), examples(*values),
                tmp_path / "split")
    assert tf_serving.faults.requests["Predict" if kind == GRPC else "REST predict"] > 40 / 7
    assert all(tf_serving.faults.scored[v] == 1 for v in values)
    batches = [examples(*values[:25]), examples(*values[25:])]
    assert_same(spec, local(tf_serving, "five"), batches, tmp_path / "batches",
                on_batches=True)


def test_the_handler_works_with_beams_own_run_inference(tf_serving, tmp_path):
    import apache_beam as beam
    from apache_beam.ml.inference import base

    from tests.support.beam_helpers import run_collect

    handler = bi.EndpointHandler(endpoint(tf_serving, GRPC, "five"), output=bi.Output.RESULT)
    outputs, _ = run_collect(lambda p: {"out": p | beam.Create(examples(1.0, 2.0))
                                        | base.RunInference(handler)}, str(tmp_path))
    assert sorted(r.inference["output_0"].tolist() for r in outputs["out"]) == [[10.0], [20.0]]


# --- KServe v2 ---------------------------------------------------------------------------

def test_kserve_v2_tensor_signature_equals_local_scoring(kserve_server, zoo, tmp_path):
    spec = bi.EndpointSpec.from_url(f"{kserve_server.url}/v2/models/dense",
                                    timeout_secs=TIMEOUT)
    rows = [np.array([1.0], np.float32), np.array([-2.5], np.float32),
            np.array([4.0], np.float32)]
    assert_same(spec, bi.ModelSpec(model_path=zoo.keras3_dense), rows, tmp_path / "logs")
    assert_same(spec, bi.ModelSpec(model_path=zoo.keras3_dense), list(enumerate(rows)),
                tmp_path / "lean", output=bi.Output.RESULT)


# --- Vertex at the HTTP boundary ----------------------------------------------------------

class _Vertex(http.server.BaseHTTPRequestHandler):
    """Vertex's predict route for the keras3 dense model (y = the model's own formula)."""

    protocol_version = "HTTP/1.1"
    seen: typing.ClassVar[list] = []
    model: typing.ClassVar[object] = None

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, self.headers.get("Authorization"), body))
        values = np.array(body["instances"], np.float32)
        if any(v[0] == 666.0 for v in values):
            status, answer = 400, {"error": {"code": 400, "message": "bad instance 666",
                                             "status": "INVALID_ARGUMENT"}}
        else:
            outputs = type(self).model.run("serving_default", {"x": values})
            (value,) = outputs.values()
            status, answer = 200, {"predictions": value.tolist(), "deployedModelId": "42",
                                   "modelVersionId": "3",
                                   "model": "projects/p/locations/l/models/m"}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextlib.contextmanager
def vertex_server(model_path: str):
    from beam_infer.saved_model._loading import LoadedModel

    _Vertex.model = LoadedModel(model_path, ["serve"], ["serving_default"])
    _Vertex.seen.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Vertex)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)


def test_vertex_scores_like_the_deployed_saved_model(zoo, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    rows = [np.array([1.0], np.float32), np.array([2.0], np.float32),
            np.array([666.0], np.float32)]
    with vertex_server(zoo.keras3_dense) as url:
        spec = bi.EndpointSpec.from_url(
            "vertex://projects/p/locations/europe-west4/endpoints/123", api_endpoint=url,
            signatures_from=zoo.keras3_dense, token=bi.BearerToken(file=str(token)),
            model_name="dense", timeout_secs=TIMEOUT)
        logs, failed = score(spec, rows, str(tmp_path / "remote"), dead_letters=True)
        here, _ = score(bi.ModelSpec(model_path=zoo.keras3_dense), rows[:2],
                        str(tmp_path / "local"))
    # Vertex names the version that answered (modelVersionId): logs record it.
    for log in logs:
        assert log.predict_log.response.model_spec.version.value == 3
        assert log.predict_log.response.model_spec.name == "dense"
        for message in (log.predict_log.request, log.predict_log.response):
            message.model_spec.ClearField("name")
            message.model_spec.ClearField("version")
    assert canonical(logs) == canonical(here)
    (letter,) = failed
    assert letter.stage is bi.Stage.INFERENCE and "bad instance 666" in letter.message
    path, auth, _ = _Vertex.seen[0]
    assert path == "/v1/projects/p/locations/europe-west4/endpoints/123:predict"
    assert auth == "Bearer " + TOKEN
    assert TOKEN not in repr(spec) and TOKEN not in letter.message
