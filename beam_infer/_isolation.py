"""A ModelHandler wrapper that keeps one bad element from costing its batch.

``IsolatingHandler`` runs the handler's three stages (encode, call the model, build
outputs) on a batch of (maybe keyed) elements, and when a stage fails finds the elements
it failed for:

* a model call that fails (after ``_retries`` gave up on a transient failure, its
  elements fail together) is *isolated*: the failing group is halved, the first half
  is tried; a half that works is scored, a half that fails is halved again while the
  other half waits in a pool that is tried (and, if it fails, isolated) afterwards.
  A single bad element in a batch of n costs about log2(n) + 2 extra calls, and the good
  ones are scored exactly as in one call;
* encoding and output building, which are per element, fall back to one element at a
  time.

Failed elements come back in place as ``DeadLetter``s (with their key and original
element, and the validator's explanation when it has one); without a dead-letter output
the first one raises ``InferenceError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from beam_infer import _metrics, _retries
from beam_infer._dead_letters import DeadLetter, Stage, not_a_pair, raise_for
from beam_infer._forwarding import ForwardingHandler, LastBatch
from beam_infer._handler import InferenceHandler
from beam_infer._keys import KeyedBatch, Keys
from beam_infer._messages import tf_message
from beam_infer._retries import CallFailure, ModelCaller
from beam_infer._stages import ModelResults
from beam_infer._validation import Validator


class IsolatingHandler(ForwardingHandler):
    """Wraps an ``InferenceHandler``: scores what it can and reports failing elements.

    Args:
        inner: The handler whose stages are run.
        keys: Whether elements are ``(key, value)`` pairs (see ``_keys``).
        caller: Makes the model calls (timeouts and retries; see ``_retries``).
        validator: Explains elements that fail (a missing feature reads better than
            TensorFlow's parse error); None: the error's own text.
        dead_letters: Return failed elements as ``DeadLetter``s in place; otherwise raise
            ``InferenceError`` for the first one.

    Example:
        >>> handler = IsolatingHandler(inner, keys=Keys.PER_ELEMENT,
        ...     caller=ModelCaller(inner, RetryConfig()), validator=v, dead_letters=True)
        >>> outputs = handler.run_inference(batch, handler.load_model())
    """

    def __init__(self, inner: InferenceHandler, *, keys: Keys, caller: ModelCaller,
                 validator: Validator | None, dead_letters: bool):
        super().__init__(inner)
        self._keys = keys
        self._caller = caller
        self._validator = validator
        self._dead_letters = dead_letters
        self._last = LastBatch()  # the values of the batch scored last, for get_num_bytes

    @property
    def keys(self) -> Keys:
        return self._keys

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
        self._last.keep(batch, run.values)
        return run.results

    def call(self, items: Sequence[Any], model: Any) -> ModelResults | CallFailure:
        return self._caller.call(self._inner.encoded(items), model)

    def planned_calls(self, batch: Sequence[Any]) -> list | None:
        split = KeyedBatch.split(batch, self._keys)
        if self._keys is Keys.ALL and split.not_pairs():
            return None  # those are refused before the model: the call holds the rest
        return self._inner.planned_calls(split.values)

    def explain(self, value: Any) -> tuple[Stage, str, str] | None:
        """A validation failure for ``value``, when the validator finds one."""
        if self._validator is None:
            return None
        failure = self._validator.check(value)
        if failure is None:
            return None
        return Stage(failure.stage), failure.error_type, failure.message

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        # Values only (keys are not model input), as tfx-bsl counts them.
        values = self._last.take(batch)
        if values is None:
            values = KeyedBatch.split(batch, self._keys).values
        try:
            return self._inner.get_num_bytes(values)
        except Exception:  # noqa: BLE001 - a metric: count what can be counted
            return sum(self._bytes_of(v) for v in values)

    def _bytes_of(self, value: Any) -> int:
        try:
            return self._inner.get_num_bytes([value])
        except Exception:  # noqa: BLE001 - e.g. None, which was dead-lettered
            return 0


class _Run:
    """One batch going through the stages; ``results[i]`` is element i's output."""

    def __init__(self, handler: IsolatingHandler, batch: Sequence[Any], model: Any):
        self._handler = handler
        self._inner: InferenceHandler = handler.inner
        self._batch = batch
        self._model = model
        self._split = KeyedBatch.split(batch, handler.keys)
        self._values = self._split.values
        self._encoded: list[Any] = [None] * len(batch)
        self.results: list[Any] = [None] * len(batch)
        self.failed = 0  # elements that got a DeadLetter

    @property
    def values(self) -> list[Any]:
        """Per element, what is fed to the model (keys taken off)."""
        return self._values

    def score(self) -> None:
        indices = self._encode()
        if not indices:
            return
        outcome = self._handler.call(self._encoded_of(indices), self._model)
        if isinstance(outcome, CallFailure):
            self._isolate(indices, outcome)
        else:
            self._emit(indices, outcome)

    def _encoded_of(self, indices: list[int]) -> list[Any]:
        if len(indices) == len(self._encoded):
            return self._encoded
        return [self._encoded[i] for i in indices]

    def _values_of(self, indices: list[int]) -> list[Any]:
        if len(indices) == len(self._values):
            return self._values
        return [self._values[i] for i in indices]

    def _encode(self) -> list[int]:
        inner = self._inner
        usable = list(range(len(self._batch)))
        refused = set(self._split.not_pairs()) if self._handler.keys is Keys.ALL else None
        if refused:
            for i in sorted(refused):
                self._fail_with(i, not_a_pair(self._batch[i]))
            usable = [i for i in usable if i not in refused]
        try:
            encoded = inner.encode(self._values_of(usable))
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

    def _isolate(self, group: list[int], failed: CallFailure) -> None:
        """Scores what works in ``group`` (whose call failed) and fails the rest."""
        calls = _metrics.isolation_calls()
        call = self._handler.call
        work: list[tuple[list[int], CallFailure | None]] = [(group, failed)]
        while work:
            current, error = work.pop()
            if error is not None and error.transient:
                for i in current:  # retries ran out: this call's elements fail together
                    self._fail(i, Stage.INFERENCE, error.error, error, len(current))
                continue
            pool: list[int] = []
            while len(current) > 1:
                half = len(current) // 2
                left, right = current[:half], current[half:]
                calls.inc()
                outcome = call(self._encoded_of(left), self._model)
                if isinstance(outcome, CallFailure) and not outcome.transient:
                    pool.extend(right)
                    current, error = left, outcome
                    continue
                if isinstance(outcome, CallFailure):
                    work.append((left, outcome))
                else:
                    self._emit(left, outcome)
                # The group failed and its left half did not: look in the right half
                # without calling it as a whole.
                current, error = right, None
            if error is None:
                calls.inc()
                outcome = call(self._encoded_of(current), self._model)
                if isinstance(outcome, CallFailure):
                    error = outcome
                else:
                    self._emit(current, outcome)
            if error is not None:
                if error.transient:
                    work.append((current, error))
                else:
                    self._fail(current[0], Stage.INFERENCE, error.error, error)
            if pool:
                calls.inc()
                outcome = call(self._encoded_of(pool), self._model)
                if isinstance(outcome, CallFailure):
                    work.append((pool, outcome))
                else:
                    self._emit(pool, outcome)

    def _emit(self, indices: list[int], results: ModelResults) -> None:
        inner = self._inner
        values = self._values_of(indices)
        complete = True  # every element of ``indices`` got an output
        try:
            logs = inner.build_outputs(values, inner.encoded(self._encoded_of(indices)),
                                       results)
        except Exception as batch_error:  # noqa: BLE001 - retried per element below
            complete = False
            if not results.has_batch_first(len(indices)):  # no element's share is known
                for i in indices:
                    self._fail(i, Stage.POSTPROCESS, batch_error)
                return
            logs = []
            for position, i in enumerate(indices):
                try:
                    (log,) = inner.build_outputs([self._values[i]],
                                                 inner.encoded([self._encoded[i]]),
                                                 results.row(position))
                except Exception as e:  # noqa: BLE001 - reported as this element's failure
                    self._fail(i, Stage.POSTPROCESS, e)
                    log = None
                logs.append(log)
        if complete and len(indices) == len(self.results) and not self.failed:
            joined = self._split.join_all(logs)  # the whole batch scored: one pass in C
            if joined is not None:
                self.results = joined
                return
        for i, log in zip(indices, logs, strict=True):
            if log is not None:
                self.results[i] = self._split.join(i, log)

    def _fail(self, i: int, stage: Stage, error: BaseException,
              failure: CallFailure | None = None, call_size: int = 1) -> None:
        explained = self._handler.explain(self._values[i])
        if explained is not None:
            stage, error_type, message = explained
        else:
            error_type = type(error).__name__
            message = _retries.reason(failure, self._inner.where, size=call_size, batch=False) \
                if failure is not None else tf_message(error)
        self._fail_with(i, DeadLetter(element=self._batch[i], key=self._split.keys[i],
                                      stage=stage, error_type=error_type, message=message))

    def _fail_with(self, i: int, letter: DeadLetter) -> None:
        _metrics.count_failure(letter.stage.value)
        self.results[i] = letter
        self.failed += 1
