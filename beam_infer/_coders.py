"""Coders whose size estimates do not copy: ``tf.Tensor`` and beam_infer's batch types.

Beam has no coder of its own for tensors, so a ``tf.Tensor`` PCollection falls back to
pickling. Beam also estimates element sizes (for its metrics and autoscaling) on a
sample of each PCollection's elements with that coder: the first 10, then about
``10 * ln(n)`` of ``n``. With pickling, each estimate of a tf.data batch of 1024 MLP inputs
(3.2 MB) copies it out of the tensor and pickles it, about 3 ms; over the ~25 estimates of
a run of 50 batches, for each step a batch passes, that was a fifth of a pipeline's time
(``benchmarks/throughput.py``, MLP dense read with ``ReadTFRecordBatches``).

``TensorCoder`` estimates a tensor's size from its shape and dtype (string tensors: the
total length of their items, counted in C++; ``_tensors.value_bytes``), without a copy,
and encodes a tensor,
where Beam must (a shuffle, a runner that does not fuse steps), as its ``TensorProto``,
which keeps dtype and shape. Registered for ``tf.Tensor`` when ``beam_infer`` is imported;
only PCollections whose type is declared ``tf.Tensor`` (``ReadTFRecordBatches``'
output, a ``Map`` whose function is annotated ``-> tf.Tensor``) use it: Beam infers the
type of other tensors' PCollections as ``EagerTensor`` or ``Any``, which keep pickling.

``SizedPickleCoder`` is for beam_infer's own types that carry whole batches between
steps (``_batches.Batch`` after ``on_batches()``' ``AsBatch`` step, ``_outputs.BatchResult``
out of it): it encodes them as Beam's ``PickleCoder`` does and estimates their size from
the arrays, tensors and bytes they hold (``nbytes``).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
from google.protobuf.message import Message
from tensorflow.core.framework import tensor_pb2

from beam_infer import _tensors


class _StatelessCoder(beam.coders.Coder):
    """A coder with no state: all instances are equal; encodings are not deterministic."""

    def is_deterministic(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


class TensorCoder(_StatelessCoder):
    """Encodes a ``tf.Tensor`` as its ``TensorProto``; estimates sizes without copying."""

    def encode(self, value: tf.Tensor) -> bytes:
        return tf.make_tensor_proto(value).SerializeToString()

    def decode(self, encoded: bytes) -> tf.Tensor:
        return tf.constant(tf.make_ndarray(tensor_pb2.TensorProto.FromString(encoded)))

    def estimate_size(self, value: tf.Tensor) -> int:
        return nbytes(value)

    def to_type_hint(self):
        return tf.Tensor


class SizedPickleCoder(_StatelessCoder):
    """Pickles values as Beam's ``PickleCoder`` does; estimates sizes with ``nbytes``."""

    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> Any:
        return pickle.loads(encoded)

    def estimate_size(self, value: Any) -> int:
        return nbytes(value)


def nbytes(value: Any) -> int:
    """About the bytes ``value``'s data takes: arrays, tensors, bytes and protos in it."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return sum(nbytes(v) for v in value.ravel().tolist())
    if isinstance(value, bytes | str | np.ndarray | np.generic | tf.Tensor):
        return _tensors.value_bytes(value)
    if isinstance(value, Message):
        return value.ByteSize()
    if isinstance(value, Mapping):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        if set(map(type, value)) == {bytes}:
            return sum(map(len, value))
        return sum(nbytes(v) for v in value)
    fields = getattr(value, "__dataclass_fields__", None)
    if fields is not None:
        return sum(nbytes(getattr(value, name)) for name in fields)
    if value is None or isinstance(value, int | float | bool):
        return 8
    return len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def register(type_: type, coder: type[beam.coders.Coder]) -> None:
    """Makes ``coder`` Beam's coder for PCollections of ``type_`` (idempotent)."""
    beam.coders.registry.register_coder(type_, coder)
