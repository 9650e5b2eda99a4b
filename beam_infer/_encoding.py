"""Turning elements into the batch tensor a string-input signature is fed."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from beam_infer._errors import InputError

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
            raise InputError(_wrong_type_message(element, signature_name,
                                                 accepts_sequence_examples))
    return serialized


def num_bytes(batch: Sequence[ExampleLike]) -> int:
    """The serialized size of a batch, without serializing protos again."""
    if set(map(type, batch)) == {bytes}:
        return sum(map(len, batch))
    return sum(len(e) if isinstance(e, bytes) else e.ByteSize() for e in batch)


def _wrong_type_message(element: object, signature_name: str, sequence_ok: bool) -> str:
    accepted = "tf.train.Example, tf.train.SequenceExample or bytes" if sequence_ok \
        else "tf.train.Example or bytes (classify and regress take no SequenceExample)"
    hint = ""
    if isinstance(element, tuple) and len(element) == 2:
        hint = (" It looks like a (key, value) pair: RunInference passes keys through when "
                "the input PCollection is declared as Tuple[K, V] or every element of a "
                "batch is a pair.")
    elif isinstance(element, str):
        hint = " Encode text as bytes, or wrap it in a tf.train.Example feature."
    return (
        f"signature {signature_name!r} takes serialized examples, but got an element of "
        f"type {type(element).__module__}.{type(element).__qualname__}: "
        f"{_preview(element)}. Pass {accepted}.{hint}"
    )


def _preview(element: object, limit: int = 80) -> str:
    text = repr(element)
    return text if len(text) <= limit else text[: limit - 3] + "..."
