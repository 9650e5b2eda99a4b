"""Dead letters: elements that could not be scored, with where and why.

``DeadLetter`` is the record; ``ValidateFn`` and ``SplitDeadLettersFn`` are the steps
``RunInference(spec).with_dead_letters()`` puts around the isolating handler (see
``_transform``); ``raise_for`` is what happens instead without a dead-letter output.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, NamedTuple

import apache_beam as beam

from beam_infer import _metrics
from beam_infer._encoding import ExampleLike
from beam_infer._errors import InferenceError
from beam_infer._keys import Keys
from beam_infer._messages import MAX_MESSAGE_CHARS, bounded, detail, preview

DEAD_LETTERS_TAG = "dead_letters"


class Stage(enum.Enum):
    """Where an element failed.

    Example:
        >>> validate_failures = failed | beam.Filter(lambda d: d.stage is bi.Stage.VALIDATE)
    """

    DECODE = "decode"  # not an element the signature can be fed (type, None, bad bytes)
    VALIDATE = "validate"  # fed the wrong features: missing, wrong kind or length
    INFERENCE = "inference"  # the model call failed on it (after retries)
    POSTPROCESS = "postprocess"  # its PredictionLog could not be built


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """An input element that was not scored, and why.

    Attributes:
        element: The input element exactly as it arrived, with its key when keyed.
        key: The element's key, or None for unkeyed input.
        stage: Where it failed (``Stage.DECODE``, ``VALIDATE``, ``INFERENCE``,
            ``POSTPROCESS``).
        error_type: The exception's class name, e.g. ``InvalidArgumentError``.
        message: What was wrong, what was found and how to fix it; at most
            ``MAX_MESSAGE_CHARS`` (2,000) characters, with a note where text was cut
            (``element`` holds the element whole).

    Example:
        >>> logs, failed = examples | bi.RunInference(spec).with_dead_letters()
        >>> failed | beam.Map(lambda d: f"{d.key}: {d.stage.value}: {d.message}")
    """

    element: Any
    key: Any
    stage: Stage
    error_type: str
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", bounded(self.message))

    def describe(self) -> str:
        """One line naming the element (its key when it has one), stage and reason."""
        who = f"element with key {detail(repr(self.key))}" if self.key is not None \
            else f"element {_one_line(self.element)}"
        return f"{who} failed at stage {self.stage.value}: {self.error_type}: {self.message}"


def _one_line(element: Any, limit: int = 60) -> str:
    text = " ".join(repr(element).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InferenceResults(NamedTuple):
    """What ``RunInference(...).with_dead_letters()`` returns: two PCollections.

    Example:
        >>> results = examples | bi.RunInference(spec).with_dead_letters()
        >>> results.predictions, results.failed  # or: predictions, failed = results
    """

    predictions: beam.PCollection
    failed: beam.PCollection


def raise_for(letter: DeadLetter) -> None:
    """Stops the pipeline for an element that failed when no dead-letter output exists."""
    advice = (" To route such elements to a second output instead of stopping, use "
              "RunInference(spec).with_dead_letters().")
    raise InferenceError(bounded(letter.describe(), MAX_MESSAGE_CHARS - len(advice)) + advice)


def not_a_pair(element: Any) -> DeadLetter:
    return DeadLetter(
        element=element, key=None, stage=Stage.DECODE, error_type="InputError",
        message=(f"expected a (key, example) pair because the input PCollection is declared "
                 f"keyed, but got {type(element).__name__}: {preview(element)}. Emit "
                 "(key, example) tuples, or declare the input unkeyed."))


class ValidateFn(beam.DoFn):
    """Passes valid elements on and turns the others into dead letters."""

    def __init__(self, validator: Any, keys: Keys, *, keyed_batches: bool = False):
        self._validator = validator
        self._keys = keys
        self._keyed_batches = keyed_batches  # (key, [examples]) checks each example

    def process(self, element: Any):
        is_pair, key, value = self._keys.split(element)
        letter = None
        if not is_pair:
            letter = not_a_pair(element)
        else:
            if self._keyed_batches and type(value) is list and all(
                    isinstance(item, ExampleLike) for item in value):
                failure = next(filter(None, map(self._validator.check, value)), None)
            else:
                failure = self._validator.check(value)
            if failure is not None:
                letter = DeadLetter(element=element, key=key, stage=Stage(failure.stage),
                                    error_type=failure.error_type, message=failure.message)
        if letter is None:
            yield element
        else:
            _metrics.count_failure(letter.stage.value)
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS_TAG, letter)


class SplitDeadLettersFn(beam.DoFn):
    def process(self, element: Any):
        if isinstance(element, DeadLetter):
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS_TAG, element)
        else:
            yield element
