"""``RemoteServable``: a model behind an endpoint on one worker (``_backend.Servable``).

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
  those rows' outputs are kept (``_row_cache.RowCache``, bounded) and a retry of the
  call, or an isolation call holding the same rows, takes them from there instead of
  sending them again;
* **sent ahead** (``send_ahead``, ``expecting``; see ``_send_ahead``): a batch's requests
  start before the batch is scored, and the call that feeds the same rows takes their
  answers; a flight no call takes leaves its rows in the cache.

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

import concurrent.futures
import contextlib
import dataclasses
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from beam_infer._backend import CallRecord, Event, ModelVersion
from beam_infer.remote._common import (
    RemoteError,
    RemoteServerError,
    RequestTooLargeError,
    RetryableRemoteError,
)
from beam_infer.remote._row_cache import RowCache, row_keys
from beam_infer.remote._spec import EndpointSpec, Protocol
from beam_infer.remote._throttling import Limiter

Calls = Sequence[tuple[str, Mapping[str, Any]]]


class ElementTooLargeError(RequestTooLargeError):
    """One element's own request is over ``EndpointSpec.max_request_bytes``: it is not sent."""


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
