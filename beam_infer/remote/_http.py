"""HTTP for the REST clients: one pooled ``requests.Session``, timeouts, error classes.

No retries happen here (urllib3's are switched off): a failed request raises the
``_common`` error that says whether to retry, and the caller's retry loop decides.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping

import requests
import requests.adapters

from beam_infer._messages import detail
from beam_infer.remote._common import (
    DEFAULT_TIMEOUT_SECS,
    RETRYABLE_HTTP,
    BearerToken,
    CallRecord,
    RemoteInputError,
    RemoteServerError,
    RequestTooLargeError,
    RetryableRemoteError,
    Stopwatch,
    Tls,
    UntrustedServerError,
    read_ca_file,
    redact,
    untrusted_server,
)


@dataclasses.dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def tf_serving_error_text(body: bytes) -> str:
    """``{"error": "..."}`` (TF Serving, KServe) or ``{"error": {"message": ...}}`` (Google
    APIs) or FastAPI's ``{"detail": ...}``; else the body itself."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed.get("detail"))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return error if isinstance(error, str) else json.dumps(error)
    return body.decode("utf-8", "replace")


class HttpTransport:
    """POSTs and GETs with a connection pool, a timeout, TLS and an optional token.

    Args:
        protocol: The name records carry (``"tf_serving_rest"``, ...).
        timeout_secs: Connect and read timeout of each request.
        tls: Trust ``tls.ca_file`` instead of the system's CAs.
        token: Sent as ``Authorization: Bearer ...``.
        pool_size: Connections kept per host (the requests a worker has in flight).
        error_text: Reads the server's message out of an error body.
    """

    def __init__(self, protocol: str, *, timeout_secs: float = DEFAULT_TIMEOUT_SECS,
                 tls: Tls | None = None, token: BearerToken | None = None,
                 pool_size: int = 8,
                 error_text: Callable[[bytes], str] = tf_serving_error_text):
        self.protocol = protocol
        self.timeout_secs = timeout_secs
        self._tls = tls
        self._token = token
        self._pool_size = pool_size
        self._error_text = error_text
        self._session: requests.Session | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_session"] = None
        return state

    def __repr__(self) -> str:
        return (f"HttpTransport({self.protocol!r}, timeout_secs={self.timeout_secs}, "
                f"tls={self._tls is not None}, token={'<redacted>' if self._token else None})")

    def _client(self) -> requests.Session:
        if self._session is None:
            read_ca_file(self._tls)  # a clear error, not requests' OSError
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(
                pool_connections=1, pool_maxsize=self._pool_size, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.verify = (self._tls.ca_file or True) if self._tls else True
            session.trust_env = False  # no proxies or .netrc credentials from the environment
            self._session = session
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session = None

    def request(self, method: str, url: str, *, name: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None, rows: int = 0
                ) -> tuple[HttpAnswer, CallRecord]:
        """Sends one request; returns the 2xx answer and its record, or raises."""
        sent = dict(headers or {})
        secret = None
        if self._token is not None:
            secret = self._token.token()
            sent["Authorization"] = "Bearer " + secret.reveal()
        size = len(body or b"")
        watch = Stopwatch()

        def record(status: str, ok: bool, received: int = 0) -> CallRecord:
            return CallRecord(self.protocol, name, url, status, ok, watch.secs(), size,
                              received, rows)

        try:
            response = self._client().request(method, url, data=body, headers=sent,
                                              timeout=self.timeout_secs)
            content = response.content
        except requests.Timeout as e:
            raise RetryableRemoteError(
                f"{name} at {url} timed out after {self.timeout_secs:g} s: "
                f"{redact(type(e).__name__, secret)}", record("timeout", False)) from None
        except requests.exceptions.SSLError as e:
            text = detail(redact(str(e), secret))
            fix = untrusted_server(text, self._tls, grpc=False)
            if fix is not None:  # a refused certificate is refused again: not retried
                raise UntrustedServerError(f"{name} at {url}: {fix} ({text})",
                                           record("tls", False)) from None
            raise RetryableRemoteError(
                f"{name} at {url}: TLS failed ({type(e).__name__}: {text})",
                record("connection", False)) from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
            raise RetryableRemoteError(
                f"{name} at {url}: the connection failed ({type(e).__name__}: "
                f"{redact(str(e), secret)[:300]})", record("connection", False)) from None
        status = response.status_code
        done = record(str(status), 200 <= status < 300, len(content))
        if done.ok:
            return HttpAnswer(status, response.headers, content), done
        text = redact(self._error_text(content), secret)
        message = f"{name} at {url} answered HTTP {status}: {text}"
        if status in RETRYABLE_HTTP:
            raise RetryableRemoteError(message, done, throttled=status == 429,
                                       retry_after_secs=_retry_after(response.headers))
        if status == 413:
            raise RequestTooLargeError(message, done)
        if status == 400:
            raise RemoteInputError(message, done, server_message=text)
        raise RemoteServerError(message, done)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
