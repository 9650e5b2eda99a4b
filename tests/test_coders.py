"""Coders of tf.Tensor and the batch types: exact round trips, sizes without copies."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.ml.inference.base import PredictionResult

import beam_infer as bi
from beam_infer._batches import Batch
from beam_infer._coders import SizedPickleCoder, TensorCoder, nbytes
from beam_infer._outputs import BatchResult
from tests.support.beam_helpers import run_collect

TENSORS = [
    tf.constant(np.arange(12, dtype=np.float32).reshape(3, 4)),
    tf.constant([b"ab", b"c\x00d\x00", b""]),  # trailing zero bytes kept
    tf.constant(7, dtype=tf.int64),
    tf.zeros((0, 5), dtype=tf.float16),
    tf.constant([[True, False]]),
]


@pytest.mark.parametrize("tensor", TENSORS, ids=lambda t: f"{t.dtype.name}{t.shape}")
def test_tensor_coder_round_trips_dtype_shape_and_values(tensor):
    coder = TensorCoder()
    back = coder.decode(coder.encode(tensor))
    assert back.dtype == tensor.dtype and back.shape == tensor.shape
    assert np.array_equal(back.numpy(), tensor.numpy())


def test_sizes_are_estimated_from_the_data_not_by_encoding():
    coder = beam.coders.registry.get_coder(tf.Tensor)
    assert isinstance(coder, TensorCoder)
    floats = tf.zeros((1024, 784))
    assert coder.estimate_size(floats) == 1024 * 784 * 4
    strings = tf.constant([b"x" * 100] * 10)
    assert 1000 <= coder.estimate_size(strings) <= len(coder.encode(strings))
    batch = Batch(floats, 1024)
    assert nbytes(batch) >= 1024 * 784 * 4
    result = BatchResult(floats, {"y": np.zeros((1024, 10), np.float32)})
    # The arrays, and 8 bytes for the model_id (None).
    assert SizedPickleCoder().estimate_size(result) == 1024 * 784 * 4 + 1024 * 10 * 4 + 8
    assert nbytes([b"ab", b"cde"]) == 5 and nbytes(np.array([b"ab"], dtype=object)) == 2


def test_batch_results_are_prediction_results_and_round_trip():
    result = BatchResult(np.arange(3), {"y": np.ones(3)}, "model")
    assert isinstance(result, PredictionResult)
    back = SizedPickleCoder().decode(SizedPickleCoder().encode(result))
    assert type(back) is BatchResult and back.model_id == "model"
    assert np.array_equal(back.example, result.example)
    assert np.array_equal(back.inference["y"], result.inference["y"])
    assert PredictionResult("e", {"y": 1}) == BatchResult("e", {"y": 1})


def test_tensor_batches_cross_a_shuffle_intact(tmp_path):
    # Reshuffle makes Beam encode the tf.Tensor batches with TensorCoder and decode them.
    records = [f"record-{i}".encode() + b"\x00" * (i % 3) for i in range(10)]
    with tf.io.TFRecordWriter(str(tmp_path / "in.tfrecord")) as writer:
        for record in records:
            writer.write(record)

    def build(p):
        batches = (p | bi.ReadTFRecordBatches(str(tmp_path / "in.tfrecord"), batch_size=4)
                   | beam.Reshuffle())
        assert batches.element_type is tf.Tensor
        return {"records": batches | beam.FlatMap(lambda batch: batch.numpy().tolist())}

    outputs, _ = run_collect(build, str(tmp_path / "out"))
    assert sorted(outputs["records"]) == sorted(records)
