"""Serialized examples: what a string-input signature is fed, from each element.

``serialize_examples`` gives the bytes of each element (``call_model`` stacks them into
one string tensor); ``wrong_type_message`` is the refusal the validator reuses."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from beam_infer._errors import InputError
from beam_infer._messages import preview, type_name

ExampleLike = tf.train.Example | tf.train.SequenceExample | bytes


def serialize_examples(
    batch: Sequence[ExampleLike], *, signature_name: str, accepts_sequence_examples: bool
) -> list[bytes]:
    """Serialized bytes of each element, in order.

    Args:
        batch: ``tf.train.Example``, ``tf.train.SequenceExample`` or already serialized
            ``bytes``.
        signature_name: Named in errors.
        accepts_sequence_examples: False for classify/regress, which TF Serving defines
            on ``tf.train.Example`` only.

    Raises:
        InputError: an element is of another type.
    """
    if set(map(type, batch)) == {bytes}:  # already serialized: checked and copied in C
        return list(batch)
    serialized = []
    for element in batch:
        if isinstance(element, bytes):
            serialized.append(element)
        elif isinstance(element, tf.train.Example) or (
            accepts_sequence_examples and isinstance(element, tf.train.SequenceExample)
        ):
            serialized.append(element.SerializeToString())
        else:
            raise InputError(wrong_type_message(element, signature_name,
                                                 accepts_sequence_examples))
    return serialized


def num_bytes(batch: Sequence[ExampleLike]) -> int:
    """The serialized size of a batch, without serializing protos again."""
    if set(map(type, batch)) == {bytes}:
        return sum(map(len, batch))
    return sum(len(e) if isinstance(e, bytes) else e.ByteSize() for e in batch)


def wrong_type_message(element: object, signature_name: str, sequence_ok: bool, *,
                       predicts: bool = False) -> str:
    """Why ``element`` is not an example ``signature_name`` takes, and what to pass.

    ``predicts``: the signature is a predict signature that parses ``tf.train.Example``
    (so it refuses SequenceExamples for that reason, not as classify and regress do).
    """
    why = "the signature parses tf.train.Example" if predicts \
        else "classify and regress take no SequenceExample"
    accepted = "tf.train.Example, tf.train.SequenceExample or bytes" if sequence_ok \
        else f"tf.train.Example or bytes ({why})"
    hint = ""
    if isinstance(element, tuple) and len(element) == 2:
        hint = (" It looks like a (key, value) pair: RunInference passes keys through when "
                "the input PCollection is declared as Tuple[K, V] or every element of a "
                "batch is a pair.")
    elif isinstance(element, str):
        hint = " Encode text as bytes, or wrap it in a tf.train.Example feature."
    return (
        f"signature {signature_name!r} takes serialized examples, but got an element of "
        f"type {type_name(element)}: "
        f"{preview(element)}. Pass {accepted}.{hint}"
    )
