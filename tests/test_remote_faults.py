"""Fault runs through the TF Serving stand-in: every element ends scored exactly once (the
server's counters say so) or dead-lettered with its reason, and no token shows anywhere.

Faults: 503 / UNAVAILABLE bursts, 429 / RESOURCE_EXHAUSTED (client-side throttling),
answers slower than the request timeout, REST connections dropped mid-batch, 400 /
INVALID_ARGUMENT for chosen elements, an element over the request byte cap, a server
restarted mid-job and a server down for longer than the retry budget. Calls are split
into several requests (``max_request_rows``) so a failure hits part of a call.
"""

from __future__ import annotations

import pickle
import threading
import time

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.metrics.metric import MetricsFilter

import beam_infer as bi
from tests.support.beam_helpers import read_all, write_all
from tests.support.remote_helpers import FAST_RETRY, TOKEN, examples, score

pytestmark = pytest.mark.emulators

VALUES = [float(v) for v in range(1, 31)]
BATCHING = bi.BatchConfig(min_batch_size=10, max_batch_size=10)


def spec_of(tf_serving, kind: str, **fields) -> bi.EndpointSpec:
    fields = {"timeout_secs": 10.0, "max_request_rows": 3, "max_in_flight": 2,
              "batching": BATCHING, **fields}
    if kind == "grpc":
        return bi.EndpointSpec.from_url(f"grpc://{tf_serving.grpc_target}/models/five/versions/1",
                                        **fields)
    return bi.EndpointSpec.from_url(f"{tf_serving.rest_url}/v1/models/five/versions/1",
                                    **fields)


def scored_values(logs) -> list[float]:
    return sorted(float(tf.train.Example.FromString(
        log.predict_log.request.inputs["examples"].string_val[0]
    ).features.feature["x"].float_list.value[0]) for log in logs)


def assert_exactly_once(tf_serving, logs, values=VALUES) -> None:
    assert scored_values(logs) == sorted(values)
    for log in logs:
        x = scored_values([log])[0]
        assert log.predict_log.response.outputs["output_0"].float_val[0] == 5.0 * x
    assert {v: tf_serving.faults.scored[v] for v in values} == dict.fromkeys(values, 1)


def run_with_metrics(transform, elements, tmp):
    pipeline = beam.Pipeline()
    results = pipeline | beam.Create(elements, reshuffle=False) | transform
    outs = results if isinstance(results, tuple) else (results,)
    for i, pcoll in enumerate(outs):
        write_all(pcoll, f"{tmp}/{i}/part", label=f"Collect{i}")
    result = pipeline.run()
    result.wait_until_finish()
    return [read_all(f"{tmp}/{i}/part") for i in range(len(outs))], result


def counter(result, name: str) -> int:
    found = result.metrics().query(MetricsFilter().with_namespace(bi.METRICS_NAMESPACE)
                                   .with_name(name))["counters"]
    return sum(c.committed or c.attempted or 0 for c in found)


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_503_bursts_are_retried_and_nothing_is_scored_twice(tf_serving, tmp_path, kind):
    spec = spec_of(tf_serving, kind)
    transform = bi.RunInference(spec, retry=FAST_RETRY)
    tf_serving.faults.fail_next(3)  # 3 requests of the first call's 4 fail, then retried
    (logs,), result = run_with_metrics(transform, examples(*VALUES), str(tmp_path))
    assert_exactly_once(tf_serving, logs)
    assert counter(result, "inference_retries") >= 1
    status = "UNAVAILABLE" if kind == "grpc" else "503"
    assert counter(result, "remote_request_failures_" + status) == 3
    assert counter(result, "remote_requests") >= 10 + 3


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_429_throttles_the_client_and_is_retried(tf_serving, tmp_path, kind):
    transform = bi.RunInference(spec_of(tf_serving, kind), retry=FAST_RETRY)
    tf_serving.faults.fail_next(2, "exhausted")
    (logs,), result = run_with_metrics(transform, examples(*VALUES), str(tmp_path))
    assert_exactly_once(tf_serving, logs)
    status = "RESOURCE_EXHAUSTED" if kind == "grpc" else "429"
    assert counter(result, "remote_request_failures_" + status) == 2
    assert counter(result, "remote_throttled_milli_secs") > 0  # waited before resending


def test_slow_answers_past_the_timeout_are_retried(tf_serving, tmp_path):
    # gRPC: the server sees the deadline pass and gives up without scoring.
    transform = bi.RunInference(spec_of(tf_serving, "grpc", timeout_secs=0.5),
                                retry=FAST_RETRY)
    tf_serving.faults.delay_next(2, 3.0)
    (logs,), result = run_with_metrics(transform, examples(*VALUES), str(tmp_path))
    assert_exactly_once(tf_serving, logs)
    assert counter(result, "remote_request_failures_DEADLINE_EXCEEDED") == 2


def test_rest_slow_answers_time_out_and_every_element_is_scored(tf_serving, tmp_path):
    # REST: the stand-in scores a delayed request after the client gave up on it (as a
    # server that does not notice the client left does): at least once, output once.
    transform = bi.RunInference(spec_of(tf_serving, "rest", timeout_secs=0.5),
                                retry=FAST_RETRY)
    tf_serving.faults.delay_next(1, 1.5)
    (logs,), result = run_with_metrics(transform, examples(*VALUES), str(tmp_path))
    assert scored_values(logs) == VALUES
    assert counter(result, "remote_request_failures_timeout") == 1
    deadline = time.monotonic() + 30  # the abandoned request finishes: not in the next test
    while tf_serving.faults.rows_scored < len(VALUES) + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tf_serving.faults.rows_scored == len(VALUES) + 3


def test_connections_dropped_mid_batch_are_retried(tf_serving, tmp_path):
    transform = bi.RunInference(spec_of(tf_serving, "rest"), retry=FAST_RETRY)
    tf_serving.faults.drop_next(2)
    (logs,), result = run_with_metrics(transform, examples(*VALUES), str(tmp_path))
    assert_exactly_once(tf_serving, logs)
    assert counter(result, "remote_request_failures_connection") == 2


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_400_elements_are_dead_lettered_with_the_servers_reason(tf_serving, tmp_path, kind):
    bad = {4.0, 17.0}
    tf_serving.faults.bad_values.update(bad)
    keyed = [(f"k{int(v)}", e) for v, e in zip(VALUES, examples(*VALUES), strict=True)]
    logs, failed = score(spec_of(tf_serving, kind, token=bi.BearerToken(value=TOKEN)), keyed,
                         str(tmp_path), dead_letters=True)
    good = [v for v in VALUES if v not in bad]
    assert scored_values([log for _, log in logs]) == good
    assert {v: tf_serving.faults.scored[v] for v in good} == dict.fromkeys(good, 1)
    assert sorted(letter.key for letter in failed) == ["k17", "k4"]
    for letter in failed:
        assert letter.stage is bi.Stage.INFERENCE
        assert letter.error_type == "RemoteInputError"
        assert f"x={float(letter.key[1:])!r} is marked bad" in letter.message
        assert "five" in letter.message  # names the endpoint
    blob = pickle.dumps((logs, failed)) + repr((logs, failed)).encode()
    assert TOKEN.encode() not in blob


def test_400_without_dead_letters_stops_the_job_naming_the_element(tf_serving, tmp_path):
    tf_serving.faults.bad_values.add(5.0)
    with pytest.raises(Exception, match=r"x=5\.0 is marked bad") as raised:
        score(spec_of(tf_serving, "grpc"), examples(*VALUES), str(tmp_path))
    assert "with_dead_letters" in str(raised.value)


def test_an_element_over_the_byte_cap_fails_alone_with_the_cap(tf_serving, tmp_path):
    elements = examples(1.0, 2.0, 3.0)
    big = examples(9.0)[0]
    big.features.feature["padding"].bytes_list.value.append(b"p" * 3000)
    logs, failed = score(spec_of(tf_serving, "grpc", max_request_bytes=1000),
                         [*elements, big], str(tmp_path), dead_letters=True)
    assert scored_values(logs) == [1.0, 2.0, 3.0]
    (letter,) = failed
    assert letter.error_type == "ElementTooLargeError"
    assert "max_request_bytes (1,000)" in letter.message
    assert tf_serving.faults.scored[9.0] == 0  # never sent


def test_a_server_restarted_mid_job_loses_and_repeats_nothing(tf_serving, tmp_path):
    values = [float(v) for v in range(1, 61)]
    retry = bi.RetryConfig(max_attempts=8, initial_backoff_secs=0.2, max_backoff_secs=1.0)
    transform = bi.RunInference(spec_of(tf_serving, "grpc", timeout_secs=5.0), retry=retry)
    faults = tf_serving.faults
    faults.delay_next(1, 20.0)  # the first request waits: the restart drops it unscored

    def restart() -> None:
        deadline = time.monotonic() + 60
        while faults.requests["Predict"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        tf_serving.grpc.restart(down_secs=1.0)

    thread = threading.Thread(target=restart, daemon=True)
    thread.start()
    try:
        (logs,), _ = run_with_metrics(transform, examples(*values), str(tmp_path))
    finally:
        thread.join(60)
    assert_exactly_once(tf_serving, logs, values)


def test_a_server_down_past_the_retry_budget_dead_letters_or_stops(tf_serving, tmp_path):
    spec = spec_of(tf_serving, "grpc", timeout_secs=2.0)
    with_letters = bi.RunInference(spec, retry=FAST_RETRY).with_dead_letters()
    stopping = bi.RunInference(spec, retry=FAST_RETRY)
    tf_serving.grpc.stop()
    try:
        (logs, failed), _ = run_with_metrics(with_letters, examples(*VALUES[:6]),
                                             str(tmp_path / "letters"))
        assert logs == [] and len(failed) == 6
        for letter in failed:
            assert letter.error_type == "RetryableRemoteError"
            assert "failed transiently" in letter.message and spec.url in letter.message
        with pytest.raises(Exception, match="failed transiently") as raised:
            run_with_metrics(stopping, examples(1.0), str(tmp_path / "stop"))
        assert spec.url in str(raised.value) and "max_attempts" in str(raised.value)
    finally:
        tf_serving.grpc.start()


def test_tokens_stay_out_of_outputs_reprs_and_pickled_transforms(tf_serving, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("BI_TEST_TOKEN", TOKEN)
    spec = spec_of(tf_serving, "rest", token=bi.BearerToken(env="BI_TEST_TOKEN"))
    transform = bi.RunInference(spec, retry=FAST_RETRY)
    assert TOKEN.encode() not in pickle.dumps(transform)  # only the variable's name travels
    for text in (repr(spec), spec.describe(), repr(transform.handler), spec.url):
        assert TOKEN not in text
    tf_serving.faults.bad_values.add(2.0)
    logs, failed = score(spec, examples(1.0, 2.0, 3.0), str(tmp_path), dead_letters=True)
    assert len(logs) == 2 and len(failed) == 1
    assert TOKEN.encode() not in pickle.dumps((logs, failed))
    assert TOKEN not in repr(bi.EndpointSpec.from_url(
        "grpc://h:1/models/m", token=bi.BearerToken(value=TOKEN)))
