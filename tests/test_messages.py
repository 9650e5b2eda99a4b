"""Messages built from TensorFlow errors and element contents are bounded; nothing is lost."""

from __future__ import annotations

import numpy as np
import pytest

import beam_infer as bi
from beam_infer._batches import BatchesHandler, as_batch
from beam_infer._isolation import IsolatingHandler
from beam_infer._keys import Keys
from beam_infer._messages import MAX_DETAIL_CHARS, MAX_MESSAGE_CHARS, bounded
from beam_infer._retries import ModelCaller

# Parses in no proto library, and TensorFlow's ParseExample error quotes all of it.
HUGE_RECORD = b"\x0a" + b"A" * 50_000


def test_bounded_text_says_how_much_was_cut():
    assert bounded("short") == "short"
    text = bounded("x" * 10_000)
    assert len(text) == MAX_MESSAGE_CHARS
    assert text.endswith("… [8,024 characters cut]")
    assert text.startswith("x" * 1900)


def _handler(path: str, dead_letters: bool) -> IsolatingHandler:
    # No validator: the record reaches the model, as one the checks cannot explain would.
    inner = bi.SavedModelHandler(bi.ModelSpec(model_path=path))
    return IsolatingHandler(inner, keys=Keys.ALL,
                            caller=ModelCaller(inner, bi.RetryConfig(max_attempts=1)),
                            validator=None, dead_letters=dead_letters)


def test_a_dead_letter_from_a_tensorflow_error_quoting_the_element_is_bounded(zoo):
    handler = _handler(zoo.five, dead_letters=True)
    good = bi.SavedModelHandler(bi.ModelSpec(model_path=zoo.five))
    (letter,) = handler.run_inference([("huge", HUGE_RECORD)], good.load_model())
    assert isinstance(letter, bi.DeadLetter)
    assert letter.stage is bi.Stage.INFERENCE
    assert len(letter.message) <= MAX_MESSAGE_CHARS
    assert "characters cut]" in letter.message
    assert "Could not parse example input" in letter.message
    assert letter.element == ("huge", HUGE_RECORD)  # the element itself is kept whole
    assert len(letter.describe()) <= MAX_MESSAGE_CHARS + 100


def test_the_error_that_stops_a_pipeline_is_bounded(zoo):
    handler = _handler(zoo.five, dead_letters=False)
    with pytest.raises(bi.InferenceError) as raised:
        handler.run_inference([("huge", HUGE_RECORD)], handler.load_model())
    message = str(raised.value)
    assert len(message) <= MAX_MESSAGE_CHARS
    assert message.startswith("element with key 'huge' failed at stage inference: ")
    assert message.endswith("use RunInference(spec).with_dead_letters().")


def test_a_huge_key_is_cut_in_the_description(zoo):
    letter = bi.DeadLetter(element=None, key="k" * 10_000, stage=bi.Stage.DECODE,
                           error_type="InputError", message="m" * 10_000)
    assert len(letter.message) == MAX_MESSAGE_CHARS
    assert len(letter.describe()) <= MAX_DETAIL_CHARS + MAX_MESSAGE_CHARS + 100


def test_on_batches_errors_are_bounded(zoo):
    inner = bi.SavedModelHandler(bi.ModelSpec(model_path=zoo.five))
    handler = BatchesHandler(inner, ModelCaller(inner, bi.RetryConfig(max_attempts=1)))
    batch = as_batch(("huge", np.array([HUGE_RECORD], dtype=object)), "serving_default")
    with pytest.raises(bi.InferenceError) as raised:
        handler.run_inference(batch, inner.load_model())
    assert len(str(raised.value)) <= MAX_MESSAGE_CHARS
    assert "characters cut]" in str(raised.value)
    assert str(raised.value).startswith("batch with key 'huge' ")
