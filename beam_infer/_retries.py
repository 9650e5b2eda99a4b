"""Model calls with a timeout and retries of transient failures, for every scoring path.

``ModelCaller.call`` runs the handler's ``call_model`` stage: a call that fails with a
transient error (see ``TRANSIENT_ERRORS``) is retried with ``RetryConfig``'s backoff; a
call that runs past ``RetryConfig.call_timeout_secs`` fails with ``CallTimeoutError``
(transient: TensorFlow cannot cancel a running call, so its thread is abandoned and its
model loads are reported by a later call). It returns the ``ModelResults`` or a
``CallFailure``, never raises for a failed call: per-element scoring (``_isolation``)
isolates what failed, pre-batched scoring (``_batches``) stops with it. ``reason`` words
a failure the same way for both.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import tensorflow as tf

from beam_infer import _metrics
from beam_infer._config import RetryConfig
from beam_infer._errors import InputError, TransientError
from beam_infer._messages import tf_message
from beam_infer._stages import EncodedBatch, ModelResults

if TYPE_CHECKING:
    from beam_infer._handler import InferenceHandler

# Failures that may go away when the same call is made again; a backend raises
# (a subclass of) TransientError for its own (e.g. a remote endpoint's 503).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    tf.errors.ResourceExhaustedError,
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    TimeoutError,
)


class CallTimeoutError(TimeoutError):
    """A model call ran longer than ``RetryConfig.call_timeout_secs``."""


class CallFailure:
    """Why a model call failed, and whether retrying could not help any more.

    Attributes:
        error: The last attempt's exception.
        attempts: How many attempts were made.
        transient: The error was transient (retries ran out), not the input's fault.
    """

    def __init__(self, error: BaseException, attempts: int, transient: bool):
        self.error = error
        self.attempts = attempts
        self.transient = transient


class ModelCaller:
    """Calls ``handler.call_model`` with ``retry``'s timeout and retries.

    Example:
        >>> caller = ModelCaller(handler, RetryConfig(max_attempts=5))
        >>> outcome = caller.call(handler.encoded(handler.encode(batch)), model)
        >>> isinstance(outcome, CallFailure)
    """

    def __init__(self, handler: InferenceHandler, retry: RetryConfig):
        self._handler = handler
        self._retry = retry
        self._late: list[ModelResults] = []  # timed-out calls that finished later

    @property
    def unreported(self) -> list[ModelResults]:
        """Calls that finished after their timeout; the next call reports their loads."""
        return list(self._late)

    def call(self, encoded: EncodedBatch, model: Any) -> ModelResults | CallFailure:
        """The results, with their loads reported as metrics; or why the call failed."""
        retry = self._retry
        try:
            for attempt in range(1, retry.max_attempts + 1):
                try:
                    results = self._call(encoded, model)
                except Exception as e:  # noqa: BLE001 - every failure is reported, none lost
                    if not isinstance(e, TRANSIENT_ERRORS):
                        return CallFailure(e, attempt, transient=False)
                    if attempt == retry.max_attempts:
                        return CallFailure(e, attempt, transient=True)
                    _metrics.count_retry()
                    time.sleep(retry.backoff_secs(attempt))
                    continue
                self._handler.report_loads(results)
                return results
            raise AssertionError("unreachable")
        finally:
            while self._late:  # calls that finished after their timeout
                self._handler.report_loads(self._late.pop(0))

    def _call(self, encoded: EncodedBatch, model: Any) -> ModelResults:
        timeout = self._retry.call_timeout_secs
        if timeout is None:
            return self._handler.call_model(encoded, model)
        outcome: dict[str, Any] = {}
        lock = threading.Lock()

        def target() -> None:
            try:
                value = self._handler.call_model(encoded, model)
            except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
                with lock:
                    outcome["error"] = e
                return
            with lock:
                outcome["value"] = value
                if outcome.get("abandoned"):
                    # Nobody waits for it: its loads are reported by the next call.
                    self._late.append(value)

        # TensorFlow cannot cancel a running call: on timeout the thread is abandoned.
        worker = threading.Thread(target=target, name="beam-infer-model-call", daemon=True)
        worker.start()
        worker.join(timeout)
        with lock:
            if "value" not in outcome and "error" not in outcome:
                outcome["abandoned"] = True
                raise CallTimeoutError(
                    f"the model call on {len(encoded)} element(s) did not finish within "
                    f"{timeout:g} s (RetryConfig.call_timeout_secs)")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]


def reason(failure: CallFailure, where: str, *, size: int, batch: bool) -> str:
    """Why a call failed, for a dead letter (``batch`` False) or a stopped batch.

    Args:
        failure: The failed call.
        where: The model as messages name it (``InferenceHandler.where``).
        size: How many elements the failed call held.
        batch: The failure is reported for a whole pre-batched input, not one element.
    """
    error = failure.error
    if batch and isinstance(error, InputError):
        return str(error)  # from stacking the batch: already says what to do
    text = tf_message(error)
    if isinstance(error, TRANSIENT_ERRORS):
        call = f"this batch of {size} element(s)" if batch \
            else f"a call of {size} element(s) holding this one"
        again = "run the batch again" if batch else "retry these elements"
        return (f"{where} failed transiently on {call}, {failure.attempts} time(s) in a "
                f"row; last error: {text}. The model or machine was overloaded: {again}, "
                "or allow more attempts with "
                "RunInference(spec, retry=bi.RetryConfig(max_attempts=...)).")
    return f"{where} failed on this {'batch' if batch else 'element alone'}: {text}"
