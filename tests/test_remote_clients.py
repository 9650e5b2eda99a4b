"""Each remote client against the TF Serving stand-in: the same outputs as local scoring.

For the same SavedModel and feeds, ``client.call(...)`` must give what
``LoadedModel(path, tags, signatures).run(name, feeds)`` gives (aliases, dtypes, shapes,
values), for predict, classify, regress and multi-inference; metadata must be the
SavedModel's own SignatureDefs; and each fault must raise the right error class.
Vertex is checked at the HTTP boundary against a small local server in this module.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import ssl
import threading
import typing

import numpy as np
import pytest

from beam_infer._signatures import signatures_of
from beam_infer.remote import (
    BearerToken,
    RemoteInputError,
    RemoteServerError,
    RetryableRemoteError,
    TfServingGrpcClient,
    TfServingRestClient,
    Tls,
    UntrustedServerError,
    VertexClient,
)
from beam_infer.saved_model._files import read_saved_model
from beam_infer.saved_model._loading import LoadedModel
from tests.support import model_zoo
from tests.support.certificates import CertificateAuthority

pytestmark = pytest.mark.emulators

TIMEOUT = 60.0
TOKEN = "s3cret-token-value"


def examples(*values: float) -> np.ndarray:
    return np.array([e.SerializeToString() for e in model_zoo.make_examples(values)],
                    dtype=object)


def assert_same(remote: dict, local: dict) -> None:
    assert sorted(remote) == sorted(local)
    for alias, value in local.items():
        assert remote[alias].dtype == value.dtype, alias
        assert remote[alias].shape == value.shape, alias
        np.testing.assert_array_equal(remote[alias], value)


CLIENTS = [
    ("grpc", {}), ("grpc", {"example_api": True}), ("rest", {}), ("rest", {"columnar": True}),
    ("rest", {"example_api": True}),
]


def client(tf_serving, kind: str, model: str, **kwargs):
    kwargs.setdefault("timeout_secs", TIMEOUT)
    if kind == "grpc":
        return TfServingGrpcClient(tf_serving.grpc_target, model, **kwargs)
    return TfServingRestClient(tf_serving.rest_url, model, **kwargs)


@pytest.fixture(scope="module")
def local_tf1(tf_serving_session):
    return LoadedModel(tf_serving_session.paths["tf1"][1], ["serve"],
                       ["classify", "regress", "predict", "classify_scores_only"])


@pytest.mark.parametrize(("kind", "kwargs"), CLIENTS)
@pytest.mark.parametrize("signatures", [("classify",), ("regress",), ("classify_scores_only",),
                                        ("classify", "regress"), ("predict",)])
def test_example_signatures_equal_local_scoring(tf_serving, local_tf1, kind, kwargs, signatures):
    feed = examples(1.0, -2.5, 3.25)
    calls = [(name, {"examples" if name == "predict" else "inputs": feed}) for name in signatures]
    remote = client(tf_serving, kind, "tf1", version=1, **kwargs)
    result = remote.call(calls)
    for (name, feeds), outputs in zip(calls, result.outputs, strict=True):
        assert_same(outputs, local_tf1.run(name, feeds))
    if kind == "grpc":
        assert result.version == 1
    assert all(r.ok and r.rows == 3 for r in result.records)
    assert tf_serving.faults.scored == {1.0: len(calls), -2.5: len(calls), 3.25: len(calls)}


@pytest.mark.parametrize(("kind", "kwargs"), [c for c in CLIENTS if not c[1].get("example_api")])
def test_named_tensors_equal_local_scoring(tf_serving, kind, kwargs):
    local = LoadedModel(tf_serving.paths["tensors"][1], ["serve"],
                        ["serving_default", "scalar", "text_length"])
    calls = [("serving_default", {"x": np.array([[1.0, 2.0], [0.5, -1.0]], np.float32),
                                  "count": np.array([2, 3], np.int64),
                                  "label": np.array([b"ab", "é".encode()], dtype=object)}),
             ("scalar", {"v": np.array([1.5, 2.0], np.float32)}),
             ("text_length", {"text": np.array(["héllo".encode(), b""], dtype=object)})]
    result = client(tf_serving, kind, "tensors", **kwargs).call(calls)
    for (name, feeds), outputs in zip(calls, result.outputs, strict=True):
        assert_same(outputs, local.run(name, feeds))


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_versions_labels_and_the_version_that_answered(tf_serving, kind):
    feed = {"examples": examples(1.0)}
    latest = client(tf_serving, kind, "five").call([("serving_default", feed)])
    assert latest.outputs[0]["output_0"].tolist() == [[10.0]]
    stable = client(tf_serving, kind, "five", version_label="stable").call(
        [("serving_default", feed)])
    assert stable.outputs[0]["output_0"].tolist() == [[5.0]]
    if kind == "grpc":  # REST answers do not say which version answered
        assert (latest.version, stable.version) == (2, 1)


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_metadata_is_the_saved_models_signature_defs(tf_serving, kind):
    signatures, version, record = client(tf_serving, kind, "tf1", version=1).metadata()
    (graph,) = read_saved_model(tf_serving.paths["tf1"][1]).meta_graphs
    assert signatures == dict(graph.signature_def)
    assert version == 1 and record.ok
    assert signatures_of(signatures) == signatures_of(graph.signature_def)


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_faults_are_classified(tf_serving, kind):
    remote = client(tf_serving, kind, "five", version=1)
    calls = [("serving_default", {"examples": examples(1.0, 2.0)})]
    faults = tf_serving.faults
    faults.fail_next(1)
    with pytest.raises(RetryableRemoteError) as raised:
        remote.call(calls)
    assert not raised.value.throttled
    assert raised.value.status in ("UNAVAILABLE", "503")
    faults.fail_next(1, "exhausted")
    with pytest.raises(RetryableRemoteError) as raised:
        remote.call(calls)
    assert raised.value.throttled
    faults.bad_values.add(2.0)
    with pytest.raises(RemoteInputError) as raised:
        remote.call(calls)
    assert "x=2.0 is marked bad" in raised.value.server_message
    faults.bad_values.clear()
    with pytest.raises(RemoteServerError):
        client(tf_serving, kind, "nope").call(calls)
    slow = client(tf_serving, kind, "five", version=1, timeout_secs=0.5)
    faults.delay_next(1, 3.0)
    with pytest.raises(RetryableRemoteError) as raised:
        slow.call(calls)
    assert raised.value.status in ("DEADLINE_EXCEEDED", "timeout")
    if kind == "rest":
        faults.drop_next(1)
        with pytest.raises(RetryableRemoteError) as raised:
            remote.call(calls)
        assert raised.value.status == "connection"
    assert remote.call(calls).outputs[0]["output_0"].tolist() == [[5.0], [10.0]]


def test_grpc_restart_is_retryable_and_the_client_recovers(tf_serving):
    remote = client(tf_serving, "grpc", "five", version=1)
    calls = [("serving_default", {"examples": examples(1.0)})]
    remote.call(calls)
    tf_serving.grpc.stop()
    try:
        with pytest.raises(RetryableRemoteError):
            remote.call(calls)
    finally:
        tf_serving.grpc.start()
    for _ in range(50):  # the channel reconnects with backoff: bounded
        try:
            assert remote.call(calls).outputs[0]["output_0"].tolist() == [[5.0]]
            break
        except RetryableRemoteError:
            threading.Event().wait(0.2)
    else:
        pytest.fail("the client did not recover after the restart")


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_tokens_are_sent_but_never_shown(tf_serving, kind):
    remote = client(tf_serving, kind, "nope", token=BearerToken(value=TOKEN))
    assert TOKEN not in repr(remote)
    with pytest.raises(RemoteServerError) as raised:
        remote.call([("serving_default", {"examples": examples(1.0)})])
    assert TOKEN not in str(raised.value) and TOKEN not in repr(raised.value.record)


def test_request_bytes(tf_serving):
    calls = [("serving_default", {"examples": examples(*range(100))})]
    small = [("serving_default", {"examples": examples(1.0)})]
    for kind in ("grpc", "rest"):
        remote = client(tf_serving, kind, "five")
        assert remote.request_bytes(calls) > 10 * remote.request_bytes(small) > 0
        (record,) = remote.call(calls).records
        assert record.request_bytes == remote.request_bytes(calls)


# --- Vertex at the HTTP boundary --------------------------------------------------------

class _Vertex(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: typing.ClassVar[list] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, self.headers.get("Authorization"), body))
        values = body["instances"]
        if any(v == [666.0] for v in values):
            status, answer = 400, {"error": {"code": 400, "message": "bad instance 666",
                                             "status": "INVALID_ARGUMENT"}}
        elif any(v == [503.0] for v in values):
            status, answer = 503, {"error": {"code": 503, "message": "unavailable",
                                             "status": "UNAVAILABLE"}}
        else:
            status, answer = 200, {"predictions": [[5.0 * v[0]] for v in values],
                                   "deployedModelId": "42", "modelVersionId": "3",
                                   "model": "projects/p/locations/l/models/m"}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextlib.contextmanager
def vertex_server(tls: ssl.SSLContext | None = None):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Vertex)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)


def test_vertex_predict_at_the_http_boundary(tmp_path, zoo):
    graph = read_saved_model(zoo.keras3_dense).meta_graphs[0]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    _Vertex.seen.clear()
    with vertex_server() as url:
        remote = VertexClient("p", "europe-west4", "123", signature=graph.signature_def[
            "serving_default"], api_endpoint=url, token=BearerToken(file=str(token_file)),
            timeout_secs=TIMEOUT)
        result = remote.call([("serving_default", {"x": np.array([[1.0], [2.0]], np.float32)})])
        local = LoadedModel(zoo.keras3_dense, ["serve"], ["serving_default"]).run(
            "serving_default", {"x": np.array([[1.0], [2.0]], np.float32)})
        assert_same(result.outputs[0], local)
        assert result.version == 3
        path, auth, body = _Vertex.seen[0]
        assert path == "/v1/projects/p/locations/europe-west4/endpoints/123:predict"
        assert auth == "Bearer " + TOKEN and body == {"instances": [[1.0], [2.0]]}
        with pytest.raises(RemoteInputError) as raised:
            remote.call([("serving_default", {"x": np.array([[666.0]], np.float32)})])
        assert raised.value.server_message == "bad instance 666"
        with pytest.raises(RetryableRemoteError):
            remote.call([("serving_default", {"x": np.array([[503.0]], np.float32)})])
        assert TOKEN not in repr(remote) and TOKEN not in str(raised.value)


def test_vertex_over_tls_trusts_the_given_ca_and_refuses_an_unknown_certificate(tmp_path, zoo):
    (tmp_path / "pki").mkdir()
    ca = CertificateAuthority(tmp_path / "pki")
    issued = ca.issue("vertex")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.cert_file, issued.key_file)
    signature = read_saved_model(zoo.keras3_dense).meta_graphs[0].signature_def["serving_default"]
    feeds = {"x": np.array([[1.0], [2.0]], np.float32)}
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token = BearerToken(file=str(token_file))
    _Vertex.seen.clear()
    with vertex_server(context) as url:
        trusted = VertexClient("p", "europe-west4", "123", signature=signature, api_endpoint=url,
                               tls=Tls(ca_file=ca.ca_file), token=token, timeout_secs=TIMEOUT)
        result = trusted.call([("serving_default", feeds)])
        assert [v.tolist() for v in result.outputs[0].values()] == [[[5.0], [10.0]]]
        assert [auth for _, auth, _ in _Vertex.seen] == ["Bearer " + TOKEN]
        system = VertexClient("p", "europe-west4", "123", signature=signature,
                              api_endpoint=url, token=token, timeout_secs=TIMEOUT)
        with pytest.raises(UntrustedServerError, match="CERTIFICATE_VERIFY_FAILED"):
            system.call([("serving_default", feeds)])
        assert len(_Vertex.seen) == 1  # refused at the handshake: nothing was sent


# --- KServe v2 against KServe's own ModelServer -----------------------------------------

def test_kserve_v2_client_equals_local_scoring(kserve_server, zoo):
    from beam_infer.remote import KServeV2Client

    dense = KServeV2Client(kserve_server.url, "dense", timeout_secs=TIMEOUT)
    feeds = {"x": np.array([[1.0], [-2.5]], np.float32)}
    result = dense.call([("serving_default", feeds)])
    local = LoadedModel(zoo.keras3_dense, ["serve"], ["serving_default"])
    assert_same(result.outputs[0], local.run("serving_default", feeds))
    # KServe 0.21 decodes binary-extension BYTES inputs to text (UTF-8) before predict()
    # sees them, so serialized Examples cannot reach a kserve model over v2 REST: 500.
    five = KServeV2Client(kserve_server.url, "five", timeout_secs=TIMEOUT)
    with pytest.raises(RemoteServerError, match="UTF-8"):
        five.call([("serving_default", {"examples": examples(1.0, 2.0)})])
    signatures, record = dense.signature_defs()
    assert record.ok
    graph = read_saved_model(zoo.keras3_dense).meta_graphs[0]
    assert signatures_of(signatures)["serving_default"].inputs == \
        signatures_of(graph.signature_def)["serving_default"].inputs
    kserve_server.control(fail=1, status=503)
    with pytest.raises(RetryableRemoteError):
        dense.call([("serving_default", {"x": np.array([[1.0]], np.float32)})])
    kserve_server.control(bad=[7.0])
    with pytest.raises(RemoteInputError) as raised:
        dense.call([("serving_default", {"x": np.array([[7.0]], np.float32)})])
    assert "x=7.0 is marked bad" in raised.value.server_message

