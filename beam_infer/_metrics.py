"""Every metric beam_infer reports: its name, kind and meaning, defined once.

Beam's ``RunInference`` reports its own metrics (``num_inferences``, batch sizes and
latencies, model load latency) under the namespace a handler names; beam_infer's handlers
name ``NAMESPACE``, so Beam's and beam_infer's metrics sit together. ``BEAM_METRICS`` and
``METRICS`` are the table ``docs/metrics.md`` shows (a unit test checks the two agree).

Metrics are updated only from the thread that runs the bundle: Beam drops updates made
from other threads, so worker-side events (model loads and swaps, ``LoadEvent``;
requests to a remote endpoint, ``CallRecord``) are collected by the servable and
reported here by the next batch (``report_event``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from apache_beam.metrics import Metrics

from beam_infer._backend import CallRecord, LoadEvent

if TYPE_CHECKING:
    from beam_infer._backend import Event

NAMESPACE = "beam_infer"

FAILED_ELEMENTS_PREFIX = "failed_elements_"

# name -> (kind, meaning); reported by Beam's RunInference under NAMESPACE.
BEAM_METRICS: dict[str, tuple[str, str]] = {
    "num_inferences": ("counter", "elements scored"),
    "inference_request_batch_size": ("distribution", "elements per model call"),
    "inference_request_batch_byte_size": (
        "distribution", "bytes per batch (for keyed input the values only, as tfx-bsl counts)"),
    "inference_batch_latency_micro_secs": ("distribution", "time per batch"),
    "load_model_latency_milli_secs": ("distribution", "time per model load"),
    "model_byte_size": (
        "distribution", "Beam's memory delta of a load; reads 0 unless torch is installed"),
}

MODEL_LOAD_FAILURES = "model_load_failures"
INCOMPATIBLE_MODEL_VERSIONS = "incompatible_model_versions"
SAVED_MODEL_BYTE_SIZE = "saved_model_byte_size"
WARMUP_RECORDS_REPLAYED = "warmup_records_replayed"
MODEL_VERSION_SWAPS = "model_version_swaps"
MODEL_SWAP_LOAD_LATENCY = "model_swap_load_latency_milli_secs"
INFERENCE_RETRIES = "inference_retries"
ISOLATION_MODEL_CALLS = "isolation_model_calls"
REMOTE_REQUESTS = "remote_requests"
REMOTE_REQUEST_LATENCY = "remote_request_latency_milli_secs"
REMOTE_REQUEST_BYTES = "remote_request_bytes"
REMOTE_THROTTLED = "remote_throttled_milli_secs"
REMOTE_FAILURES_PREFIX = "remote_request_failures_"

# name -> (kind, meaning); reported by beam_infer.
METRICS: dict[str, tuple[str, str]] = {
    SAVED_MODEL_BYTE_SIZE: ("distribution", "the SavedModel's size on disk, per load"),
    WARMUP_RECORDS_REPLAYED: ("counter", "warm-up requests replayed before serving"),
    MODEL_VERSION_SWAPS: ("counter", "hot swaps to a newer version"),
    MODEL_SWAP_LOAD_LATENCY: ("distribution", "time to load and warm a swapped-in version"),
    MODEL_LOAD_FAILURES: ("counter", "versions that failed to load or were refused"),
    INCOMPATIBLE_MODEL_VERSIONS: (
        "counter", "versions refused because their signatures do not fit the pipeline"),
    INFERENCE_RETRIES: ("counter", "model calls retried after a transient failure"),
    ISOLATION_MODEL_CALLS: ("counter", "extra model calls made to isolate failing elements"),
    FAILED_ELEMENTS_PREFIX + "<stage>": (
        "counter", "dead-lettered elements per stage: decode, validate, inference, postprocess"),
    REMOTE_REQUESTS: ("counter", "requests sent to a remote endpoint, answered or not"),
    REMOTE_REQUEST_LATENCY: ("distribution", "time per remote request, failed ones included"),
    REMOTE_REQUEST_BYTES: ("distribution", "bytes per remote request body"),
    REMOTE_THROTTLED: (
        "counter", "time requests waited because the endpoint asked to slow down (429)"),
    REMOTE_FAILURES_PREFIX + "<status>": (
        "counter",
        "failed remote requests per HTTP status or gRPC code, timeout, connection, tls"),
}


def count_failure(stage_name: str) -> None:
    """One element failed at ``stage_name`` (a ``Stage`` value)."""
    Metrics.counter(NAMESPACE, FAILED_ELEMENTS_PREFIX + stage_name).inc()


def count_retry() -> None:
    Metrics.counter(NAMESPACE, INFERENCE_RETRIES).inc()


def isolation_calls():
    """The counter of model calls made while isolating failing elements."""
    return Metrics.counter(NAMESPACE, ISOLATION_MODEL_CALLS)


def report_event(event: Event) -> None:
    """Metrics for one worker-side event (a load or a remote request) since the last batch."""
    if isinstance(event, CallRecord):
        report_request(event)
    elif isinstance(event, LoadEvent):
        report_load(event)


# Made once: a request is reported per call, and making a metric costs more than
# updating it (each update finds the current bundle's container itself).
_requests = Metrics.counter(NAMESPACE, REMOTE_REQUESTS)
_request_latency = Metrics.distribution(NAMESPACE, REMOTE_REQUEST_LATENCY)
_request_bytes = Metrics.distribution(NAMESPACE, REMOTE_REQUEST_BYTES)


def report_request(record: CallRecord) -> None:
    """Metrics for one request to a remote endpoint."""
    _requests.inc()
    _request_latency.update(int(record.latency_secs * 1000))
    _request_bytes.update(record.request_bytes)
    if record.throttled_secs:
        Metrics.counter(NAMESPACE, REMOTE_THROTTLED).inc(int(record.throttled_secs * 1000))
    if not record.ok:
        Metrics.counter(NAMESPACE, REMOTE_FAILURES_PREFIX + record.status).inc()


def report_load(event: LoadEvent) -> None:
    """Metrics for a model load that happened on this worker since the previous batch."""
    if not event.ok:
        Metrics.counter(NAMESPACE, MODEL_LOAD_FAILURES).inc()
        if event.incompatible:
            Metrics.counter(NAMESPACE, INCOMPATIBLE_MODEL_VERSIONS).inc()
        return
    if event.size_bytes:
        Metrics.distribution(NAMESPACE, SAVED_MODEL_BYTE_SIZE).update(event.size_bytes)
    if event.warmup_records:
        Metrics.counter(NAMESPACE, WARMUP_RECORDS_REPLAYED).inc(event.warmup_records)
    if event.swap:
        Metrics.counter(NAMESPACE, MODEL_VERSION_SWAPS).inc()
        Metrics.distribution(NAMESPACE, MODEL_SWAP_LOAD_LATENCY).update(event.latency_ms)
