"""The seed tutorial's demo models, built by code: ``y = 5x`` and ``y = 10x``.

Each is a SavedModel whose ``serving_default`` signature takes serialized
``tf.train.Example``s (input ``examples``, DT_STRING) holding one float feature ``x``,
parses them in the graph and returns ``output_0`` (float32 ``[batch, 1]``) — the
signature of the blog post's ``serve_tf_examples_fn``. The weights are set exactly
rather than trained, so the answers are exact and the build takes a second.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import tensorflow as tf

FEATURE = "x"
INPUT_ALIAS = "examples"
OUTPUT_ALIAS = "output_0"


class _Multiplier(tf.Module):
    def __init__(self, factor: float):
        super().__init__(name="multiplier")
        self.kernel = tf.Variable([[factor]], dtype=tf.float32, name="kernel")
        self.bias = tf.Variable([0.0], dtype=tf.float32, name="bias")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_ALIAS)])
    def serve_tf_examples_fn(self, serialized_tf_examples: tf.Tensor) -> dict[str, tf.Tensor]:
        features = tf.io.parse_example(
            serialized_tf_examples, {FEATURE: tf.io.FixedLenFeature([1], tf.float32)})
        return {OUTPUT_ALIAS: tf.matmul(features[FEATURE], self.kernel) + self.bias}


def build_multiplier_model(path: str, factor: float) -> str:
    """Writes a SavedModel computing ``y = factor * x`` to ``path`` and returns ``path``."""
    module = _Multiplier(factor)
    tf.saved_model.save(
        module, path, signatures={"serving_default": module.serve_tf_examples_fn})
    return path


def ensure_multiplier_model(path: str, factor: float) -> str:
    """Builds the model at ``path`` unless a SavedModel is already there."""
    if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        build_multiplier_model(path, factor)
    return path


def make_example(value: float) -> tf.train.Example:
    """A ``tf.train.Example`` with the one float feature the demo models read."""
    return tf.train.Example(features=tf.train.Features(feature={
        FEATURE: tf.train.Feature(float_list=tf.train.FloatList(value=[value]))}))


def write_examples(path: str, values: Iterable[float]) -> str:
    """Writes a TFRecord file of serialized demo Examples and returns its path."""
    with tf.io.TFRecordWriter(path) as writer:
        for value in values:
            writer.write(make_example(value).SerializeToString())
    return path
