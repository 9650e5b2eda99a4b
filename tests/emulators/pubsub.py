"""The Cloud SDK's Pub/Sub emulator for the session, and helpers to publish and pull.

The jar is started directly (one java process, ready in ~2 s), not through
``gcloud beta emulators pubsub start``, which adds a wrapper process and ~3 s.
``pubsub`` sets ``PUBSUB_EMULATOR_HOST`` for the test: google-cloud-pubsub's clients,
and so Beam's DirectRunner Pub/Sub read and write, then talk to the emulator with no
credentials.
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import os
import shutil
import time
from collections.abc import Callable, Iterator

import pytest

from tests.emulators import _server

PROJECT = "test-project"
ENV = "PUBSUB_EMULATOR_HOST"
JAR_ENV = "PUBSUB_EMULATOR_JAR"
_JAR_GLOB = "platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar"
_names = itertools.count()


def find_jar() -> str | None:
    """``$PUBSUB_EMULATOR_JAR``, else the jar of the Cloud SDK that ``gcloud`` runs from."""
    if os.environ.get(JAR_ENV):
        return os.environ[JAR_ENV]
    roots = ["/usr/lib/google-cloud-sdk"]
    gcloud = shutil.which("gcloud")
    if gcloud:
        roots.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(gcloud))))
    for root in roots:
        jars = sorted(glob.glob(os.path.join(root, _JAR_GLOB)))
        if jars:
            return jars[-1]
    return None


@dataclasses.dataclass(frozen=True)
class PubSubEmulator:
    """The running emulator; ``host`` is what ``PUBSUB_EMULATOR_HOST`` holds."""

    host: str

    def topic(self, name: str = "topic") -> str:
        """Creates a topic no other test uses; returns ``projects/P/topics/NAME``."""
        from google.cloud import pubsub_v1

        topic = f"projects/{PROJECT}/topics/{name}-{os.getpid()}-{next(_names)}"
        pubsub_v1.PublisherClient().create_topic(name=topic, timeout=10)
        return topic

    def subscription(self, topic: str) -> str:
        """Creates a subscription to ``topic``; returns ``projects/P/subscriptions/NAME``."""
        from google.cloud import pubsub_v1

        name = topic.replace("/topics/", "/subscriptions/") + f"-sub{next(_names)}"
        pubsub_v1.SubscriberClient().create_subscription(name=name, topic=topic, timeout=10)
        return name

    def publish(self, topic: str, messages: list[bytes]) -> None:
        """Publishes ``messages`` and waits until the emulator has every one."""
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient()
        for future in [publisher.publish(topic, data) for data in messages]:
            future.result(timeout=10)

    def pull(self, subscription: str, *, until: Callable[[list[bytes]], bool],
             timeout_secs: float) -> list[bytes]:
        """Pulls and acknowledges messages until ``until(all pulled so far)`` or the timeout;
        returns every message pulled, in order (duplicates kept, so tests can see them)."""
        from google.api_core import exceptions
        from google.cloud import pubsub_v1

        subscriber = pubsub_v1.SubscriberClient()
        pulled: list[bytes] = []
        deadline = time.monotonic() + timeout_secs
        while not until(pulled) and time.monotonic() < deadline:
            try:
                response = subscriber.pull(subscription=subscription, max_messages=100,
                                           timeout=2, return_immediately=True)
            except exceptions.DeadlineExceeded:
                continue
            if not response.received_messages:
                time.sleep(0.2)
                continue
            subscriber.acknowledge(subscription=subscription,
                                   ack_ids=[m.ack_id for m in response.received_messages])
            pulled.extend(m.message.data for m in response.received_messages)
        return pulled


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubEmulator]:
    """The Pub/Sub emulator on a free loopback port, for the whole session."""
    jar, java = find_jar(), shutil.which("java")
    if not jar or not os.path.isfile(jar) or not java:
        pytest.fail(
            f"the Pub/Sub emulator needs java (found: {java}) and the Cloud SDK's "
            f"cloud-pubsub-emulator jar (found: {jar or 'none'}"
            f"{'' if not jar or os.path.isfile(jar) else ', which is not a file'}); "
            "install the google-cloud-cli and google-cloud-cli-pubsub-emulator packages "
            f"and a Java 17 runtime, or set {JAR_ENV}", pytrace=False)
    with _server.running(
            "pubsub-emulator",
            lambda port: [java, "-jar", jar, f"--host={_server.HOST}", f"--port={port}"],
            lambda port: f"http://{_server.HOST}:{port}/v1/projects/{PROJECT}/topics",
            tmp_path_factory.mktemp("pubsub_emulator"), start_timeout_secs=60) as port:
        yield PubSubEmulator(host=f"{_server.HOST}:{port}")


@pytest.fixture
def pubsub(pubsub_emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch
           ) -> PubSubEmulator:
    """The session's Pub/Sub emulator, with this test's Pub/Sub clients pointed at it."""
    monkeypatch.setenv(ENV, pubsub_emulator.host)
    return pubsub_emulator
