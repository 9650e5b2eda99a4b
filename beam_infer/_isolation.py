"""A ModelHandler wrapper that keeps one bad element from costing its batch.

``IsolatingHandler`` runs ``SavedModelHandler``'s three stages (encode, call the
model, build PredictionLogs) on a batch of (maybe keyed) elements:

* a model call that fails transiently (see ``RetryConfig``) is retried with backoff;
  when the retries run out, the elements of that call fail;
* a call that fails otherwise is *isolated*: the failing group is halved, the first half
  is tried; a half that works is scored, a half that fails is halved again while the
  other half waits in a pool that is tried (and, if it fails, isolated) afterwards.
  A single bad element in a batch of n costs about log2(n) + 2 extra calls, and the good
  ones are scored exactly as in one call;
* encoding and log building, which are per element, fall back to one element at a time.

Failed elements come back in place as ``DeadLetter``s (with their key and original
element); without a dead-letter output the first one raises ``InferenceError``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from apache_beam.metrics import Metrics
from apache_beam.ml.inference import base

from beam_infer._config import RetryConfig
from beam_infer._dead_letters import (
    METRICS_NAMESPACE,
    DeadLetter,
    Stage,
    count_failure,
    not_a_pair,
    raise_for,
)
from beam_infer._encoding import ExampleLike
from beam_infer._handler import ModelResults, SavedModelHandler
from beam_infer._messages import detail
from beam_infer._validation import Validator

# Failures that may go away when the same call is made again.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    tf.errors.ResourceExhaustedError,
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    TimeoutError,
)


class CallTimeoutError(TimeoutError):
    """A model call ran longer than ``RetryConfig.call_timeout_secs``."""


def keyed_from_type(element_type: Any) -> bool | None:
    """True for a declared (key, value) pair, False for a declared example type, else None."""
    tuple_types = getattr(element_type, "tuple_types", None)
    if tuple_types is not None and len(tuple_types) == 2:
        return True
    known = (*ExampleLike.__args__, str, dict, list, np.ndarray)  # type: ignore[attr-defined]
    if isinstance(element_type, type) and issubclass(element_type, known):
        return False
    return None


class _Failed:
    """Why a model call failed, and whether retrying could not help any more."""

    def __init__(self, error: BaseException, attempts: int, transient: bool):
        self.error = error
        self.attempts = attempts
        self.transient = transient


class IsolatingHandler(base.ModelHandler):
    """Wraps a ``SavedModelHandler``: retries, isolates and reports failing elements.

    Args:
        inner: The handler whose stages are run.
        keyed: True: elements are (key, example) pairs; False: examples; None: decide per
            element (a 2-tuple is a pair).
        retry: How transient model-call failures are retried.
        validator: Explains elements that fail (a missing feature reads better than
            TensorFlow's parse error).
        dead_letters: Return failed elements as ``DeadLetter``s in place; otherwise raise
            ``InferenceError`` for the first one.

    Example:
        >>> handler = IsolatingHandler(SavedModelHandler(spec), keyed=None,
        ...                            retry=RetryConfig(), validator=v, dead_letters=True)
        >>> outputs = handler.run_inference(batch, handler.load_model())
    """

    def __init__(self, inner: SavedModelHandler, *, keyed: bool | None, retry: RetryConfig,
                 validator: Validator | None, dead_letters: bool):
        self._inner = inner
        self._keyed = keyed
        self._retry = retry
        self._validator = validator
        self._dead_letters = dead_letters
        self._env_vars = {}
        self._late: list[ModelResults] = []  # timed-out calls that finished later

    # --- the batch path ---------------------------------------------------------------

    def run_inference(self, batch: Sequence[Any], model: Any,
                      inference_args: Mapping[str, Any] | None = None) -> list[Any]:
        if not batch:
            return []
        run = _Run(self, batch, model)
        run.score()
        if run.failed and not self._dead_letters:
            raise_for(next(r for r in run.results if isinstance(r, DeadLetter)))
        if run.failed:  # this bundle succeeds: report loads its failed calls left behind
            self._inner.report_pending_loads(model)
        return run.results

    def call_with_retries(self, encoded: Sequence[Any], model: Any
                          ) -> ModelResults | _Failed:
        retry = self._retry
        try:
            for attempt in range(1, retry.max_attempts + 1):
                try:
                    results = self._call(encoded, model)
                except Exception as e:  # noqa: BLE001 - every failure is reported, none lost
                    if not isinstance(e, TRANSIENT_ERRORS):
                        return _Failed(e, attempt, transient=False)
                    if attempt == retry.max_attempts:
                        return _Failed(e, attempt, transient=True)
                    Metrics.counter(METRICS_NAMESPACE, "inference_retries").inc()
                    time.sleep(retry.backoff_secs(attempt))
                    continue
                self._inner.report_loads(results)
                return results
            raise AssertionError("unreachable")
        finally:
            while self._late:  # calls that finished after their timeout
                self._inner.report_loads(self._late.pop(0))

    def _call(self, encoded: Sequence[Any], model: Any) -> ModelResults:
        timeout = self._retry.call_timeout_secs
        if timeout is None:
            return self._inner.call_model(encoded, model)
        outcome: dict[str, Any] = {}
        lock = threading.Lock()

        def target() -> None:
            try:
                value = self._inner.call_model(encoded, model)
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

    def explain(self, value: Any) -> tuple[Stage, str, str] | None:
        """A validation failure for ``value``, when the validator finds one."""
        if self._validator is None:
            return None
        failure = self._validator.check(value)
        if failure is None:
            return None
        return Stage(failure.stage), failure.error_type, failure.message

    @property
    def inner(self) -> SavedModelHandler:
        return self._inner

    @property
    def keyed(self) -> bool | None:
        return self._keyed

    # --- everything else is the inner handler's -----------------------------------------

    def load_model(self) -> Any:
        return self._inner.load_model()

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        # Values only (keys are not model input), as tfx-bsl counts them.
        values = batch if self._keyed is False else [
            e[1] if isinstance(e, tuple) and len(e) == 2 else e for e in batch]
        try:
            return self._inner.get_num_bytes(values)
        except Exception:  # noqa: BLE001 - a metric: count what can be counted
            return sum(self._bytes_of(v) for v in values)

    def _bytes_of(self, value: Any) -> int:
        try:
            return self._inner.get_num_bytes([value])
        except Exception:  # noqa: BLE001 - e.g. None, which was dead-lettered
            return 0

    def get_metrics_namespace(self) -> str:
        return self._inner.get_metrics_namespace()

    def get_resource_hints(self) -> dict:
        return self._inner.get_resource_hints()

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return self._inner.batch_elements_kwargs()

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        self._inner.validate_inference_args(inference_args)

    def update_model_path(self, model_path: str | None = None) -> None:
        self._inner.update_model_path(model_path=model_path)

    def share_model_across_processes(self) -> bool:
        return self._inner.share_model_across_processes()

    def model_copies(self) -> int:
        return self._inner.model_copies()

    def __repr__(self) -> str:
        return f"IsolatingHandler({self._inner!r})"


class _Run:
    """One batch going through the stages; ``results[i]`` is element i's output."""

    def __init__(self, handler: IsolatingHandler, batch: Sequence[Any], model: Any):
        self._handler = handler
        self._batch = batch
        self._model = model
        keyed = handler.keyed
        # Per element: has_key[i] (a (key, value) pair when keyed is not False), its key
        # and the value fed to the model.
        if keyed is False:
            self._has_key = None
            self._keys = [None] * len(batch)
            self._values = list(batch)
        else:
            self._has_key = [isinstance(e, tuple) and len(e) == 2 for e in batch]
            if all(self._has_key):  # the common case: unzip in C
                self._keys, self._values = (list(column) for column in zip(*batch, strict=True))
            else:
                self._keys = [e[0] if k else None
                              for e, k in zip(batch, self._has_key, strict=True)]
                self._values = [e[1] if k else e
                                for e, k in zip(batch, self._has_key, strict=True)]
        self._encoded: list[Any] = [None] * len(batch)
        self.results: list[Any] = [None] * len(batch)
        self.failed = 0  # elements that got a DeadLetter

    def score(self) -> None:
        indices = self._encode()
        if not indices:
            return
        outcome = self._handler.call_with_retries(self._encoded_of(indices), self._model)
        if isinstance(outcome, _Failed):
            self._isolate(indices, outcome)
        else:
            self._emit(indices, outcome)

    def _encoded_of(self, indices: list[int]) -> list[Any]:
        if len(indices) == len(self._encoded):
            return self._encoded
        return [self._encoded[i] for i in indices]

    def _encode(self) -> list[int]:
        inner = self._handler.inner
        usable = list(range(len(self._batch)))
        if self._handler.keyed is True and not all(self._has_key):
            for i in usable:
                if not self._has_key[i]:
                    self._fail_with(i, not_a_pair(self._batch[i]))
            usable = [i for i in usable if self._has_key[i]]
        values = self._values if len(usable) == len(self._values) \
            else [self._values[i] for i in usable]
        try:
            encoded = inner.encode(values)
        except Exception:  # noqa: BLE001 - find the element(s) one at a time below
            encoded = None
        if encoded is not None:
            if len(usable) == len(self._encoded):
                self._encoded = list(encoded)
            else:
                for i, item in zip(usable, encoded, strict=True):
                    self._encoded[i] = item
            return usable
        good = []
        for i in usable:
            try:
                (self._encoded[i],) = inner.encode([self._values[i]])
                good.append(i)
            except Exception as e:  # noqa: BLE001 - reported as this element's failure
                self._fail(i, Stage.DECODE, e)
        return good

    def _isolate(self, group: list[int], failed: _Failed) -> None:
        """Scores what works in ``group`` (whose call failed) and fails the rest."""
        calls = Metrics.counter(METRICS_NAMESPACE, "isolation_model_calls")
        work = [(group, failed)]
        while work:
            current, error = work.pop()
            if error is not None and error.transient:
                for i in current:  # retries ran out: this call's elements fail together
                    self._fail(i, Stage.INFERENCE, error.error, error.attempts, len(current))
                continue
            pool: list[int] = []
            while len(current) > 1:
                half = len(current) // 2
                left, right = current[:half], current[half:]
                calls.inc()
                outcome = self._handler.call_with_retries(self._encoded_of(left), self._model)
                if isinstance(outcome, _Failed) and not outcome.transient:
                    pool.extend(right)
                    current, error = left, outcome
                    continue
                if isinstance(outcome, _Failed):
                    work.append((left, outcome))
                else:
                    self._emit(left, outcome)
                # The group failed and its left half did not: look in the right half
                # without calling it as a whole.
                current, error = right, None
            if error is None:
                calls.inc()
                outcome = self._handler.call_with_retries(self._encoded_of(current),
                                                          self._model)
                if isinstance(outcome, _Failed):
                    error = outcome
                else:
                    self._emit(current, outcome)
            if error is not None:
                if error.transient:
                    work.append((current, error))
                else:
                    self._fail(current[0], Stage.INFERENCE, error.error, error.attempts)
            if pool:
                calls.inc()
                outcome = self._handler.call_with_retries(self._encoded_of(pool), self._model)
                if isinstance(outcome, _Failed):
                    work.append((pool, outcome))
                else:
                    self._emit(pool, outcome)

    def _emit(self, indices: list[int], results: ModelResults) -> None:
        inner = self._handler.inner
        encoded = self._encoded_of(indices)
        values = self._values if len(indices) == len(self._values) \
            else [self._values[i] for i in indices]
        complete = True  # every element of ``indices`` got an output
        try:
            logs = inner.build_outputs(values, encoded, results)
        except Exception as batch_error:  # noqa: BLE001 - retried per element below
            complete = False
            rows = _rows(results, len(indices))
            if rows is None:  # the outputs do not have the batch first: no element is ok
                for i in indices:
                    self._fail(i, Stage.POSTPROCESS, batch_error)
                return
            logs = []
            for position, i in enumerate(indices):
                try:
                    (log,) = inner.build_outputs([self._values[i]], [self._encoded[i]],
                                                 rows(position))
                except Exception as e:  # noqa: BLE001 - reported as this element's failure
                    self._fail(i, Stage.POSTPROCESS, e)
                    log = None
                logs.append(log)
        has_key, keys, out = self._has_key, self._keys, self.results
        if complete and len(indices) == len(out) and not self.failed:
            # The whole batch scored, all pairs or none: one pass in C.
            if has_key is None or not any(has_key):
                self.results = list(logs)
                return
            if all(has_key):
                self.results = list(zip(keys, logs, strict=True))
                return
        for i, log in zip(indices, logs, strict=True):
            if log is not None:
                out[i] = (keys[i], log) if has_key is not None and has_key[i] else log

    def _fail(self, i: int, stage: Stage, error: BaseException, attempts: int = 1,
              batch_size: int = 1) -> None:
        explained = self._handler.explain(self._values[i])
        if explained is not None:
            stage, error_type, message = explained
        else:
            error_type = type(error).__name__
            message = _reason(error, stage, self._handler.inner, attempts, batch_size)
        self._fail_with(i, DeadLetter(element=self._batch[i], key=self._keys[i],
                                      stage=stage, error_type=error_type, message=message))

    def _fail_with(self, i: int, letter: DeadLetter) -> None:
        count_failure(letter.stage)
        self.results[i] = letter
        self.failed += 1


def _rows(results: ModelResults, size: int):
    """A function giving element ``position``'s share of ``results``, or None."""
    for _, outputs in results.outputs:
        for value in outputs.values():
            if getattr(value, "ndim", 0) < 1 or value.shape[0] != size:
                return None

    def row(position: int) -> ModelResults:
        rows = None if results.rows is None else {
            alias: [values[position]] for alias, values in results.rows.items()}
        return dataclasses.replace(
            results, rows=rows,
            outputs=[(signature, {alias: value[position:position + 1]
                                  for alias, value in outputs.items()})
                     for signature, outputs in results.outputs])

    return row


def _reason(error: BaseException, stage: Stage, inner: SavedModelHandler,
            attempts: int, batch_size: int) -> str:
    names = ", ".join(s.name for s in inner.plan.signatures)
    text = tf_message(error)
    where = f"signature {names!r} of {inner.spec.model_path}"
    if stage is Stage.INFERENCE and isinstance(error, TRANSIENT_ERRORS):
        return (f"{where} failed transiently on a call of {batch_size} element(s) holding "
                f"this one, {attempts} time(s) in a row; last error: {text}. The model or "
                "machine was overloaded: retry these elements, or allow more with "
                "RunInference(spec, retry=bi.RetryConfig(max_attempts=...)).")
    if stage is Stage.INFERENCE:
        return f"{where} failed on this element alone: {text}"
    return text


def tf_message(error: BaseException) -> str:
    """The useful lines of a TensorFlow error, bounded: no stack-trace banner, no node names.

    TensorFlow's text may quote whole tensors, so it is cut to ``MAX_DETAIL_CHARS``.
    """
    text = error.message if isinstance(error, tf.errors.OpError) else str(error)
    kept = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("Graph execution error", "Detected at node",
                                                "<stack traces unavailable>", "[[", "[Op:")):
            continue
        if stripped.startswith("{{function_node"):
            stripped = stripped.split("}}", 1)[-1].strip()
        kept.append(stripped)
    return detail(" ".join(kept)) or type(error).__name__
