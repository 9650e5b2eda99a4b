"""Pre-flight checks: a job that cannot reach GCS or Pub/Sub fails in seconds, not minutes.

Left alone, a job pointed at an emulator that is not running, or at Google Cloud with no
credentials, does not fail fast: Beam first retries its credential lookup for ~20 s,
then the storage client retries a refused connection for two minutes, and the streaming
job's Pub/Sub read on the DirectRunner retries for a minute and then still does not end.
So before building anything the jobs call ``check_job_services``, which for the services
the job's flags name:

* with ``STORAGE_EMULATOR_HOST`` / ``PUBSUB_EMULATOR_HOST`` set, asks the emulator one
  HTTP question (bounded by ``timeout_secs``), and for Pub/Sub checks that the topics
  and subscription exist there;
* otherwise checks that Google credentials can be found (``google.auth.default()``:
  the environment, gcloud's files, last the GCE metadata server), as every Google client
  will need them.

A failed check raises ``ServiceError`` naming the service, what was found and how to
configure it. Only the jobs call this; the ``beam_infer`` library does nothing of the
kind, so what it does on real Google Cloud is unchanged.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence

GCS_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
PUBSUB_EMULATOR_ENV = "PUBSUB_EMULATOR_HOST"
TIMEOUT_SECS = 3.0
_README = 'README, "Trying the cloud paths locally"'
# Emulators are local services: never send their checks through an HTTP(S) proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServiceError(RuntimeError):
    """A cloud service the job needs cannot be used; the message says how to fix it."""


def uses_gcs(values: Iterable[object]) -> bool:
    """Whether any flag value is (or holds, as ``--temp_location=gs://...``) a gs:// path."""
    return any(isinstance(v, str) and "gs://" in v for v in values)


def check_job_services(values: Iterable[object], *,
                       pubsub_topics: Sequence[str | None] = (),
                       pubsub_subscriptions: Sequence[str | None] = (), environ=None,
                       timeout_secs: float = TIMEOUT_SECS) -> None:
    """Checks GCS if any of ``values`` (the job's flags) is a gs:// path, and Pub/Sub if
    topics or subscriptions are named (None and empty names are ignored).

    Raises:
        ServiceError: a service cannot be reached or has no credentials.
    """
    environ = os.environ if environ is None else environ
    if uses_gcs(values):
        check_gcs(environ=environ, timeout_secs=timeout_secs)
    topics = [t for t in pubsub_topics if t]
    subscriptions = [s for s in pubsub_subscriptions if s]
    if topics or subscriptions:
        check_pubsub(topics=topics, subscriptions=subscriptions, environ=environ,
                     timeout_secs=timeout_secs)


def check_gcs(*, environ, timeout_secs: float = TIMEOUT_SECS) -> None:
    """The GCS emulator answers, or Google credentials exist.

    Raises:
        ServiceError: neither.
    """
    endpoint = environ.get(GCS_EMULATOR_ENV)
    if not endpoint:
        _check_credentials("GCS", "gs:// paths", GCS_EMULATOR_ENV,
                           "gcp-storage-emulator start --host=127.0.0.1 --port=9023 "
                           "--in-memory", "http://127.0.0.1:9023")
        return
    base = endpoint if "://" in endpoint else f"http://{endpoint}"
    status, problem = _ask(f"{base.rstrip('/')}/storage/v1/b?project=emulator", timeout_secs)
    if status is None:
        port = urllib.parse.urlsplit(base).port or "PORT"
        raise ServiceError(
            f"GCS: the storage emulator at {GCS_EMULATOR_ENV}={_redact(endpoint)} did not "
            f"answer within {timeout_secs:g} s ({problem}). Start it "
            f"(gcp-storage-emulator start --host=127.0.0.1 --port={port} --in-memory), "
            f"or unset {GCS_EMULATOR_ENV} to use Google Cloud Storage; see {_README}.")


def check_pubsub(*, topics: Sequence[str], subscriptions: Sequence[str], environ,
                 timeout_secs: float = TIMEOUT_SECS) -> None:
    """The Pub/Sub emulator answers and holds the topics and subscriptions, or Google
    credentials exist.

    Raises:
        ServiceError: the emulator does not answer, lacks one of them, or no credentials.
    """
    host = environ.get(PUBSUB_EMULATOR_ENV)
    if not host:
        _check_credentials("Pub/Sub", "Pub/Sub topics and subscriptions",
                           PUBSUB_EMULATOR_ENV,
                           "gcloud beta emulators pubsub start --host-port=127.0.0.1:8085",
                           "127.0.0.1:8085")
        return
    base = (host if "://" in host else f"http://{host}").rstrip("/")
    where = f"the Pub/Sub emulator at {PUBSUB_EMULATOR_ENV}={_redact(host)}"
    named = [("topic", t) for t in topics] + [("subscription", s) for s in subscriptions]
    project = next((n.split("/")[1] for _, n in named if n.count("/") >= 3), "emulator")
    status, problem = _ask(f"{base}/v1/projects/{urllib.parse.quote(project)}/topics",
                           timeout_secs)
    if status is None:
        port = urllib.parse.urlsplit(base).port or "PORT"
        raise ServiceError(
            f"Pub/Sub: {where} did not answer within {timeout_secs:g} s ({problem}). "
            f"Start it (gcloud beta emulators pubsub start --host-port=127.0.0.1:{port}), "
            f"or unset {PUBSUB_EMULATOR_ENV} to use Google Cloud Pub/Sub; see {_README}.")
    for kind, name in named:
        status, problem = _ask(f"{base}/v1/{urllib.parse.quote(name)}", timeout_secs)
        if status == 404:
            raise ServiceError(
                f"Pub/Sub: {kind} {name!r} does not exist on {where}. Create it first "
                "(python -m pipelines.emulators create-pubsub TOPIC=SUBSCRIPTION); the "
                "emulator forgets everything when it stops.")
        if status != 200:
            raise ServiceError(
                f"Pub/Sub: {where} could not look up {kind} {name!r} ({problem}). "
                f"Name it projects/PROJECT/{kind}s/NAME.")


def _check_credentials(service: str, what: str, emulator_env: str, start: str,
                       example: str) -> None:
    import google.auth
    from google.auth import exceptions

    try:
        google.auth.default()
    except exceptions.DefaultCredentialsError as e:
        raise ServiceError(
            f"{service}: {what} need Google Cloud credentials, and none were found "
            f"({_first_line(e)}). Run `gcloud auth application-default login`, or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file. To try the job "
            f"without a cloud account, start the local emulator ({start}) and set "
            f"{emulator_env}={example}; see {_README}.") from e


def _ask(url: str, timeout_secs: float) -> tuple[int | None, str]:
    """``(HTTP status, what went wrong)``; status None if nothing answered in time."""
    try:
        with _OPENER.open(url, timeout=timeout_secs) as response:
            return response.status, ""
    except urllib.error.HTTPError as e:
        return e.code, f"HTTP {e.code} {_error_message(e)}".strip()
    except (OSError, ValueError) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        return None, f"{type(reason).__name__}: {reason}"


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read(4096))["error"]["message"])[:200]
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _redact(endpoint: str) -> str:
    """The endpoint without any ``user:password@`` part, for messages."""
    parts = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    if parts.password is None and parts.username is None:
        return endpoint
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)).removeprefix("//")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
