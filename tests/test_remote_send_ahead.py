"""Send-ahead (``beam_infer/_send_ahead.py``) against the TF Serving stand-in: a batch's
requests go out before the batch is scored, its answers are taken by the call that
scores it, and the server's counters show every row scored once, whichever calls end
up scoring it."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.transforms import window

import beam_infer as bi
from beam_infer.remote._backend import RemoteBackend
from beam_infer.remote._common import RetryableRemoteError
from tests.support.beam_helpers import run_collect
from tests.support.remote_helpers import FAST_RETRY, examples

pytestmark = pytest.mark.emulators


def spec_of(tf_serving, kind: str = "grpc", **fields) -> bi.EndpointSpec:
    fields = {"timeout_secs": 10.0, "max_request_rows": 2, "max_in_flight": 2, **fields}
    if kind == "grpc":
        return bi.EndpointSpec.from_url(f"grpc://{tf_serving.grpc_target}/models/five/versions/1",
                                        **fields)
    return bi.EndpointSpec.from_url(f"{tf_serving.rest_url}/v1/models/five/versions/1", **fields)


def calls_of(*values: float) -> list:
    records = np.array([e.SerializeToString() for e in examples(*values)], dtype=object)
    return [("serving_default", {"examples": records})]


def answers(outputs) -> list[float]:
    return [float(v) for v in np.asarray(outputs[0]["output_0"]).ravel()]


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_the_call_a_flight_was_sent_for_takes_its_answers(tf_serving, kind):
    servable = RemoteBackend(spec_of(tf_serving, kind)).load()
    before = tf_serving.faults.total_requests  # the build read the model's metadata
    flight = servable.send_ahead(calls_of(1, 2, 3, 4, 5))
    with servable.expecting(flight):
        outputs, version, _ = servable.call(calls_of(1, 2, 3, 4, 5))
    assert answers(outputs) == [5.0, 10.0, 15.0, 20.0, 25.0]
    assert version.version == 1
    assert tf_serving.faults.total_requests - before == 3  # 5 rows, 2 a request: sent once
    assert dict(tf_serving.faults.scored) == dict.fromkeys([1.0, 2.0, 3.0, 4.0, 5.0], 1)


def test_rows_of_a_flight_no_call_took_are_not_sent_again(tf_serving):
    servable = RemoteBackend(spec_of(tf_serving)).load()
    flight = servable.send_ahead(calls_of(1, 2, 3, 4))
    with servable.expecting(flight):  # e.g. an element refused: the call holds the rest
        outputs, _, _ = servable.call(calls_of(1, 3, 4))
    assert answers(outputs) == [5.0, 15.0, 20.0]
    outputs, _, _ = servable.call(calls_of(2))  # e.g. isolation scoring it on its own
    assert answers(outputs) == [10.0]
    assert dict(tf_serving.faults.scored) == dict.fromkeys([1.0, 2.0, 3.0, 4.0], 1)


def test_a_flight_left_untaken_keeps_its_rows_for_later_calls(tf_serving):
    servable = RemoteBackend(spec_of(tf_serving)).load()
    with servable.expecting(servable.send_ahead(calls_of(6, 7))):
        pass  # the batch was scored by no call at all
    outputs, _, _ = servable.call(calls_of(7, 6))
    assert answers(outputs) == [35.0, 30.0]
    assert dict(tf_serving.faults.scored) == {6.0: 1, 7.0: 1}


def test_a_flight_of_another_servable_is_not_taken(tf_serving):
    spec = spec_of(tf_serving)
    first, second = RemoteBackend(spec).load(), RemoteBackend(spec).load()
    flight = first.send_ahead(calls_of(8))
    with second.expecting(flight):
        outputs, _, _ = second.call(calls_of(8))
    assert answers(outputs) == [40.0]
    flight.answers()  # the first servable's request was answered too
    assert tf_serving.faults.scored[8.0] == 2


def test_a_failed_flight_is_retried_by_its_call_without_rescoring_answered_rows(tf_serving):
    servable = RemoteBackend(spec_of(tf_serving)).load()
    tf_serving.faults.fail_next(1)  # the first of the flight's 2 requests fails
    flight = servable.send_ahead(calls_of(1, 2, 3, 4))
    with servable.expecting(flight), pytest.raises(RetryableRemoteError):
        servable.call(calls_of(1, 2, 3, 4))
    outputs, _, _ = servable.call(calls_of(1, 2, 3, 4))  # the retry
    assert answers(outputs) == [5.0, 10.0, 15.0, 20.0]
    assert dict(tf_serving.faults.scored) == dict.fromkeys([1.0, 2.0, 3.0, 4.0], 1)


def test_pipelines_send_ahead_and_keep_each_batch_in_its_window(tf_serving, tmp_path):
    values = [float(v) for v in range(1, 25)]
    spec = spec_of(tf_serving, batching=bi.BatchConfig(min_batch_size=4, max_batch_size=4))

    def build(p):
        stamped = (p | beam.Create(list(zip(values, examples(*values), strict=True)))
                   | beam.Map(lambda pair: window.TimestampedValue(pair[1], pair[0])))
        logs = (stamped | beam.WindowInto(window.FixedWindows(10))
                | bi.RunInference(spec, retry=FAST_RETRY))
        return {"found": logs
                | beam.Map(lambda log: tf.train.Example.FromString(
                    log.predict_log.request.inputs["examples"].string_val[0]
                ).features.feature["x"].float_list.value[0])
                | beam.ParDo(_WithWindow())}

    found = run_collect(build, str(tmp_path))[0]["found"]
    assert sorted(found) == sorted((v, int(v // 10) * 10) for v in values)
    assert dict(tf_serving.faults.scored) == dict.fromkeys(values, 1)
    labels = [t.full_label for t in _steps(bi.RunInference(spec))]
    assert [label.split("/")[-1] for label in labels] == ["Batch", "SendAhead", "Infer"]


class _WithWindow(beam.DoFn):
    def process(self, x, w=beam.DoFn.WindowParam):
        yield float(x), int(w.start)


def _steps(transform) -> list:
    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create([b""]) | transform
    return [t for t in pipeline.transforms_stack[0].parts[1].parts]


class _Recording:
    """Stands in for AheadHandler.send_ahead: records which batches were sent, when."""

    def __init__(self):
        self.sent: list = []

    def send_ahead(self, batch):
        self.sent.append(list(batch))
        return f"flight-{len(self.sent)}"


def test_send_ahead_holds_two_batches_so_the_server_always_has_the_next():
    from beam_infer import _send_ahead

    handler = _Recording()
    fn = _send_ahead.SendAheadFn(handler)
    fn.start_bundle()
    w1, w2 = window.IntervalWindow(0, 10), window.IntervalWindow(10, 20)
    out = [list(fn.process([i], timestamp=i, window=w1 if i < 2 else w2)) for i in range(4)]
    assert _send_ahead.HELD_BATCHES == 2
    assert [len(o) for o in out] == [0, 0, 1, 1]  # a batch goes on when 2 more were sent
    assert handler.sent == [[0], [1], [2], [3]]
    emitted = [o[0] for o in out if o] + list(fn.finish_bundle())
    assert [(v.value.batch, v.value.flight, v.windows) for v in emitted] == [
        ([0], "flight-1", (w1,)), ([1], "flight-2", (w1,)), ([2], "flight-3", (w2,)),
        ([3], "flight-4", (w2,))]
