"""Jobs fail within seconds, saying which service and how to configure it, when GCS or
Pub/Sub cannot be used: an emulator that is not running or does not answer, a topic
that does not exist, no credentials. Never a hang or minutes of retries."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from pipelines import emulators, keyed, services, streaming
from tests.emulators import _server

BOUND_SECS = 5.0  # the checks' own limit is services.TIMEOUT_SECS (3 s) per question
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBSCRIPTION = "projects/test-project/subscriptions/examples"
TOPIC = "projects/test-project/topics/logs"


def _fails_fast(run, *args) -> str:
    started = time.monotonic()
    with pytest.raises(services.ServiceError) as error:
        run(*args)
    assert time.monotonic() - started < BOUND_SECS
    return str(error.value)


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    """No Google credentials anywhere google.auth looks, and no emulator configured."""
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", services.GCS_EMULATOR_ENV,
                 services.PUBSUB_EMULATOR_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no ADC file
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # not the GCE metadata server either


def test_gcs_emulator_that_is_not_running_fails_the_job_in_seconds(monkeypatch, tmp_path):
    port = _server.free_port()
    monkeypatch.setenv(services.GCS_EMULATOR_ENV, f"http://127.0.0.1:{port}")
    message = _fails_fast(keyed.run, ["--model_path=gs://bucket/models/five/1",
                                      f"--work_dir={tmp_path}"])
    assert message.startswith(
        f"GCS: the storage emulator at STORAGE_EMULATOR_HOST=http://127.0.0.1:{port} did not "
        "answer within 3 s (ConnectionRefusedError")
    assert message.endswith(
        f"Start it (gcp-storage-emulator start --host=127.0.0.1 --port={port} --in-memory), "
        "or unset STORAGE_EMULATOR_HOST to use Google Cloud Storage; see README, "
        '"Trying the cloud paths locally".')


def test_gcs_emulator_that_does_not_answer_fails_the_job_in_seconds(monkeypatch, tmp_path):
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setenv(services.GCS_EMULATOR_ENV,
                           f"127.0.0.1:{silent.getsockname()[1]}")
        message = _fails_fast(keyed.run, ["--output=gs://bucket/answers.txt",
                                          f"--work_dir={tmp_path}"])
    assert "did not answer within 3 s (TimeoutError" in message


def test_gcs_without_credentials_fails_the_job_in_seconds(no_credentials, tmp_path):
    message = _fails_fast(keyed.run, ["--model_path=gs://bucket/models/five/1",
                                      f"--work_dir={tmp_path}"])
    assert message.startswith("GCS: gs:// paths need Google Cloud credentials, and none were "
                              "found (DefaultCredentialsError: ")
    assert message.endswith(
        "Run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS "
        "to a service-account key file. To try the job without a cloud account, start the "
        "local emulator (gcp-storage-emulator start --host=127.0.0.1 --port=9023 --in-memory) "
        "and set STORAGE_EMULATOR_HOST=http://127.0.0.1:9023; see README, \"Trying the cloud "
        "paths locally\".")


def test_pubsub_emulator_that_is_not_running_fails_the_job_in_seconds(monkeypatch, tmp_path):
    port = _server.free_port()
    monkeypatch.setenv(services.PUBSUB_EMULATOR_ENV, f"127.0.0.1:{port}")
    message = _fails_fast(streaming.run, [f"--input_subscription={SUBSCRIPTION}",
                                          f"--output_topic={TOPIC}", f"--work_dir={tmp_path}"])
    assert message.startswith(
        f"Pub/Sub: the Pub/Sub emulator at PUBSUB_EMULATOR_HOST=127.0.0.1:{port} did not "
        "answer within 3 s (ConnectionRefusedError")
    assert message.endswith(
        f"Start it (gcloud beta emulators pubsub start --host-port=127.0.0.1:{port}), or "
        "unset PUBSUB_EMULATOR_HOST to use Google Cloud Pub/Sub; see README, \"Trying the "
        "cloud paths locally\".")


def test_pubsub_without_credentials_fails_the_job_in_seconds(no_credentials, tmp_path):
    message = _fails_fast(streaming.run, [f"--input_subscription={SUBSCRIPTION}",
                                          f"--output_topic={TOPIC}", f"--work_dir={tmp_path}"])
    assert message.startswith("Pub/Sub: Pub/Sub topics and subscriptions need Google Cloud "
                              "credentials, and none were found (DefaultCredentialsError: ")
    assert "set PUBSUB_EMULATOR_HOST=127.0.0.1:8085" in message


@pytest.mark.emulators
def test_pubsub_topic_or_subscription_missing_on_the_emulator_fails_in_seconds(pubsub,
                                                                              tmp_path):
    topic = pubsub.topic("logs")
    message = _fails_fast(streaming.run, [f"--input_subscription={SUBSCRIPTION}-nope",
                                          f"--output_topic={topic}", f"--work_dir={tmp_path}"])
    assert message == (
        f"Pub/Sub: subscription '{SUBSCRIPTION}-nope' does not exist on the Pub/Sub emulator "
        f"at PUBSUB_EMULATOR_HOST={pubsub.host}. Create it first (python -m "
        "pipelines.emulators create-pubsub TOPIC=SUBSCRIPTION); the emulator forgets "
        "everything when it stops.")


def test_emulator_addresses_in_messages_hide_passwords():
    assert services._redact("http://user:secret@127.0.0.1:9023") == "http://127.0.0.1:9023"
    assert services._redact("user:secret@127.0.0.1:8085") == "127.0.0.1:8085"
    assert services._redact("127.0.0.1:8085") == "127.0.0.1:8085"


def test_emulator_commands_refuse_to_run_without_an_emulator(no_credentials, tmp_path):
    with pytest.raises(SystemExit) as error:
        emulators.main(["copy", str(tmp_path), "gs://bucket/models/five/1"])
    assert "set STORAGE_EMULATOR_HOST" in str(error.value)


@pytest.mark.parametrize("job, flags, env, service", [
    ("pipelines.keyed", ["--model_path=gs://bucket/models/five/1"],
     services.GCS_EMULATOR_ENV, "GCS: the storage emulator"),
    ("pipelines.streaming", [f"--input_subscription={SUBSCRIPTION}", f"--output_topic={TOPIC}"],
     services.PUBSUB_EMULATOR_ENV, "Pub/Sub: the Pub/Sub emulator"),
], ids=["gcs", "pubsub"])
def test_job_process_with_an_unreachable_emulator_exits_at_once(tmp_path, job, flags, env,
                                                                 service):
    # The real command line, with nothing of the test's in the process.
    port = _server.free_port()
    started = time.monotonic()
    finished = subprocess.run(
        [sys.executable, "-m", job, *flags, f"--work_dir={tmp_path}"], cwd=REPO,
        env={**os.environ, env: f"127.0.0.1:{port}", "PYTHONPATH": REPO},
        capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    assert finished.returncode == 1
    assert service in finished.stderr.splitlines()[-1]
    # Importing TensorFlow and Beam takes most of this on a busy machine. Without the
    # check the keyed job ended after 123 s (the storage client's 120 s retry), and the
    # streaming job was still running after 75 s.
    assert took < 60, took
