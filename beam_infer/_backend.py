"""The backend seam: what answers a model call, as the scoring code sees it.

Scoring (``_handler``'s three stages, ``_isolation``, ``_retries``, dead letters,
PredictionLogs, metrics) is the same whatever answers the calls. What differs is behind
two small interfaces:

* a ``Backend`` is built with the pipeline, on the launcher: it has read the model's
  signatures and planned them (``_signatures.plan``), knows how elements are checked
  before batching (``validator``), and is pickled to the workers;
* on each worker ``Backend.load()`` returns a ``Servable``, which Beam keeps in its shared
  handle: ``call`` runs ``(signature name, feeds)`` calls on one batch and says which
  model version answered and what happened on the worker since the previous call
  (``Event``s: model loads, ``LoadEvent``; requests to a remote endpoint,
  ``CallRecord``), which the caller reports as metrics from the bundle's thread.

``beam_infer.saved_model`` is the SavedModel backend (loaded in the worker process,
versions followed and hot-swapped); ``beam_infer.remote`` is the backend of a model
behind a serving endpoint (TF Serving, KServe v2, Vertex AI). A new backend is a new
subpackage implementing these two interfaces; it needs no change to isolation, dead
letters, retries, metrics or PredictionLog code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from beam_infer._config import BatchConfig
    from beam_infer._signatures import SignaturePlan
    from beam_infer._validation import Validator

# One model call: the signature's name and its feeds by input alias (the batch first).
Call = tuple[str, Mapping[str, Any]]
# One call's answer: the signature's outputs by alias, numpy, the batch first.
Outputs = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """What answered: the path (or endpoint) and what PredictionLogs record in ``model_spec``.

    ``version`` is None for a plain SavedModel directory (tfx-bsl leaves it unset).
    """

    path: str
    name: str | None = None
    version: int | None = None


@dataclasses.dataclass(frozen=True)
class LoadEvent:
    """A load that happened on the worker, reported as metrics by the next batch."""

    version: int | None
    ok: bool
    latency_ms: int = 0
    warmup_records: int = 0
    size_bytes: int = 0
    swap: bool = False
    incompatible: bool = False  # refused: its signatures do not fit the pipeline's plan


@dataclasses.dataclass(frozen=True)
class CallRecord:
    """One request to a remote endpoint, reported as metrics by the next batch.

    ``status`` is the HTTP status (``"200"``, ``"503"``) or gRPC code name (``"OK"``,
    ``"UNAVAILABLE"``), or ``"timeout"`` / ``"connection"`` when no answer came.
    ``throttled_secs`` is how long the request waited before it was sent because the
    endpoint had asked the client to slow down (429 / RESOURCE_EXHAUSTED). A record holds
    the endpoint's address but never a credential.
    """

    protocol: str  # "tf_serving_grpc", "tf_serving_rest", "kserve_v2", "vertex"
    method: str  # "predict", "classify", "regress", "multi_inference", "metadata"
    target: str  # URL or host:port, no credentials
    status: str
    ok: bool
    latency_secs: float
    request_bytes: int
    response_bytes: int
    rows: int = 0
    throttled_secs: float = 0.0


# What happened on a worker since the previous call, reported as metrics by the caller
# in the bundle's thread (``_metrics.report_event``): a model load, or one request.
Event = LoadEvent | CallRecord


class Servable(Protocol):
    """A model on one worker, as Beam's shared handle holds it.

    Its methods take and return plain values, so it also works behind Beam's
    cross-process proxy (``ModelSpec(share_across_processes=True)``).
    """

    def call(self, calls: Sequence[Call]) -> tuple[list[Outputs], ModelVersion, list[Event]]:
        """Runs the calls on one batch with one model version.

        Returns:
            Each call's outputs, the version that answered and the events (loads,
            requests) since the previous call (reported as metrics by the caller, in the
            bundle's thread).
        """
        ...

    def take_load_events(self) -> list[Event]:
        """The events not yet reported (a failed call leaves them), now taken."""
        ...


class SpecOptions:
    """The options every backend reads the same way from its spec (``self.spec``, a
    ``ModelSpec`` or ``EndpointSpec``): batching and how tensor elements are stacked."""

    spec: Any

    @property
    def batching(self) -> BatchConfig:
        return self.spec.batching

    @property
    def pad_variable_length_inputs(self) -> bool:
        return self.spec.pad_variable_length_inputs

    @property
    def strict_input_casts(self) -> bool:
        return self.spec.strict_input_casts


class Backend(Protocol):
    """A model as the pipeline is built with it; pickled to every worker.

    Attributes:
        plan: The signatures called and how (read when the pipeline was built).
        version: The version chosen when the pipeline was built.
        location: The model as messages name it (a path, an endpoint); never secret.
        batching: How Beam batches elements for it.
        pad_variable_length_inputs, strict_input_casts: How tensor elements are
            stacked (see ``ModelSpec``).
        share_across_processes: One servable per machine instead of per process.
        sends_ahead: Whether the servable offers ``send_ahead`` and ``expecting``: its
            calls are answered elsewhere, and a worker overlaps a batch's requests with
            its work on the batch before (see ``_send_ahead``).
    """

    plan: SignaturePlan
    version: ModelVersion
    location: str
    batching: BatchConfig
    pad_variable_length_inputs: bool
    strict_input_casts: bool
    share_across_processes: bool
    sends_ahead: bool

    def load(self) -> Servable:
        """On the worker: the servable (loads the model, or connects)."""
        ...

    def validator(self) -> Validator:
        """The per-element checks run before batching (built while the model is reachable)."""
        ...

    def model_copies(self) -> int:
        """Servables per machine when shared across processes (asked on the worker)."""
        ...

    def update_model_path(self, model_path: str) -> Backend:
        """The same backend pointed at another model (Beam's model-refresh side input)."""
        ...
