"""``ReadTFRecordBatches``: TFRecord files read in batches by tf.data, for ``on_batches()``."""

from __future__ import annotations

import apache_beam as beam
import pytest
import tensorflow as tf

import beam_infer as bi
from tests.support import model_zoo
from tests.support.beam_helpers import run_collect


def _per_element(handler: bi.SavedModelHandler, elements: list) -> list[bytes]:
    return [log.SerializeToString()
            for log in handler.run_inference(elements, handler.load_model())]


def _serialized(logs) -> list[bytes]:
    return [log.SerializeToString() for log in logs]


def test_tfrecord_files_read_in_batches_score_like_the_records_one_by_one(zoo, work_dir):
    records = [e.SerializeToString() for e in model_zoo.make_examples(range(7))]
    for shard in range(2):
        with tf.io.TFRecordWriter(str(work_dir / f"in-{shard}.tfrecord")) as writer:
            for record in records[shard::2]:
                writer.write(record)
    spec = bi.ModelSpec(model_path=zoo.five)

    def build(p: beam.Pipeline) -> dict[str, beam.PCollection]:
        batches = p | bi.ReadTFRecordBatches(str(work_dir / "in-*.tfrecord"), batch_size=3)
        return {"sizes": batches | beam.Map(len),
                "logs": batches | bi.RunInference(spec).on_batches()}

    outputs, _ = run_collect(build, str(work_dir / "out"))
    assert sorted(outputs["sizes"]) == [1, 3, 3]  # 4 and 3 records per file
    handler = bi.SavedModelHandler(spec)
    assert sorted(b for logs in outputs["logs"] for b in _serialized(logs)) == sorted(
        _per_element(handler, records))


@pytest.mark.parametrize(("options", "message"), [
    ({"batch_size": 0}, "ReadTFRecordBatches batch_size must be a positive integer; got 0. "
                        "Pass the records per batch, e.g. batch_size=1024."),
    ({"batch_size": 8, "compression_type": "gzip"},
     "ReadTFRecordBatches compression_type must be '', 'GZIP' or 'ZLIB'; got 'gzip'."),
])
def test_batched_read_options_are_checked_when_the_pipeline_is_built(options, message):
    with pytest.raises(bi.ConfigurationError) as error:
        bi.ReadTFRecordBatches("in-*.tfrecord", **options)
    assert str(error.value) == message
