"""``pipelines.streaming`` on Pub/Sub (the emulator) end to end, on the DirectRunner.

The job runs in this process through its ``run()`` with Pub/Sub flags, as on Dataflow;
the test publishes serialized Examples, pulls the serialized PredictionLogs back, then
cancels the job. The FnApiRunner cannot read Pub/Sub (it returns DONE at once), so the
DirectRunner's streaming mode runs it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState
from tensorflow_serving.apis import prediction_log_pb2

from pipelines import models, streaming
from tests.emulators.pubsub import PROJECT
from tests.support.publishing import publish

pytestmark = pytest.mark.emulators

SHUTDOWN_SECS = 15.0


class _Started(beam.Pipeline):
    """A pipeline that hands its result over once it runs: a streaming job never ends, and
    the job's ``run()`` waits for the end, so the test takes the result from here."""

    def __init__(self) -> None:
        super().__init__(options=PipelineOptions(["--streaming", f"--project={PROJECT}"]))
        self.started = threading.Event()
        self.result: _CancelEndsTheWait | None = None

    def run(self, *args, **kwargs):
        self.result = _CancelEndsTheWait(super().run(*args, **kwargs))
        self.started.set()
        return self.result


class _CancelEndsTheWait:
    """The DirectRunner's result, but ``wait_until_finish`` returns once ``cancel`` has
    stopped the pipeline: Beam 2.77's never returns after a cancel (nothing wakes its
    ``await_completion``), which would leave the job's ``run()`` blocked for good."""

    def __init__(self, result) -> None:
        self._result = result
        self._cancelled = threading.Event()

    def wait_until_finish(self, duration=None):
        self._cancelled.wait()
        return self._result.state

    def cancel(self):
        try:
            return self._result.cancel()
        finally:
            self._cancelled.set()

    def __getattr__(self, name):
        return getattr(self._result, name)


@contextlib.contextmanager
def _running(pubsub, argv: list[str], input_topic: str) -> Iterator[object]:
    """Runs ``pipelines.streaming.run(argv)`` in a thread until the block ends, then
    cancels it and checks that it stopped, within ``SHUTDOWN_SECS``."""
    pipeline = _Started()
    failures: list[BaseException] = []

    def job() -> None:
        try:
            streaming.run(argv, save_main_session=False, test_pipeline=pipeline)
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            failures.append(e)
            pipeline.started.set()

    thread = threading.Thread(target=job, name="streaming-job", daemon=True)
    thread.start()
    assert pipeline.started.wait(60), "the job did not start within 60 s"
    assert not failures, failures
    try:
        yield pipeline.result
    finally:
        started = time.monotonic()
        # The DirectRunner's Pub/Sub read blocks in a 30 s pull; one more message ends it.
        waker = threading.Timer(0.5, pubsub.publish, (input_topic, [_example(-1.0)]))
        waker.start()
        # cancel() returns once the runner's worker threads have stopped; bounded here too.
        canceller = threading.Thread(target=pipeline.result.cancel, daemon=True)
        canceller.start()
        canceller.join(SHUTDOWN_SECS)
        thread.join(max(0.0, SHUTDOWN_SECS - (time.monotonic() - started)))
        waker.join(SHUTDOWN_SECS)
        took = time.monotonic() - started
        assert not thread.is_alive(), f"the job still runs {took:.1f} s after cancel()"
        assert took < SHUTDOWN_SECS
        assert pipeline.result.state == PipelineState.CANCELLED
        assert not failures, failures


def _example(x: float) -> bytes:
    return models.make_example(x).SerializeToString()


def _answers(messages: list[bytes]) -> list[tuple[float, float, int]]:
    """``(x, y, version)`` of each serialized PredictionLog."""
    answers = []
    for data in messages:
        predict_log = prediction_log_pb2.PredictionLog.FromString(data).predict_log
        x = models.example_value(predict_log.request.inputs["examples"].string_val[0])
        answers.append((x, predict_log.response.outputs["output_0"].float_val[0],
                        predict_log.response.model_spec.version.value))
    return answers


@pytest.fixture
def topics(pubsub):
    """Input topic and subscription, output topic and a subscription to read it."""
    examples = pubsub.topic("examples")
    logs = pubsub.topic("logs")
    return examples, pubsub.subscription(examples), logs, pubsub.subscription(logs)


def _argv(base: str, topics, *extra: str) -> list[str]:
    _, examples_sub, logs, _ = topics
    return ["--model_path", base, "--input_subscription", examples_sub,
            "--output_topic", logs, "--poll_interval_secs", "0.5", *extra]


def test_every_message_is_answered_once(pubsub, base, topics):
    examples, _, _, logs_sub = topics
    n = 60
    with _running(pubsub, _argv(base, topics), examples):
        pubsub.publish(examples, [_example(float(i)) for i in range(n)])
        pulled = pubsub.pull(logs_sub, until=lambda got: len(got) >= n, timeout_secs=40)
        # Anything extra would arrive now: give a duplicate the chance to show up.
        pulled += pubsub.pull(logs_sub, until=lambda got: False, timeout_secs=1.5)
    answers = _answers(pulled)
    assert sorted(x for x, _, _ in answers) == [float(i) for i in range(n)]  # once each
    assert all(y == 5 * x and version == 1 for x, y, version in answers)


@pytest.mark.parametrize("store", ["local", "gcs"])
def test_version_published_mid_stream_takes_over_without_loss(pubsub, base, topics, store,
                                                              request):
    examples, _, _, logs_sub = topics
    model_path = base
    if store == "gcs":  # the Dataflow layout: the base path in a bucket
        gcs = request.getfixturevalue("gcs")
        model_path = f"gs://{gcs.new_bucket()}/models/five"
        gcs.upload_tree(os.path.join(base, "1"), f"{model_path}/1")
        publish(base, 2)  # built here, uploaded object by object mid-stream

    def publish_version_2() -> None:
        if store == "gcs":
            gcs.upload_tree(os.path.join(base, "2"), f"{model_path}/2")
        else:
            publish(base, 2)

    pulled: list[bytes] = []
    sent = 0

    def send(count: int) -> None:
        nonlocal sent
        pubsub.publish(examples, [_example(float(i)) for i in range(sent, sent + count)])
        sent += count

    with _running(pubsub, _argv(model_path, topics), examples):
        send(10)
        pulled += pubsub.pull(logs_sub, until=lambda got: len(got) >= 10, timeout_secs=30)
        publish_version_2()
        deadline = time.monotonic() + 30
        while not any(v == 2 for _, _, v in _answers(pulled)):
            assert time.monotonic() < deadline, "version 2 never answered"
            send(5)
            pulled += pubsub.pull(logs_sub, until=lambda got: len(got) >= 5, timeout_secs=10)
        send(10)
        missing = sent - len(pulled)
        pulled += pubsub.pull(logs_sub, until=lambda got: len(got) >= missing,
                              timeout_secs=30)
    answers = _answers(pulled)
    assert sorted(x for x, _, _ in answers) == [float(i) for i in range(sent)]
    assert all(y == 5 * version * x for x, y, version in answers)
    assert {version for _, _, version in answers} == {1, 2}
    last = [version for x, _, version in sorted(answers)][-10:]
    assert last == [2] * 10  # published after version 2 answered: all version 2


def test_malformed_messages_go_to_the_dead_letter_topic(pubsub, base, topics):
    examples, _, _, logs_sub = topics
    dead = pubsub.topic("dead")
    dead_sub = pubsub.subscription(dead)
    no_x = tf.train.Example(features=tf.train.Features(feature={
        "y": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))}))
    bad = [b"\x00garbage\xff", no_x.SerializeToString()]
    good = [_example(float(i)) for i in range(8)]
    with _running(pubsub, _argv(base, topics, "--dead_letter_topic", dead), examples):
        pubsub.publish(examples, good[:4] + bad + good[4:])
        pulled = pubsub.pull(logs_sub, until=lambda got: len(got) >= len(good),
                             timeout_secs=40)
        letters = pubsub.pull(dead_sub, until=lambda got: len(got) >= len(bad),
                              timeout_secs=20)
    assert sorted(x for x, _, _ in _answers(pulled)) == [float(i) for i in range(8)]
    letters = [json.loads(data) for data in letters]
    # Each bad message once, as it came, with where and why it failed.
    assert sorted(base64.b64decode(d["record_base64"]) for d in letters) == sorted(bad)
    # Checked before the model, with the rules of the version the job was built with.
    stages = {base64.b64decode(d["record_base64"]): d["stage"] for d in letters}
    assert stages == {bad[0]: "decode", bad[1]: "validate"}
    for letter in letters:
        assert letter["error_type"] and letter["message"]
