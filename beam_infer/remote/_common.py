"""What every remote client shares: its errors, its per-call record, secrets, TLS, timeouts.

The errors split failures the way a retry loop needs them split:

* ``RetryableRemoteError``: try the same request again later (HTTP 429, 502, 503, 504;
  gRPC UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED; a reset or refused
  connection; a timeout). ``throttled`` is True for 429 / RESOURCE_EXHAUSTED (slow
  down), and ``retry_after_secs`` holds a server's ``Retry-After`` when it sent one.
* ``RemoteInputError``: the server refused the request's content (HTTP 400, gRPC
  INVALID_ARGUMENT). Retrying the same rows fails again; a smaller batch may isolate
  the bad ones. ``server_message`` is the server's text, bounded (``_messages``).
* ``RequestTooLargeError``: the request is over the server's size limit (HTTP 413, gRPC
  RESOURCE_EXHAUSTED about a message larger than its max). Split, do not retry.
* ``RemoteServerError``: any other answer (404 / NOT_FOUND, 401, 403, 500, 501,
  FAILED_PRECONDITION, a body that cannot be read): permanent for this request.
  ``UntrustedServerError``, one of them: the server's TLS certificate was refused (not
  signed by a trusted CA, or not issued for the name connected to); its message says
  which ``Tls`` setting fixes it (``untrusted_server``). ``TokenError``, another: the
  ``BearerToken`` gave no token (an unreadable file, an empty variable, credentials
  Google refused to refresh), so nothing was sent.

Every error carries the ``CallRecord`` of its call; a successful call returns one. A
record holds the endpoint's address but never a token: tokens live in ``Secret``s,
whose ``repr`` and ``str`` are redacted, and are only ever put into request headers.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf

from beam_infer._backend import CallRecord  # defined with the seam; re-exported here
from beam_infer._errors import BeamInferError, ConfigurationError, TransientError
from beam_infer._messages import bounded, detail

#: Seconds a call may take, unless the client is given another timeout.
DEFAULT_TIMEOUT_SECS = 30.0

#: HTTP statuses worth retrying (the throttling one first).
RETRYABLE_HTTP = frozenset({429, 502, 503, 504})


class RemoteError(BeamInferError):
    """A call to a remote model endpoint failed; ``record`` tells which and how."""

    def __init__(self, message: str, record: CallRecord | None = None):
        super().__init__(bounded(message))
        self.record = record

    @property
    def status(self) -> str | None:
        return self.record.status if self.record else None


class RetryableRemoteError(RemoteError, TransientError):
    """The same request may succeed later (see the module docstring).

    A ``TransientError``: model calls that raise it are retried (``_retries``)."""

    def __init__(self, message: str, record: CallRecord | None = None, *,
                 throttled: bool = False, retry_after_secs: float | None = None):
        super().__init__(message, record)
        self.throttled = throttled
        self.retry_after_secs = retry_after_secs


class RemoteInputError(RemoteError, ValueError):
    """The server refused the request's content (400 / INVALID_ARGUMENT)."""

    def __init__(self, message: str, record: CallRecord | None = None, *,
                 server_message: str = ""):
        super().__init__(message, record)
        self.server_message = detail(server_message)


class RequestTooLargeError(RemoteError):
    """The request is larger than the server takes: send fewer rows."""


class RemoteServerError(RemoteError):
    """A permanent failure that is not about the rows (unknown model, auth, 5xx, ...)."""


class TokenError(RemoteServerError):
    """No token to send: the ``BearerToken``'s file, variable or Google credentials gave
    none (nothing was sent)."""


class NoMetadataRouteError(RemoteServerError):
    """The server serves the model but has no route to read its signatures from (KServe's
    v1 API): ``EndpointSpec(signatures_from=...)`` gives them."""


class UntrustedServerError(RemoteServerError):
    """The server's TLS certificate was refused: retrying will not help; ``Tls`` will."""


_NOT_TRUSTED = re.compile(r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|"
                          r"self[- ]signed certificate|unable to get local issuer", re.I)
_NOT_NAMED = re.compile(r"Hostname Verification|hostname mismatch|IP address mismatch|"
                        r"doesn't match|not valid for", re.I)


def untrusted_server(text: str, tls: Tls | None, *, grpc: bool) -> str | None:
    """What to do about a refused certificate, when ``text`` (a transport error) says the
    certificate was refused; else None."""
    if _NOT_NAMED.search(text):
        fix = ("pass tls=bi.Tls(server_name='<a name in the certificate>') to check that "
               "name instead" if grpc else "connect by a name the certificate holds")
        return f"the server's TLS certificate is not issued for the name connected to: {fix}"
    if _NOT_TRUSTED.search(text):
        if tls is not None and tls.ca_file:
            return (f"the server's TLS certificate is not signed by a CA in "
                    f"tls.ca_file={tls.ca_file!r}: pass the PEM bundle of the CA that "
                    "signed it")
        return ("the server's TLS certificate is not signed by a CA this machine trusts "
                "(the system's CAs): pass the CA that signed it, "
                "EndpointSpec(tls=bi.Tls(ca_file='/path/to/ca.pem'))")
    return None


def read_ca_file(tls: Tls | None) -> bytes | None:
    """The PEM bytes of ``tls.ca_file`` (None: the system's CAs).

    Raises:
        RemoteServerError: the file cannot be read here or holds no PEM certificate.
    """
    if tls is None or not tls.ca_file:
        return None
    try:
        with open(tls.ca_file, "rb") as f:
            data = f.read()
    except OSError as e:
        raise RemoteServerError(
            f"tls.ca_file={tls.ca_file!r} cannot be read on this machine "
            f"({e.strerror or type(e).__name__}): it must hold the PEM CA bundle that "
            "signed the server's certificate, wherever the pipeline is built and its "
            "workers run.") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise RemoteServerError(
            f"tls.ca_file={tls.ca_file!r} holds no PEM certificate (no '-----BEGIN "
            "CERTIFICATE-----' line): pass the CA bundle as PEM text.")
    return data


class Secret:
    """A string that never shows in ``repr``, ``str``, logs or pickles' text."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('<redacted>')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclasses.dataclass(frozen=True)
class BearerToken:
    """Where a bearer token comes from: exactly one of ``value``, ``file``, ``env``,
    ``google`` (Application Default Credentials, refreshed when they expire).

    The token is read when a request is made (a file or variable may be rotated), and
    only ever placed in the ``Authorization`` header.
    """

    value: Secret | None = None
    file: str | None = None
    env: str | None = None
    google: bool = False
    scopes: tuple[str, ...] = ("https://www.googleapis.com/auth/cloud-platform",)

    def __post_init__(self) -> None:
        given = [self.value is not None, self.file is not None, self.env is not None,
                 self.google]
        if sum(given) != 1:
            raise ValueError("BearerToken takes exactly one of value=, file=, env=, google=True")
        if isinstance(self.value, str):
            object.__setattr__(self, "value", Secret(self.value))

    def token(self) -> Secret:
        """The token now (a file and a variable are read again, ADC refreshed if due).

        Raises:
            TokenError: the file or variable holds no token, or Google refused
                to refresh the credentials; ``RetryableRemoteError``: Google's token
                endpoint could not be reached.
        """
        if self.value is not None:
            return self.value
        if self.file is not None:
            try:
                with open(self.file, encoding="utf-8") as f:
                    value = f.read().strip()
            except OSError as e:
                raise TokenError(
                    f"the token file {self.file} cannot be read here "
                    f"({e.strerror or type(e).__name__}); BearerToken(file=) is read on "
                    "every machine that calls the endpoint.") from None
            if not value:
                raise TokenError(f"the token file {self.file} is empty")
            return Secret(value)
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise TokenError(f"environment variable {self.env} holds no token")
            return Secret(value.strip())
        return Secret(_google_token(self.scopes))

    def header(self) -> str:
        return "Bearer " + self.token().reveal()


#: Application Default Credentials per process, by where they come from: the scopes and
#: the ``GOOGLE_APPLICATION_CREDENTIALS`` file (another file, another cache entry, so a
#: process that points the variable elsewhere never gets the old account's token).
_GOOGLE: dict[tuple[tuple[str, ...], str | None], object] = {}
_GOOGLE_LOCK = threading.Lock()


def _google_token(scopes: tuple[str, ...]) -> str:
    """A valid access token of Application Default Credentials, refreshed when it is
    about to expire (google-auth's ``valid``); one refresh at a time per process."""
    import google.auth
    import google.auth.exceptions
    import google.auth.transport.requests

    source = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    where = f"GOOGLE_APPLICATION_CREDENTIALS={source}" if source else \
        "no GOOGLE_APPLICATION_CREDENTIALS: gcloud's or the metadata server's"
    key = (scopes, source)
    with _GOOGLE_LOCK:
        try:
            credentials = _GOOGLE.get(key)
            if credentials is None:
                credentials, _ = google.auth.default(scopes=list(scopes))
                _GOOGLE[key] = credentials
            if not credentials.valid:
                credentials.refresh(google.auth.transport.requests.Request())
        except google.auth.exceptions.TransportError as e:
            raise RetryableRemoteError(
                f"Google Application Default Credentials ({where}) could not be "
                f"refreshed: the token endpoint did not answer ({type(e).__name__}: "
                f"{detail(str(e))})") from None
        except google.auth.exceptions.GoogleAuthError as e:
            raise TokenError(
                f"Google Application Default Credentials ({where}) gave no token: "
                f"{type(e).__name__}: {detail(str(e))}") from None
        return credentials.token


@dataclasses.dataclass(frozen=True)
class Tls:
    """TLS for an endpoint: ``ca_file`` a PEM bundle of the CAs to trust (None: the
    system's); ``server_name`` overrides the name checked in the server's certificate
    (gRPC only)."""

    ca_file: str | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        for name in ("ca_file", "server_name"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigurationError(f"Tls.{name} must be a non-empty string or None; "
                                         f"got {value!r}.")


def redact(text: str, *secrets: Secret | None) -> str:
    """``text`` with every secret's value replaced (for foreign text that may echo it)."""
    for secret in secrets:
        if secret is not None and secret.reveal():
            text = text.replace(secret.reveal(), "<redacted>")
    return text


class Stopwatch:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._start = clock()

    def secs(self) -> float:
        return self._clock() - self._start


def as_numpy(value: object) -> np.ndarray:
    """A feed as a numpy array (a ``tf.Tensor`` is read out; anything else ``asarray``)."""
    if isinstance(value, tf.Tensor):
        value = value.numpy()
    return np.asarray(value) if not isinstance(value, np.ndarray) else value


def row_count(feeds: Mapping[str, np.ndarray]) -> int:
    """How many rows a call's feeds hold (the first feed's batch dimension)."""
    for value in feeds.values():
        shape = getattr(value, "shape", None)
        return int(shape[0]) if shape else len(value)
    return 0
