"""``RemoteBackend`` and ``RemoteServable``: a model behind an endpoint as a ``_backend``.

Built with the pipeline, ``RemoteBackend`` reads the model's signatures from the server
(TF Serving's ``GetModelMetadata`` or REST ``/metadata``, KServe's v2 metadata; Vertex
and ``signatures_from``: a local SavedModel), within seconds or with a clear error, and
plans them with ``_signatures.plan`` as a local model's are.

On the worker ``RemoteServable.call`` turns one model call into requests:

* **split** by rows (``EndpointSpec.request_rows``) and by request bytes
  (``request_bytes``; measured on the request as it will be sent, built in the thread
  that sends it): a part over the cap is halved, and an element whose own request is
  over it is never sent: the call fails with ``ElementTooLargeError`` naming the cap
  and isolation dead-letters that element alone (the others' answers are kept, below). A
  server's ``RequestTooLargeError`` (413) halves the part and lowers the cap for later
  calls;
* **sent** with at most ``max_in_flight`` requests in flight per worker process, all
  DoFn threads together (``Limiter``; a call's parts go through a thread pool, a
  one-request call runs in the caller's thread), and the outputs joined in row order;
* **throttled** when the server answers 429 / RESOURCE_EXHAUSTED: the limiter waits
  ``Retry-After`` (else a doubling backoff, at most 60 s) before the next request and
  halves the in-flight limit, which grows back by one every ``RECOVER_SECS`` without a
  throttle; the call fails as transient and ``_retries`` retries it;
* **not scored twice**: when a call fails after some of its requests were answered,
  those rows' outputs are kept (``RowCache``, bounded) and a retry of the call, or an
  isolation call holding the same rows, takes them from there instead of sending them
  again.

Failures keep ``remote._common``'s classes: ``RetryableRemoteError`` is a
``TransientError`` (retried by ``_retries``); ``RemoteInputError`` (400 /
INVALID_ARGUMENT) is not, so isolation bisects the call and dead-letters the elements
the server refuses with its (bounded) message. Each request's ``CallRecord`` (with the
time it waited for throttling) is returned with the call's events and reported as
metrics by the bundle's thread (``_metrics.report_event``); a failed call's records wait
for the next call or ``take_load_events``.

The version that answered (gRPC and KServe answers, Vertex's ``modelVersionId``, the
version in a REST URL) goes into ``ModelVersion``, so PredictionLogs record it in
``model_spec`` as for a local versioned base path. A call whose requests were answered
by different versions (a rollout mid-call) records its first request's.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from beam_infer._backend import CallRecord, Event, ModelVersion, SpecOptions
from beam_infer._errors import ConfigurationError, ModelPathError, SignatureError
from beam_infer._signatures import SignaturePlan, plan, signatures_of
from beam_infer._validation import Validator
from beam_infer.remote._common import (
    RemoteError,
    RemoteServerError,
    RequestTooLargeError,
    RetryableRemoteError,
    Tls,
    TokenError,
    UntrustedServerError,
    read_ca_file,
)
from beam_infer.remote._kserve_v2 import KServeV2Client
from beam_infer.remote._spec import EndpointSpec, Protocol, parse_url
from beam_infer.remote._tf_serving_grpc import TfServingGrpcClient
from beam_infer.remote._tf_serving_rest import TfServingRestClient
from beam_infer.remote._vertex import VertexClient

#: Seconds the build-time metadata read may take per attempt (a server that is down
#: fails the pipeline's construction within seconds, never hangs it).
METADATA_TIMEOUT_SECS = 5.0
METADATA_ATTEMPTS = 2
#: Throttling: the longest wait a Retry-After may impose, and how long the in-flight
#: limit stays lowered before it grows back by one.
MAX_THROTTLE_SECS = 60.0
RECOVER_SECS = 10.0
#: Rows whose outputs a worker keeps from failed calls (see ``RowCache``), and for how long.
CACHE_ROWS = 100_000
CACHE_TTL_SECS = 600.0

Calls = Sequence[tuple[str, Mapping[str, Any]]]


class ElementTooLargeError(RequestTooLargeError):
    """One element's own request is over ``EndpointSpec.max_request_bytes``: it is not sent."""


def make_client(spec: EndpointSpec, *, timeout_secs: float | None = None,
                signatures: Mapping | None = None):
    """The ``remote`` client of ``spec`` (one per worker; ``signatures``: already read)."""
    timeout = timeout_secs or spec.timeout_secs
    common = {"timeout_secs": timeout, "tls": spec.tls, "token": spec.token}
    if spec.protocol is Protocol.TF_SERVING_GRPC:
        return TfServingGrpcClient(
            spec.target, spec.model_name, version=spec.version,
            version_label=spec.version_label, example_api=spec.example_api,
            max_message_bytes=max(64 * 2**20, 2 * spec.request_bytes),
            signatures=signatures, **common)
    pool = max(spec.max_in_flight, 1)
    if spec.protocol is Protocol.TF_SERVING_REST:
        return TfServingRestClient(
            spec.target, spec.model_name, version=spec.version,
            version_label=spec.version_label, columnar=spec.columnar,
            example_api=spec.example_api, pool_size=pool, signatures=signatures, **common)
    if spec.protocol is Protocol.KSERVE_V2:
        return KServeV2Client(spec.target, spec.model_name, version=spec.version,
                              signature_name=spec.signature_names[0], pool_size=pool,
                              **common)
    project, location, endpoint = spec.vertex_endpoint
    signature = (signatures or {}).get(spec.signature_names[0])
    if signature is None:
        raise SignatureError(
            f"signature {spec.signature_names[0]!r} is not in {spec.signatures_from}; "
            f"available: {', '.join(sorted(signatures or {})) or 'none'}.")
    return VertexClient(project, location, endpoint, signature=signature,
                        signature_name=spec.signature_names[0],
                        api_endpoint=spec.api_endpoint, pool_size=pool, **common)


def read_signatures(spec: EndpointSpec) -> tuple[dict, int | None]:
    """The endpoint's SignatureDefs and the version its metadata names (if it says).

    Raises:
        ConfigurationError: the server cannot be reached or does not serve the model.
    """
    if spec.signatures_from is not None:
        from beam_infer.saved_model import _files

        try:
            saved = _files.read_saved_model(spec.signatures_from)
            graph = _files.select_meta_graph(saved, ("serve",), spec.signatures_from)
        except OSError as e:
            raise ModelPathError(
                f"EndpointSpec.signatures_from={spec.signatures_from!r} holds no readable "
                f"SavedModel ({type(e).__name__}); point it at the SavedModel the endpoint "
                "serves.") from None
        return dict(graph.signature_def), None
    try:
        read_ca_file(spec.tls)  # here too: the metadata is read over this TLS now
    except RemoteServerError as e:
        raise ConfigurationError(f"{spec.url}: {e}") from None
    client = make_client(spec, timeout_secs=min(spec.timeout_secs, METADATA_TIMEOUT_SECS))
    error: RemoteError | None = None
    for attempt in range(METADATA_ATTEMPTS):
        try:
            if spec.protocol is Protocol.KSERVE_V2:
                defs, _ = client.signature_defs()
                return defs, None
            defs, version, _ = client.metadata()
            return defs, version
        except RetryableRemoteError as e:
            error = e
            if attempt + 1 < METADATA_ATTEMPTS:
                time.sleep(0.5)
        except RemoteError as e:
            error = e
            break
        finally:
            close = getattr(client, "close", None)
            if close is not None:
                close()
    if isinstance(error, UntrustedServerError | TokenError):
        raise ConfigurationError(
            f"could not read the model's signatures from {spec.url}: {error}") from None
    raise ConfigurationError(
        f"could not read the model's signatures from {spec.url}: {error}. Check that the "
        "server is up, reachable from here and serves this model (name, version); or pass "
        "EndpointSpec(signatures_from=<the SavedModel it serves>) to skip the metadata "
        "call.") from None


class RemoteBackend(SpecOptions):
    """A model behind an endpoint (``_backend.Backend``): read and planned at build time.

    Args:
        spec: The endpoint and how it is called.

    Raises:
        ConfigurationError: the server cannot be reached, or its signatures do not fit
            (an unknown signature lists the available ones).
    """

    def __init__(self, spec: EndpointSpec):
        if not isinstance(spec, EndpointSpec):
            raise ConfigurationError(f"RemoteBackend takes an EndpointSpec; got "
                                     f"{type(spec).__name__}.")
        defs, version = read_signatures(spec)
        if spec.protocol is Protocol.TF_SERVING_REST and spec.version is None \
                and not spec.version_label and version is not None:
            # REST answers do not name the version: ask for the one read now, all job
            # long, so the version logs record is the one that answered.
            spec = spec.replace(version=version)
        self.spec = spec
        self.signature_defs = defs
        self.plan: SignaturePlan = plan(signatures_of(defs), spec.signature_names,
                                        spec.url)
        self.version = ModelVersion(path=spec.url, name=spec.recorded_name,
                                    version=spec.version)

    @property
    def location(self) -> str:
        return self.spec.url

    share_across_processes = False  # a connection per process is cheap
    sends_ahead = True  # RemoteServable.send_ahead (see _send_ahead)

    def load(self) -> RemoteServable:
        return RemoteServable(self.spec, make_client(self.spec, signatures=self.signature_defs))

    def validator(self) -> Validator:
        if self.spec.signatures_from is not None:
            from beam_infer.saved_model._backend import validator

            return validator(self.spec.signatures_from, ("serve",), self.plan,
                             strict_casts=self.spec.strict_input_casts)
        return Validator.for_plan(self.plan, strict_casts=self.spec.strict_input_casts)

    def model_copies(self) -> int:
        return 1

    def update_model_path(self, model_path: str) -> RemoteBackend:
        """Beam's model-refresh side input, given an endpoint URL (``EndpointSpec.from_url``).

        See ``refreshed_spec``: the URL says which model, the pipeline's spec the rest.
        The new model's signatures are read (and checked) now, as at build time.
        """
        return RemoteBackend(refreshed_spec(self.spec, model_path))

    def describe(self) -> str:
        """The endpoint, its plan and each signature, as lines (for ``beam-infer inspect``)."""
        lines = [self.spec.describe(),
                 f"operation: {self.plan.operation.value}, fed {self.plan.feed.value}"]
        if self.spec.version is not None:
            lines.append(f"version: {self.spec.version}")
        for signature in signatures_of(self.signature_defs).values():
            lines.append(signature.describe())
        return "\n".join(lines)

    def __repr__(self) -> str:
        names = ",".join(s.name for s in self.plan.signatures)
        return f"{self.spec.url}, {self.plan.operation.value}:{names}"


def refreshed_spec(spec: EndpointSpec, url: str) -> EndpointSpec:
    """``spec`` pointed at the model ``url`` names (a model-refresh side input's path).

    The URL names the whole model: protocol, server, model, version or label (none: the
    server's latest, so a version pinned by the old URL is not carried over) and whether
    TLS is used (``grpcs://``, ``https://``). What a URL cannot say is kept: the token,
    the TLS CA (``tls.ca_file``; ``server_name`` only while the server is the same one),
    batching, request limits, timeouts and signature names. Options of another protocol
    (``columnar``, ``example_api``, ``api_endpoint``) are dropped when the protocol changes.

    Raises:
        ConfigurationError: ``url`` is not an endpoint URL.
    """
    fields = parse_url(url)
    protocol, target = fields["protocol"], fields["target"]
    same_server = protocol is spec.protocol and target == spec.target
    secure = "tls" in fields or target.startswith("https://")
    tls = None
    if secure:
        old = spec.tls or Tls()
        tls = Tls(ca_file=old.ca_file, server_name=old.server_name if same_server else None)
        if tls == Tls() and protocol is not Protocol.TF_SERVING_GRPC:
            tls = None  # https with the system's CAs
    changes = {"protocol": protocol, "target": target, "tls": tls,
               "model_name": fields.get("model_name"), "version": fields.get("version"),
               "version_label": fields.get("version_label")}
    if protocol is Protocol.VERTEX:  # its URLs say neither TLS nor the recorded name
        changes["tls"] = spec.tls if spec.protocol is Protocol.VERTEX else None
        if same_server:
            changes["model_name"] = spec.model_name
    if protocol is not spec.protocol:
        if protocol is not Protocol.TF_SERVING_REST:
            changes["columnar"] = False
        if protocol not in (Protocol.TF_SERVING_GRPC, Protocol.TF_SERVING_REST):
            changes["example_api"] = False
        if protocol is not Protocol.VERTEX:
            changes["api_endpoint"] = None
    return spec.replace(**changes)


def describe_endpoint(endpoint: EndpointSpec | str) -> str:
    """What ``beam-infer inspect`` shows of an endpoint: reads its metadata now.

    Example:
        >>> print(describe_endpoint("grpc://localhost:8500/models/five"))
    """
    spec = endpoint if isinstance(endpoint, EndpointSpec) else EndpointSpec.from_url(endpoint)
    return RemoteBackend(spec).describe()


# --- throttling -------------------------------------------------------------------------

class Limiter:
    """Requests in flight per worker process, lowered while the server throttles.

    The decisions are pure functions of the clock (``wait_secs``, ``throttle``,
    ``release``), so they are tested without sleeping.
    """

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.monotonic,
                 recover_secs: float = RECOVER_SECS, max_wait_secs: float = MAX_THROTTLE_SECS):
        self.max_limit = limit
        self.limit = limit
        self.in_flight = 0
        self.not_before = 0.0
        self.throttles = 0  # in a row, for the backoff without Retry-After
        self.last_throttle = float("-inf")
        self._clock = clock
        self._recover = recover_secs
        self._max_wait = max_wait_secs
        self._cond = threading.Condition()

    @property
    def throttled(self) -> bool:
        return self.limit < self.max_limit or self.not_before > self._clock()

    def wait_secs(self, now: float) -> float | None:
        """How long a request must wait now (0: go); None: wait for a slot."""
        if now < self.not_before:
            return self.not_before - now
        return 0.0 if self.in_flight < self.limit else None

    def acquire(self) -> float:
        """Waits for a slot; returns the seconds waited while throttled."""
        start = self._clock()
        throttled = False
        with self._cond:
            while True:
                throttled = throttled or self.throttled
                wait = self.wait_secs(self._clock())
                if wait == 0.0:
                    break
                self._cond.wait(wait if wait is not None else 1.0)
            self.in_flight += 1
        return self._clock() - start if throttled else 0.0

    def release(self, ok: bool) -> None:
        with self._cond:
            self.in_flight -= 1
            now = self._clock()
            if ok:
                self.throttles = 0
                if self.limit < self.max_limit and now - self.last_throttle >= self._recover:
                    self.limit += 1
                    self.last_throttle = now  # one more per recovery period
            self._cond.notify_all()

    def throttle(self, retry_after_secs: float | None) -> float:
        """The server said slow down: wait before the next request, halve the limit.

        Returns the wait imposed (``Retry-After`` if given, else 0.5 s doubling per
        throttle in a row; at most ``max_wait_secs``).
        """
        with self._cond:
            now = self._clock()
            self.throttles += 1
            wait = retry_after_secs if retry_after_secs is not None \
                else 0.5 * 2 ** (self.throttles - 1)
            wait = max(0.0, min(wait, self._max_wait))
            self.not_before = max(self.not_before, now + wait)
            self.limit = max(1, self.limit // 2)
            self.last_throttle = now
            self._cond.notify_all()
            return wait


# --- splitting --------------------------------------------------------------------------

def rows_of(feeds: Mapping[str, Any]) -> int:
    for value in feeds.values():
        shape = getattr(value, "shape", None)
        return int(shape[0]) if shape else len(value)
    return 0


def take(feeds: Mapping[str, Any], rows: np.ndarray | slice) -> dict[str, Any]:
    """The feeds of some rows (a slice, or row indices)."""
    return {alias: np.asarray(value)[rows] for alias, value in feeds.items()}


def split_rows(indices: np.ndarray, max_rows: int) -> list[np.ndarray]:
    """``indices`` in runs of at most ``max_rows``, in order."""
    return [indices[i:i + max_rows] for i in range(0, len(indices), max_rows)] or []


@dataclasses.dataclass
class _Part:
    """One request: some rows of one group of calls (one signature, or one MultiInference)."""

    group: int
    indices: np.ndarray
    calls: list[tuple[str, dict[str, Any]]]
    prepared: Any
    size: int


# --- the row cache ------------------------------------------------------------------------

class RowCache:
    """Outputs of rows a failed call got answers for, until a retry asks for them again.

    Keyed by the group's signature names and the row's feeds (a digest of their bytes);
    an entry is taken when used, so a row is served from here at most as often as it
    was answered. Bounded by ``max_rows`` (oldest first out) and ``ttl_secs``.
    """

    def __init__(self, max_rows: int = CACHE_ROWS, ttl_secs: float = CACHE_TTL_SECS,
                 clock: Callable[[], float] = time.monotonic):
        self._entries: collections.OrderedDict[bytes, list] = collections.OrderedDict()
        self._max = max_rows
        self._ttl = ttl_secs
        self._clock = clock
        self._lock = threading.Lock()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def put(self, key: bytes, outputs: list[dict[str, np.ndarray]]) -> None:
        with self._lock:
            self._entries.setdefault(key, []).append((self._clock(), outputs))
            self._entries.move_to_end(key)
            self._size += 1
            while self._size > self._max:
                _, stored = self._entries.popitem(last=False)
                self._size -= len(stored)

    def take(self, key: bytes) -> list[dict[str, np.ndarray]] | None:
        with self._lock:
            stored = self._entries.get(key)
            now = self._clock()
            while stored:
                at, outputs = stored.pop(0)
                self._size -= 1
                if now - at <= self._ttl:
                    if not stored:
                        del self._entries[key]
                    return outputs
            if stored is not None:
                del self._entries[key]
            return None


def row_keys(names: Sequence[str], calls: Sequence[tuple[str, Mapping[str, Any]]],
             n: int) -> list[bytes]:
    """One digest per row of a group's calls (signature names and every feed's row)."""
    digests = [hashlib.blake2b(("\0".join(names)).encode(), digest_size=16) for _ in range(n)]
    for _, feeds in calls:
        for alias in sorted(feeds):
            array = np.asarray(feeds[alias])
            tag = f"{alias}:{array.dtype.str}:{array.shape[1:]}".encode()
            for i in range(n):
                digest = digests[i]
                digest.update(tag)
                row = array[i]
                if array.dtype.kind == "O":
                    for item in np.asarray(row, dtype=object).ravel().tolist():
                        data = item if isinstance(item, bytes) else str(item).encode()
                        digest.update(len(data).to_bytes(8, "little"))
                        digest.update(data)
                else:
                    digest.update(np.ascontiguousarray(row).tobytes())
    return [d.digest() for d in digests]


# --- the servable -------------------------------------------------------------------------

class RemoteServable:
    """An endpoint on one worker process (see the module docstring)."""

    def __init__(self, spec: EndpointSpec, client: Any):
        self._spec = spec
        self._client = client
        self._limiter = Limiter(spec.max_in_flight)
        self._cache = RowCache()
        self._cap = spec.request_bytes
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._grouped = spec.example_api and spec.protocol is Protocol.TF_SERVING_GRPC
        self._local = threading.local()  # the flight this thread's next call may take

    @property
    def limiter(self) -> Limiter:
        return self._limiter

    def __repr__(self) -> str:
        return f"RemoteServable({self._spec.url})"

    def take_load_events(self) -> list[Event]:
        with self._lock:
            events, self._events = self._events, []
        return events

    def send_ahead(self, calls: Calls) -> _Flight:
        """Starts ``calls``' requests now and returns at once: the flight is answered by
        the ``call`` with the same calls made under ``expecting(flight)`` (see
        ``_send_ahead``), so a worker's requests are in flight while it does other work."""
        return self._start(calls, wait=False)

    @contextlib.contextmanager
    def expecting(self, flight: _Flight | None) -> Iterator[None]:
        """Within it, this thread's ``call`` with ``flight``'s calls takes its answers.

        A flight no call took (the batch was scored in other calls: elements refused
        before the model, isolation) keeps what it was answered in the ``RowCache``, so
        those rows are not sent again.
        """
        self._local.flight = flight if flight is not None and flight.owner is self else None
        try:
            yield
        finally:
            left, self._local.flight = getattr(self._local, "flight", None), None
            if left is not None:
                self._settle(left)

    def call(self, calls: Calls) -> tuple[list[dict[str, np.ndarray]], ModelVersion, list[Event]]:
        flight = getattr(self._local, "flight", None)
        if flight is not None:
            self._local.flight = None
            if not _same_calls(flight.calls, calls):
                self._settle(flight)
                flight = None
        if flight is None:
            flight = self._start(calls, wait=True)
        answers = flight.answers()
        parts, groups, keys, cached, n = (flight.parts, flight.groups, flight.keys,
                                          flight.cached, flight.n)
        failure = next((a for a in answers if isinstance(a, BaseException)), None)
        if failure is not None:
            self._keep(parts, answers, groups, calls, keys, n)
            self._put_back(cached, keys)  # not used this time: kept for the retry
            raise failure
        version = next((a.version for a in answers if a.version is not None), None)
        outputs: list[dict[str, np.ndarray] | None] = [None] * len(calls)
        for g, members in enumerate(groups):
            mine = [(p, a) for p, a in zip(parts, answers, strict=True) if p.group == g]
            for slot, call_index in enumerate(members):
                outputs[call_index] = _join(
                    n, [(p.indices, a.outputs[slot]) for p, a in mine],
                    {row: found[slot] for row, found in cached.get(g, {}).items()})
        answered = ModelVersion(path=self._spec.url, name=self._spec.recorded_name,
                                version=version if version is not None else self._spec.version)
        return outputs, answered, self.take_load_events()

    def _start(self, calls: Calls, *, wait: bool) -> _Flight:
        """Splits ``calls`` into requests (rows a failed call was answered for come from
        the cache) and sends them; with ``wait`` a one-request call runs in this thread."""
        n = rows_of(calls[0][1]) if calls else 0
        groups = [list(range(len(calls)))] if self._grouped and len(calls) > 1 \
            else [[i] for i in range(len(calls))]
        cached: dict[int, dict[int, list]] = {}  # group -> row -> outputs per call
        keys: dict[int, list[bytes]] = {}
        parts: list[_Part] = []
        for g, members in enumerate(groups):
            group_calls = [(calls[i][0], calls[i][1]) for i in members]
            rest = np.arange(n)
            if len(self._cache):
                keys[g] = row_keys([c[0] for c in group_calls], group_calls, n)
                hits = {}
                for i, key in enumerate(keys[g]):
                    found = self._cache.take(key)
                    if found is not None:
                        hits[i] = found
                if hits:
                    cached[g] = hits
                    rest = np.array([i for i in range(n) if i not in hits], dtype=np.int64)
            parts.extend(self._split(g, group_calls, rest))
        return _Flight(self, calls, n, groups, keys, cached, parts, self._send(parts, wait))

    def _settle(self, flight: _Flight) -> None:
        """A flight no call took: its answered rows (and those it took from the cache)
        go to the cache for the calls that score those rows."""
        answers = flight.answers()
        self._keep(flight.parts, answers, flight.groups, flight.calls, flight.keys, flight.n)
        self._put_back(flight.cached, flight.keys)

    # --- splitting ---

    def _split(self, group: int, calls: list[tuple[str, Mapping]], rows: np.ndarray
               ) -> list[_Part]:
        """``rows`` in parts of at most ``request_rows``; each is built (and fitted under
        the byte cap) where it is sent, so building overlaps other parts' requests."""
        if len(rows) == 0:
            return []
        whole = len(rows) == rows_of(calls[0][1])
        parts = []
        for chunk in split_rows(rows, self._spec.request_rows):
            sub = [(name, dict(feeds) if whole and len(chunk) == len(rows)
                    else take(feeds, _index(chunk))) for name, feeds in calls]
            parts.append(_Part(group, chunk, sub, None, 0))
        return parts

    def _fit(self, group: int, calls: list[tuple[str, Mapping]], chunk: np.ndarray,
             whole: bool) -> list[_Part]:
        """``chunk`` as requests under the byte cap (halved until each fits)."""
        sub = [(name, dict(feeds) if whole else take(feeds, _index(chunk)))
               for name, feeds in calls]
        prepared = self._client.requests(sub)
        size = self._client.prepared_bytes(prepared)
        if size <= self._cap:
            return [_Part(group, chunk, sub, prepared, size)]
        if len(chunk) == 1:
            raise ElementTooLargeError(
                f"this element's request to {self._spec.url} is {size:,} bytes, over "
                f"EndpointSpec.max_request_bytes ({self._cap:,}); it was not sent. Send "
                "smaller elements, or raise max_request_bytes if the server takes more "
                f"(at most the protocol's limit).")
        half = len(chunk) // 2
        return self._fit(group, calls, chunk[:half], False) + \
            self._fit(group, calls, chunk[half:], False)

    # --- sending ---

    def _send(self, parts: list[_Part], wait: bool) -> list[Any]:
        """Each part's answer, or (through the pool) a future of it."""
        if wait and len(parts) <= 1:
            return [self._attempt(p, None) for p in parts]
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        max_workers=self._spec.max_in_flight,
                        thread_name_prefix="beam-infer-remote")
        stop = threading.Event()
        return [self._pool.submit(self._attempt, p, stop) for p in parts]

    def _attempt(self, part: _Part, stop: threading.Event | None) -> Any:
        """One part's answer (a ``RemoteResult``) or the exception it failed with."""
        if stop is not None and stop.is_set():
            return _NotSent()
        try:
            return self._fitted(part)
        except RemoteError as e:
            if stop is not None:
                stop.set()  # parts not yet sent wait for the retry
            return e

    def _fitted(self, part: _Part):
        """Builds ``part``'s request (halved while over the byte cap) and sends it."""
        if part.prepared is not None:
            return self._request(part)
        pieces = self._fit(part.group, part.calls, np.arange(len(part.indices)), True)
        if len(pieces) == 1:
            return self._request(dataclasses.replace(part, prepared=pieces[0].prepared,
                                                     size=pieces[0].size))
        return _Joined(len(part.indices), [(p.indices, self._request(p)) for p in pieces])

    def _request(self, part: _Part):
        waited = self._limiter.acquire()
        ok = False
        try:
            try:
                result = self._client.call(part.calls, part.prepared)
            except RemoteError as e:
                self._record(e.record, waited)
                if isinstance(e, RetryableRemoteError) and e.throttled:
                    self._limiter.throttle(e.retry_after_secs)
                if not isinstance(e, RequestTooLargeError) or len(part.indices) == 1:
                    raise
                # The server refused the size: lower the cap, send smaller requests.
                self._cap = min(self._cap, max(1, int(part.size * 0.7)))
                result = None
            except (ValueError, KeyError, TypeError) as e:  # an answer that cannot be read
                raise RemoteServerError(
                    f"{self._spec.url} answered in a form that cannot be read: "
                    f"{type(e).__name__}: {str(e)[:300]}") from None
            else:
                ok = True
                for i, record in enumerate(result.records):
                    self._record(record, waited if i == 0 else 0.0)
        finally:
            self._limiter.release(ok)
        if result is not None:
            return result
        local = np.arange(len(part.indices))
        subs = self._fit(part.group, part.calls, local, True)
        return _Joined(len(part.indices), [(sub.indices, self._request(sub)) for sub in subs])

    def _record(self, record: CallRecord | None, waited: float) -> None:
        if record is None:
            return
        if waited:
            record = dataclasses.replace(record, throttled_secs=waited)
        with self._lock:
            self._events.append(record)

    def _keep(self, parts, answers, groups, calls, keys, n) -> None:
        """Rows answered by a call that failed, kept for its retry (see ``RowCache``)."""
        for part, answer in zip(parts, answers, strict=True):
            if isinstance(answer, BaseException | _NotSent):
                continue
            g = part.group
            if g not in keys:
                members = groups[g]
                group_calls = [(calls[i][0], calls[i][1]) for i in members]
                keys[g] = row_keys([c[0] for c in group_calls], group_calls, n)
            rows = len(part.indices)
            if not all(getattr(v, "shape", ())[:1] == (rows,)
                       for out in answer.outputs for v in out.values()):
                continue  # outputs without the batch first cannot be split into rows
            for position, row in enumerate(part.indices.tolist()):
                self._cache.put(keys[g][row], [{a: v[position] for a, v in out.items()}
                                               for out in answer.outputs])

    def _put_back(self, cached: dict[int, dict[int, list]], keys: dict[int, list[bytes]]
                  ) -> None:
        for g, hits in cached.items():
            for row, found in hits.items():
                self._cache.put(keys[g][row], found)


class _NotSent:
    """A part not sent because another part of its call had failed."""


@dataclasses.dataclass
class _Flight:
    """One call's requests, sent; ``answers()`` waits for them."""

    owner: RemoteServable
    calls: Calls
    n: int
    groups: list[list[int]]
    keys: dict[int, list[bytes]]
    cached: dict[int, dict[int, list]]
    parts: list[_Part]
    sent: list[Any]  # answers, or futures of them

    def answers(self) -> list[Any]:
        return [a.result() if isinstance(a, concurrent.futures.Future) else a
                for a in self.sent]


def _same_calls(a: Calls, b: Calls) -> bool:
    """Whether two calls feed the same signatures the same values."""
    if len(a) != len(b):
        return False
    for (name_a, feeds_a), (name_b, feeds_b) in zip(a, b, strict=True):
        if name_a != name_b or feeds_a.keys() != feeds_b.keys():
            return False
        for alias, value in feeds_a.items():
            other = feeds_b[alias]
            if value is other:
                continue
            try:
                value, other = np.asarray(value), np.asarray(other)
                if value.dtype == object:  # bytes compared in C, the same objects at once
                    same = value.shape == other.shape and \
                        value.ravel().tolist() == other.ravel().tolist()
                else:
                    same = np.array_equal(value, other)
            except Exception:  # noqa: BLE001 - values that cannot be compared differ
                return False
            if not same:
                return False
    return True


class _Joined:
    """A part the server made us split: its pieces' answers, as one ``RemoteResult``."""

    def __init__(self, n: int, pieces: list[tuple[np.ndarray, Any]]):
        self.version = next((a.version for _, a in pieces if a.version is not None), None)
        self.outputs = [_join(n, [(rows, a.outputs[s]) for rows, a in pieces], {})
                        for s in range(len(pieces[0][1].outputs))]
        self.records: list[CallRecord] = []


def _index(chunk: np.ndarray) -> slice | np.ndarray:
    """A run of consecutive rows as a slice (a view, not a copy)."""
    first, last = int(chunk[0]), int(chunk[-1])
    return slice(first, last + 1) if last - first + 1 == len(chunk) else chunk


def _join(n: int, pieces: list[tuple[np.ndarray, dict[str, np.ndarray]]],
          cached: dict[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One call's outputs for rows 0..n-1 from the parts that answered them."""
    if len(pieces) == 1 and not cached and len(pieces[0][0]) == n:
        return pieces[0][1]
    aliases = list(pieces[0][1]) if pieces else list(next(iter(cached.values())))
    joined = {}
    for alias in aliases:
        first = pieces[0][1][alias] if pieces else np.asarray(
            next(iter(cached.values()))[alias])[None]
        out = np.empty((n, *first.shape[1:]), dtype=first.dtype)
        for indices, outputs in pieces:
            value = outputs[alias]
            if value.shape[1:] != first.shape[1:]:
                raise RemoteServerError(
                    f"output {alias!r} came back with shape {value.shape[1:]} for some "
                    f"requests and {first.shape[1:]} for others; set "
                    "EndpointSpec(max_request_rows=...) to the batch size so one call is "
                    "one request.")
            out[indices] = value
        for row, outputs in cached.items():
            out[row] = outputs[alias]
        joined[alias] = out
    return joined
