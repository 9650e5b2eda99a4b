"""The served model of one worker: one SavedModel version, hot-swapped when a new one lands.

``ServingModel`` is the SavedModel backend's ``Servable`` (see ``beam_infer._backend``):
what ``SavedModelBackend.load`` returns and Beam keeps in its shared handle. For a plain
SavedModel directory it wraps one ``LoadedModel``. For a versioned base path with
``ModelSpec.poll_interval_secs`` it also does, per worker, what TF Serving's server core
does per server: at most once per interval a batch starts a background look at the base
path; when the version policy prefers another complete version, that thread loads it and
replays its warm-up requests *while the current version keeps scoring every batch*, then
swaps (availability-preserving: load before unload). A batch is scored wholly by one
version, so no element is lost or scored twice across a swap. A version that fails to
load is logged, counted (``model_load_failures``) and not retried until its files
change; the current version keeps serving. So is a version whose signatures do not fit
the plan the pipeline was built with (see ``_compatibility``; counted also as
``incompatible_model_versions``): it is refused before it is loaded.

Why here and not Beam's model-update side input: on the local runners a side input in the
global window is read once (the BundleBasedDirectRunner blocks the main input until the
side input's watermark passes the window end; the FnApiRunner runs the side-input stage
to completion first), so a live swap could not be run or tested anywhere but Dataflow;
and Beam's ``_RunInferenceDoFn`` re-raises a failed side-input load (failing the bundle)
after already pointing the handler at the new path. Polling in the served object works on
every runner, batch and streaming, and keeps the old version on failure.

Every method returns plain values, so the object also works behind Beam's cross-process
proxy (``ModelSpec(share_across_processes=True)``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tensorflow_serving.apis import prediction_log_pb2

from beam_infer._backend import LoadEvent, ModelVersion
from beam_infer._config import ModelSpec
from beam_infer._errors import (
    BeamInferError,
    ConfigurationError,
    IncompatibleVersionError,
    ModelLoadError,
    ModelPathError,
)
from beam_infer._messages import bounded, path_gone
from beam_infer._signatures import SignaturePlan
from beam_infer.saved_model import _compatibility, _versions
from beam_infer.saved_model._files import plan_signatures
from beam_infer.saved_model._loading import LoadedModel

_LOG = logging.getLogger(__name__)

PredictionLog = prediction_log_pb2.PredictionLog


@dataclasses.dataclass(frozen=True)
class _ServedVersion:
    model: LoadedModel
    plan: SignaturePlan
    version: ModelVersion
    loaded: LoadEvent  # reported once the servable is in service


class ServingModel:
    """The model a worker serves; see the module docstring.

    Args:
        spec: The job's ModelSpec (its ``model_path`` may be a versioned base path).
        initial: The version chosen when the pipeline was built.
        live: Look for new versions every ``spec.poll_interval_secs``.
        device: The ``tf.device`` every version is loaded and run on (a GPU claimed by
            this shared copy), or None.
        plan: The plan the pipeline was built with; a version that does not fit it is
            not served. None: the plan of ``initial`` (read now).

    Raises:
        ModelLoadError: no allowed version could be loaded.
    """

    def __init__(self, spec: ModelSpec, initial: ModelVersion, *, live: bool,
                 device: str | None = None, plan: SignaturePlan | None = None):
        self._device = device
        self._planned = plan or plan_signatures(spec.replace(model_path=initial.path))
        self._built_with = initial
        self._spec = spec
        self._base = spec.model_path
        self._policy = spec.version_policy or _versions.VersionPolicy.latest()
        self._live = live and initial.version is not None
        self._events: list[LoadEvent] = []
        self._events_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._failed: dict[int, dict[str, tuple[int, float]]] = {}  # version -> listing that failed
        self._next_poll = 0.0
        if self._live:
            listing = _versions.complete_versions(self._base)
            allowed = self._policy.allowed(listing)
            # A worker that starts after a broken version landed must still serve: after
            # the allowed versions, older complete ones are last resorts (logged).
            rest = [v for v in sorted(listing, reverse=True) if v not in allowed]
            candidates = [self._version(v) for v in allowed + rest]
            current = self._load_first(candidates or [initial], listing)
            if current.version.version not in allowed:
                _LOG.warning("beam_infer: no version of %s allowed by %s loads; serving "
                             "version %s until one does", self._base,
                             self._policy.describe(), current.version.version)
        else:
            current = self._load(initial)
        self._current = current
        self._report(current.loaded)
        self._next_poll = time.monotonic() + (spec.poll_interval_secs or 0)

    def _version(self, number: int) -> ModelVersion:
        return ModelVersion(
            path=_versions.version_path(self._base, number),
            name=self._spec.model_name or _versions.default_model_name(self._base),
            version=number)

    def _load_first(self, candidates: Sequence[ModelVersion],
                    listing: dict[int, dict[str, tuple[int, float]]]) -> _ServedVersion:
        errors = []
        for candidate in candidates:
            try:
                return self._load(candidate)
            except BeamInferError as e:
                self._record_failure(candidate, listing, e)
                errors.append(str(e))
        raise ModelLoadError(bounded(
            f"no complete version of {self._base!r} could be loaded (version policy "
            f"{self._policy.describe()}); tried {', '.join(str(c.version) for c in candidates)}: "
            + " | ".join(errors)
        ))

    def _load(self, version: ModelVersion, *, swap: bool = False) -> _ServedVersion:
        start = time.monotonic()
        spec = self._spec.replace(model_path=version.path)
        try:
            plan = plan_signatures(spec)
        except ModelPathError as e:
            raise ModelLoadError(path_gone(version.path)) from e
        except ConfigurationError as e:  # its tags or signatures changed
            raise self._incompatible(version, [str(e)]) from e
        problems = _compatibility.differences(self._planned, plan)
        if problems:
            raise self._incompatible(version, problems)
        model = LoadedModel(version.path, spec.effective_tags, [s.name for s in plan.signatures],
                            device=self._device, cache=spec.model_cache)
        event = LoadEvent(
            version=version.version, ok=True,
            latency_ms=int((time.monotonic() - start) * 1000),
            warmup_records=model.warmup_records,
            size_bytes=model.take_size_report() or 0, swap=swap)
        return _ServedVersion(model=model, plan=plan, version=version, loaded=event)

    def _incompatible(self, version: ModelVersion, problems: list[str]
                      ) -> IncompatibleVersionError:
        built = self._built_with
        was = f"version {built.version}" if built.version is not None else repr(built.path)
        what = f"version {version.version}" if version.version is not None \
            else f"the model now at {version.path!r}"
        return IncompatibleVersionError(bounded(
            f"{what} of {self._base!r} does not fit the signatures the pipeline was built "
            f"with ({was}): {'; '.join(problems)}. It is not served. Publish a version with "
            "the same signatures, or start a new job for the new ones."
        ))

    def _record_failure(self, version: ModelVersion,
                        listing: dict[int, dict[str, tuple[int, float]]], error: Exception) -> None:
        self._failed[version.version] = listing.get(version.version, {})
        incompatible = isinstance(error, IncompatibleVersionError)
        _LOG.error("beam_infer: version %s of %s %s and will not serve (retried only if its "
                   "files change): %s", version.version, self._base,
                   "does not fit the pipeline" if incompatible else "failed to load",
                   bounded(" ".join(str(error).split())))
        self._report(LoadEvent(version=version.version, ok=False, incompatible=incompatible))

    def _report(self, event: LoadEvent) -> None:
        with self._events_lock:
            self._events.append(event)

    def _refresh_logged(self) -> None:
        try:
            self.refresh()
        except Exception:  # noqa: BLE001 - must not end serving; the next poll retries
            _LOG.exception("beam_infer: looking for new versions of %s failed", self._base)

    def refresh(self) -> bool:
        """Looks for a better version now; loads, warms up and swaps to it if one loads.

        Returns:
            False if another refresh was already running (nothing was done).
        """
        if not self._refresh_lock.acquire(blocking=False):
            return False  # another thread is loading; keep serving the current version
        try:
            self._next_poll = time.monotonic() + (self._spec.poll_interval_secs or 0)
            listing = _versions.complete_versions(self._base)
            current = self._current.version.version
            for number in self._policy.allowed(listing):
                if number == current:
                    return True
                if self._failed.get(number) == listing[number]:
                    continue
                candidate = self._version(number)
                try:
                    servable = self._load(candidate, swap=True)
                except BeamInferError as e:
                    self._record_failure(candidate, listing, e)
                    continue
                _LOG.warning("beam_infer: now serving version %s of %s (was %s)",
                             number, self._base, current)
                with self._events_lock:  # the swap and its event, as one step for call()
                    self._current = servable
                    self._events.append(servable.loaded)
                return True
            return True
        finally:
            self._refresh_lock.release()

    def call(self, calls: Sequence[tuple[str, Mapping[str, Any]]]
             ) -> tuple[list[dict[str, np.ndarray]], ModelVersion, list[LoadEvent]]:
        """Runs ``(signature name, feeds)`` calls on one batch with one version.

        Returns:
            Each call's outputs (numpy, the batch first), the version that answered and
            the loads since the previous call.
        """
        if self._live and time.monotonic() >= self._next_poll:
            # Look and load in the background: this batch and the ones after it are
            # scored by the current version until the new one is loaded and warm.
            self._next_poll = time.monotonic() + (self._spec.poll_interval_secs or 0)
            threading.Thread(target=self._refresh_logged, name="beam_infer-refresh",
                             daemon=True).start()
        with self._events_lock:  # the version that answers comes with the loads before it
            servable = self._current
            events, self._events = self._events, []
        try:
            outputs = [servable.model.run(name, feeds) for name, feeds in calls]
        except BaseException:
            with self._events_lock:  # not lost: the next call that answers reports them
                self._events[:0] = events
            raise
        return outputs, servable.version, events

    def take_load_events(self) -> list[LoadEvent]:
        """The loads not yet reported (a failed call leaves them here), now taken."""
        with self._events_lock:
            events, self._events = self._events, []
        return events

    def current_model(self) -> LoadedModel:
        """The loaded version serving now (in this process; not through a proxy)."""
        return self._current.model

    def version(self) -> int | None:
        """The version serving now (None for a plain SavedModel directory)."""
        return self._current.version.version
