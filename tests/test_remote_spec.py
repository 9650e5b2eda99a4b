"""Unit tests of the remote backend without a server: ``EndpointSpec`` validation and URLs,
splitting calls by rows and bytes, throttling decisions, the row cache and retries."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

import beam_infer as bi
from beam_infer import _retries
from beam_infer._backend import CallRecord
from beam_infer.remote import (
    ElementTooLargeError,
    RemoteInputError,
    RequestTooLargeError,
    RetryableRemoteError,
    parse_url,
)
from beam_infer.remote._backend import refreshed_spec
from beam_infer.remote._row_cache import RowCache, row_keys
from beam_infer.remote._servable import RemoteServable
from beam_infer.remote._throttling import Limiter

TOKEN = "tok-9d1c-secret"


def grpc_spec(**fields) -> bi.EndpointSpec:
    return bi.EndpointSpec(protocol=bi.Protocol.TF_SERVING_GRPC, target="localhost:8500",
                           model_name="five", **fields)


# --- the spec -----------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "fields"), [
    ("grpc://localhost:8500/models/five",
     {"protocol": bi.Protocol.TF_SERVING_GRPC, "target": "localhost:8500", "model_name": "five"}),
    ("grpc://h:1/models/five/versions/3",
     {"protocol": bi.Protocol.TF_SERVING_GRPC, "target": "h:1", "model_name": "five",
      "version": 3}),
    ("grpcs://h:1/models/five/labels/canary",
     {"protocol": bi.Protocol.TF_SERVING_GRPC, "target": "h:1", "model_name": "five",
      "version_label": "canary", "tls": bi.Tls()}),
    ("http://h:8501/v1/models/five",
     {"protocol": bi.Protocol.TF_SERVING_REST, "target": "http://h:8501", "model_name": "five"}),
    ("https://h/serving/v1/models/five/versions/2",
     {"protocol": bi.Protocol.TF_SERVING_REST, "target": "https://h/serving",
      "model_name": "five", "version": 2}),
    ("http://h:8080/v2/models/dense",
     {"protocol": bi.Protocol.KSERVE_V2, "target": "http://h:8080", "model_name": "dense"}),
    ("vertex://projects/p/locations/europe-west4/endpoints/123",
     {"protocol": bi.Protocol.VERTEX, "target": "projects/p/locations/europe-west4/endpoints/123"}),
])
def test_urls_parse_into_fields_and_specs_write_them_back(url, fields):
    assert parse_url(url) == fields
    extra = {"signatures_from": "/m"} if fields["protocol"] is bi.Protocol.VERTEX else {}
    spec = bi.EndpointSpec.from_url(url, **extra)
    assert spec.url == url
    assert bi.EndpointSpec.from_url(spec.url, **extra) == spec


@pytest.mark.parametrize(("url", "message"), [
    ("http://user:pw@h/v1/models/m", "must not hold credentials"),
    ("http://h/v1/models/m?access_token=abc", "must not hold credentials"),
    ("ftp://h/models/m", "unknown endpoint URL scheme 'ftp'"),
    ("grpc://h/models/m", "grpc://HOST:PORT/models/NAME"),
    ("http://h/v3/models/m", "v1/models/NAME"),
    ("http://h/v2/models/m/labels/x", "KServe v2 has no version labels"),
    ("vertex://projects/p/endpoints/e", "projects/P/locations/L/endpoints/E"),
    ("", "non-empty"),
])
def test_bad_urls_say_what_is_wrong(url, message):
    with pytest.raises(bi.ConfigurationError, match=message) as raised:
        bi.EndpointSpec.from_url(url)
    assert "pw" not in str(raised.value) and "abc" not in str(raised.value)


@pytest.mark.parametrize(("fields", "message"), [
    ({"protocol": "grpc"}, "must be a bi.Protocol"),
    ({"target": "http://h:1"}, "host:port"),
    ({"model_name": None}, "model_name is required"),
    ({"version": -1}, "version number >= 0"),
    ({"version": 1, "version_label": "x"}, "not both"),
    ({"signature_names": "serving_default"}, "non-empty tuple"),
    ({"signature_names": ()}, "non-empty tuple"),
    ({"max_in_flight": 0}, "max_in_flight must be a positive integer"),
    ({"max_request_bytes": 100 * 2**20}, "over what TF_SERVING_GRPC takes"),
    ({"timeout_secs": 0}, "Every request has a deadline"),
    ({"token": TOKEN}, "must be a bi.BearerToken"),
    ({"tls": "yes"}, "must be a bi.Tls"),
    ({"columnar": True}, "columnar is TF Serving REST's"),
    ({"batching": {"max_batch_size": 3}}, "must be a BatchConfig"),
])
def test_spec_validation_names_the_field_and_the_fix(fields, message):
    base = {"protocol": bi.Protocol.TF_SERVING_GRPC, "target": "h:1", "model_name": "m"}
    with pytest.raises(bi.ConfigurationError, match=message) as raised:
        bi.EndpointSpec(**{**base, **fields})
    assert TOKEN not in str(raised.value)


def test_spec_is_frozen_keyword_only_and_checks_keywords():
    spec = grpc_spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.version = 3
    with pytest.raises(TypeError):
        bi.EndpointSpec(bi.Protocol.TF_SERVING_GRPC, "h:1")
    with pytest.raises(bi.UnknownArgumentError, match="max_in_flight"):
        bi.EndpointSpec(protocol=bi.Protocol.TF_SERVING_GRPC, target="h:1", model_name="m",
                        max_inflight=3)


def test_protocol_specific_fields_and_defaults():
    assert grpc_spec().request_bytes == 4_000_000 < 4 * 2**20
    vertex = bi.EndpointSpec.from_url("vertex://projects/p/locations/l/endpoints/e",
                                      signatures_from="/m")
    assert vertex.request_bytes < 1_500_000 and vertex.recorded_name == "e"
    with pytest.raises(bi.ConfigurationError, match="1,500,000"):
        vertex.replace(max_request_bytes=2_000_000)
    with pytest.raises(bi.ConfigurationError, match="signatures_from"):
        bi.EndpointSpec.from_url("vertex://projects/p/locations/l/endpoints/e")
    with pytest.raises(bi.ConfigurationError, match="one signature"):
        bi.EndpointSpec.from_url("http://h/v2/models/m", signature_names=("a", "b"))
    assert grpc_spec(batching=bi.BatchConfig(max_batch_size=32)).request_rows == 32
    assert grpc_spec(max_request_rows=8).request_rows == 8
    assert grpc_spec().request_rows == 256


def test_tokens_never_show_in_reprs_descriptions_or_errors():
    spec = grpc_spec(token=bi.BearerToken(value=TOKEN))
    for text in (repr(spec), str(spec), spec.describe(), spec.url, repr(spec.token)):
        assert TOKEN not in text
    by_file = grpc_spec(token=bi.BearerToken(file="/secrets/t"))
    assert "file /secrets/t" in by_file.describe()
    assert TOKEN.encode() not in pickle.dumps(grpc_spec(token=bi.BearerToken(env="T")))


def test_run_inference_refuses_load_override_fn_for_endpoints():
    with pytest.raises(bi.ConfigurationError, match="load_override_fn"):
        bi.RunInference(grpc_spec(), load_override_fn=lambda path, tags: None)


def test_an_unreachable_server_fails_construction_within_seconds():
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    for url in (f"grpc://127.0.0.1:{port}/models/m", f"http://127.0.0.1:{port}/v1/models/m",
                f"http://127.0.0.1:{port}/v2/models/m"):
        start = time.monotonic()
        with pytest.raises(bi.ConfigurationError, match="could not read the model's signatures"):
            bi.RunInference(bi.EndpointSpec.from_url(url))
        assert time.monotonic() - start < 15


def test_retryable_remote_errors_are_transient_and_input_errors_are_not():
    assert issubclass(RetryableRemoteError, bi.BeamInferError)
    assert isinstance(RetryableRemoteError("x"), _retries.TRANSIENT_ERRORS)
    assert not isinstance(RemoteInputError("x"), _retries.TRANSIENT_ERRORS)
    assert not isinstance(RequestTooLargeError("x"), _retries.TRANSIENT_ERRORS)
    import inspect
    assert "import remote" not in inspect.getsource(_retries)  # stays backend-neutral
    assert "beam_infer.remote" not in inspect.getsource(_retries)


# --- throttling decisions -----------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_throttling_waits_retry_after_halves_the_limit_and_recovers():
    clock = Clock()
    limiter = Limiter(8, clock=clock, recover_secs=10.0)
    assert limiter.wait_secs(clock.now) == 0.0
    assert limiter.throttle(3.0) == 3.0
    assert limiter.limit == 4 and limiter.wait_secs(clock.now) == pytest.approx(3.0)
    assert limiter.throttle(None) == 1.0  # no Retry-After: 0.5 s doubling per throttle
    assert limiter.throttle(None) == 2.0 and limiter.limit == 1
    assert limiter.throttle(3600.0) == 60.0  # a Retry-After is capped
    clock.now += 61
    limiter.in_flight = 1
    assert limiter.wait_secs(clock.now) is None  # the one slot is taken
    limiter.release(ok=True)
    assert limiter.limit == 2 and limiter.throttles == 0  # grew back by one
    limiter.in_flight = 1
    limiter.release(ok=True)
    assert limiter.limit == 2  # not again before another recovery period
    clock.now += 10
    limiter.in_flight = 1
    limiter.release(ok=True)
    assert limiter.limit == 3


def test_acquire_reports_the_time_waited_while_throttled():
    limiter = Limiter(2)
    assert limiter.acquire() == 0.0
    limiter.release(ok=True)
    limiter.throttle(0.2)
    waited = limiter.acquire()
    assert 0.15 < waited < 5


# --- splitting with a fake client ---------------------------------------------------------

class FakeClient:
    """Answers y = 2x per row; bytes = 10 per row + 5; scripted failures per request."""

    def __init__(self, failures=(), too_large_over: int | None = None):
        self.sent: list[list[float]] = []
        self.failures = list(failures)
        self.too_large_over = too_large_over

    def requests(self, calls):
        return [(name, np.asarray(feeds["x"])) for name, feeds in calls]

    @staticmethod
    def prepared_bytes(prepared):
        return max(5 + 10 * len(x) for _, x in prepared)

    def call(self, calls, prepared=None):
        from beam_infer.remote import RemoteResult

        prepared = prepared or self.requests(calls)
        rows = [float(v) for v in prepared[0][1].ravel()]
        record = CallRecord("fake", "predict", "fake:1", "OK", True, 0.001,
                            self.prepared_bytes(prepared), 0, len(rows))
        if self.too_large_over is not None and len(rows) > self.too_large_over:
            raise RequestTooLargeError("413", dataclasses.replace(record, status="413", ok=False))
        if self.failures:
            failure = self.failures.pop(0)
            if failure is not None:
                raise failure("scripted failure",
                              dataclasses.replace(record, status="503", ok=False))
        self.sent.append(rows)
        return RemoteResult([{"y": x * 2} for _, x in prepared], 7, [record])


def servable(client, **fields) -> RemoteServable:
    return RemoteServable(grpc_spec(**fields), client)


def feeds(*values: float):
    return [("serving_default", {"x": np.array(values, np.float32)})]


def test_a_call_splits_by_rows_and_bytes_and_joins_in_order():
    client = FakeClient()
    outputs, version, events = servable(client, max_request_rows=4, max_request_bytes=35).call(
        feeds(*range(10)))
    assert outputs[0]["y"].tolist() == [2.0 * v for v in range(10)]
    assert all(len(rows) <= 3 for rows in client.sent)  # 3 rows = 35 bytes
    assert sorted(v for rows in client.sent for v in rows) == list(map(float, range(10)))
    assert version.version == 7 and version.name == "five"
    assert len(events) == len(client.sent) and all(isinstance(e, CallRecord) for e in events)


def test_one_request_calls_are_not_copied():
    client = FakeClient()
    x = np.arange(5, dtype=np.float32)
    outputs, _, _ = servable(client).call([("serving_default", {"x": x})])
    assert outputs[0]["y"].tolist() == (x * 2).tolist() and client.sent == [x.tolist()]


def test_an_element_over_the_byte_cap_fails_before_anything_is_sent():
    client = FakeClient()
    with pytest.raises(ElementTooLargeError, match=r"max_request_bytes \(14\)"):
        servable(client, max_request_bytes=14).call(feeds(1.0, 2.0))
    assert client.sent == []
    assert not isinstance(ElementTooLargeError("x"), _retries.TRANSIENT_ERRORS)


def test_a_servers_413_splits_further_and_lowers_the_cap():
    client = FakeClient(too_large_over=2)
    model = servable(client, max_request_rows=8)
    outputs, _, events = model.call(feeds(*range(8)))
    assert outputs[0]["y"].tolist() == [2.0 * v for v in range(8)]
    assert all(len(rows) <= 2 for rows in client.sent)
    assert any(e.status == "413" for e in events)
    client.sent.clear()
    model.call(feeds(*range(8)))
    assert all(len(rows) <= 2 for rows in client.sent)  # the lowered cap is kept


def test_a_retried_call_does_not_resend_rows_already_answered():
    client = FakeClient(failures=[None, RetryableRemoteError, None])
    model = servable(client, max_request_rows=2, max_in_flight=1)
    with pytest.raises(RetryableRemoteError):
        model.call(feeds(*range(6)))
    first = [v for rows in client.sent for v in rows]
    assert first == [0.0, 1.0]  # request 2 failed; request 3 was not sent after it
    outputs, _, events = model.call(feeds(*range(6)))
    assert outputs[0]["y"].tolist() == [2.0 * v for v in range(6)]
    every = [v for rows in client.sent for v in rows]
    assert sorted(every) == list(map(float, range(6)))  # each row sent (answered) once
    assert [e.status for e in events].count("503") == 1  # the failed call's record too
    # An isolation call holding some of the same rows also takes them from the cache.
    client.failures = [None, RemoteInputError]
    with pytest.raises(RemoteInputError):
        model.call(feeds(10.0, 11.0, 12.0, 13.0))
    client.sent.clear()
    outputs, _, _ = model.call(feeds(10.0, 11.0))
    assert outputs[0]["y"].tolist() == [20.0, 22.0] and client.sent == []


def test_the_row_cache_is_bounded_and_entries_are_taken_once():
    clock = Clock()
    cache = RowCache(max_rows=3, ttl_secs=5, clock=clock)
    for key in (b"a", b"b", b"c", b"d"):
        cache.put(key, [{"y": np.float32(1)}])
    assert len(cache) == 3 and cache.take(b"a") is None
    assert cache.take(b"b") is not None and cache.take(b"b") is None
    clock.now += 6
    assert cache.take(b"c") is None and len(cache) == 1


def test_row_keys_tell_rows_and_signatures_apart():
    a = row_keys(["s"], [("s", {"x": np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0]])})], 3)
    assert a[0] == a[1] != a[2]
    b = row_keys(["t"], [("t", {"x": np.array([[1.0, 2.0]])})], 1)
    assert b[0] != a[0]
    texts = row_keys(["s"], [("s", {"e": np.array([b"ab", b"a"], dtype=object)})], 2)
    assert texts[0] != texts[1]


# --- a model-refresh URL ------------------------------------------------------------------

def test_a_refresh_url_names_the_model_and_the_spec_keeps_the_rest():
    token = bi.BearerToken(file="/secrets/t")
    spec = bi.EndpointSpec.from_url(
        "grpcs://h:1/models/five/labels/canary", token=token, max_in_flight=7,
        tls=bi.Tls(ca_file="/ca.pem", server_name="serving.internal"))
    moved = refreshed_spec(spec, "grpcs://h:1/models/ten/versions/2")
    assert (moved.model_name, moved.version, moved.version_label) == ("ten", 2, None)
    assert moved.tls == spec.tls and moved.token is token and moved.max_in_flight == 7
    # Another host: only without a token (see the next test); no version: the latest.
    latest = refreshed_spec(moved.replace(token=None), "grpcs://other:2/models/ten")
    assert latest.version is None and latest.tls == bi.Tls(ca_file="/ca.pem")  # name: h's
    assert refreshed_spec(spec, "grpc://h:1/models/ten").tls is None  # the URL says plain
    rest = bi.EndpointSpec.from_url("https://h/v1/models/five/versions/1", columnar=True,
                                    tls=bi.Tls(ca_file="/ca.pem"))
    assert refreshed_spec(rest, "https://h/v1/models/ten").tls == bi.Tls(ca_file="/ca.pem")
    assert refreshed_spec(rest, "http://h/v1/models/ten").tls is None
    switched = refreshed_spec(rest, "grpc://h:1/models/ten")  # columnar is REST's: dropped
    assert switched.protocol is bi.Protocol.TF_SERVING_GRPC and not switched.columnar
    with pytest.raises(bi.ConfigurationError, match="unknown endpoint URL scheme"):
        refreshed_spec(spec, "/models/ten/1")


def test_a_refresh_url_on_another_host_is_refused_while_the_spec_has_a_token():
    token = bi.BearerToken(env="SERVING_TOKEN")
    spec = bi.EndpointSpec.from_url("grpcs://serving.internal:8500/models/five", token=token)
    # The same host on TF Serving's REST port, and the host spelled in capitals: kept.
    assert refreshed_spec(spec, "https://serving.internal:8501/v1/models/ten").token is token
    assert refreshed_spec(spec, "grpcs://SERVING.internal:8500/models/ten").token is token
    for url in ("grpcs://attacker.example:8500/models/ten",
                "https://serving.internal.attacker.example/v1/models/ten",
                "grpcs://127.0.0.1:8500/models/ten"):  # another name: not known the same
        with pytest.raises(bi.ConfigurationError) as refused:
            refreshed_spec(spec, url)
        message = str(refused.value)
        assert message.startswith("the model-refresh URL ") and "/models/ten" in message
        assert "a token is not sent to another host" in message
        assert "token is for 'serving.internal'" in message
    # Without a token any host may be named.
    assert refreshed_spec(spec.replace(token=None), "grpc://elsewhere:1/models/ten").token is None
    # Google credentials follow Vertex across regions (googleapis.com hosts), no further.
    vertex = bi.EndpointSpec.from_url(
        "vertex://projects/p/locations/us-central1/endpoints/1",
        token=bi.BearerToken(google=True), signatures_from="/models/five")
    moved = refreshed_spec(vertex, "vertex://projects/p/locations/europe-west4/endpoints/2")
    assert moved.token == vertex.token
    with pytest.raises(bi.ConfigurationError, match="a token is not sent to another host"):
        refreshed_spec(vertex, "https://h.example/v1/models/ten")
    file_token = vertex.replace(token=bi.BearerToken(file="/secrets/t"))
    with pytest.raises(bi.ConfigurationError, match=r"'europe-west4-aiplatform\.googleapis\.com'"):
        refreshed_spec(file_token, "vertex://projects/p/locations/europe-west4/endpoints/2")


def test_tls_server_name_is_for_grpc_only():
    with pytest.raises(bi.ConfigurationError, match=r"Tls\.server_name applies to gRPC only"):
        bi.EndpointSpec.from_url("https://h/v1/models/m", tls=bi.Tls(server_name="x"))
    with pytest.raises(bi.ConfigurationError, match=r"Tls\.ca_file must be a non-empty string"):
        bi.Tls(ca_file="")
