"""The seed tutorial's demo models and data, built by code: ``y = 5x`` and ``y = 10x``.

Each is a SavedModel whose ``serving_default`` signature takes serialized
``tf.train.Example``s (input ``examples``, DT_STRING) holding one float feature ``x``,
parses them in the graph and returns ``output_0`` (float32 ``[batch, 1]``) — the
signature of the blog post's ``serve_tf_examples_fn``. The weights are set exactly
rather than trained, so the answers are exact and the build takes a second.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable

import tensorflow as tf

FEATURE = "x"
INPUT_ALIAS = "examples"
OUTPUT_ALIAS = "output_0"
FIVE = 5.0
TEN = 10.0
# The seed's BigQuery table maths.maths_problems_1 (key STRING, value FLOAT64), bundled.
QUESTIONS_CSV = os.path.join(os.path.dirname(__file__), "data", "maths_problems.csv")


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


def five_model(work_dir: str) -> str:
    """The demo ``y = 5x`` model under ``work_dir`` (built unless present)."""
    return ensure_multiplier_model(os.path.join(work_dir, "five_model"), FIVE)


def ensure_demo_models(work_dir: str) -> dict[float, str]:
    """Builds the ``y = 5x`` and ``y = 10x`` models under ``work_dir`` unless present.

    Returns:
        ``{5.0: path_of_five, 10.0: path_of_ten}``.
    """
    return {factor: ensure_multiplier_model(os.path.join(work_dir, name), factor)
            for factor, name in ((FIVE, "five_model"), (TEN, "ten_model"))}


def read_questions(path: str = QUESTIONS_CSV) -> list[tuple[str, float]]:
    """The bundled maths questions as ``(key, value)`` pairs, in file order."""
    with open(path, newline="") as f:
        return [(row["key"], float(row["value"])) for row in csv.DictReader(f)]


def example_value(example: tf.train.Example | bytes) -> float:
    """The one float a demo Example holds (the inverse of ``make_example``)."""
    if isinstance(example, bytes):
        example = tf.train.Example.FromString(example)
    return example.features.feature[FEATURE].float_list.value[0]


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
