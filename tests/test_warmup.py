"""Warm-up requests: written from sample inputs, replayed on every load, failing loudly."""

from __future__ import annotations

import json
import os
import shutil

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.metrics.metric import MetricsFilter
from tensorflow_serving.apis import prediction_log_pb2

import beam_infer as bi
from beam_infer._cli import main as cli
from beam_infer.saved_model._loading import LoadedModel
from pipelines import models
from tests.support import model_zoo
from tests.support.beam_helpers import run_collect

WARMUP = os.path.join("assets.extra", "tf_serving_warmup_requests")


@pytest.fixture
def five(tmp_path) -> str:
    return models.build_multiplier_model(str(tmp_path / "five"), 5.0)


def _load(path: str, signature: str = "serving_default") -> LoadedModel:
    return LoadedModel(path, ["serve"], [signature])


def test_written_requests_are_replayed_on_load(five):
    target = bi.write_warmup_requests(five, model_zoo.make_examples([1.0, 2.0, 3.0]))
    assert target == os.path.join(five, WARMUP)
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
               for r in tf.data.TFRecordDataset(target)]
    assert [r.predict_log.request.model_spec.signature_name for r in records] == \
        ["serving_default"] * 3
    assert _load(five).warmup_records == 3


def test_pipeline_replays_warmup_once_per_load(five, tmp_path):
    bi.write_warmup_requests(five, model_zoo.make_examples([1.0, 2.0]))
    outputs, result = run_collect(
        lambda p: {"logs": p | beam.Create(model_zoo.make_examples([1.0, 2.0, 3.0]))
                   | bi.RunInference(bi.ModelSpec(model_path=five))},
        str(tmp_path / "out"))
    assert len(outputs["logs"]) == 3
    counters = {m.key.metric.name: m.committed for m in result.metrics().query(
        MetricsFilter().with_namespace("beam_infer"))["counters"]}
    assert counters["warmup_records_replayed"] == 2


def test_classify_requests_feed_examples_to_the_signature(tmp_path):
    path = model_zoo.tf1_estimator_style(tmp_path / "tf1")
    bi.write_warmup_requests(path, model_zoo.make_examples([1.0]), signature_name="classify")
    [record] = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
                for r in tf.data.TFRecordDataset(os.path.join(path, WARMUP))]
    assert record.WhichOneof("log_type") == "classify_log"
    assert _load(path, "classify").warmup_records == 1


def test_a_failing_record_fails_the_load_naming_record_and_signature(five):
    bi.write_warmup_requests(five, [model_zoo.make_examples([1.0])[0].SerializeToString(),
                                    b"not an example"])
    with pytest.raises(bi.ModelLoadError) as error:
        _load(five)
    message = str(error.value)
    assert message.startswith(
        f"warm-up record 1 (predict_log, signature 'serving_default') of {five!r} failed: "
        "InvalidArgumentError: ")
    assert message.endswith(
        "Fix or regenerate assets.extra/tf_serving_warmup_requests "
        "(beam_infer.write_warmup_requests writes one from sample inputs); the model was "
        "not put into service.")


def test_more_than_1000_records_fail_the_load(five):
    path = os.path.join(five, WARMUP)
    os.makedirs(os.path.dirname(path))
    record = prediction_log_pb2.PredictionLog()
    record.predict_log.request.model_spec.signature_name = "serving_default"
    with tf.io.TFRecordWriter(path) as writer:
        for _ in range(1001):
            writer.write(record.SerializeToString())
    with pytest.raises(bi.ModelLoadError) as error:
        _load(five)
    assert str(error.value) == (
        f"warm-up file {path!r} holds more than 1000 records, TF Serving's limit. Keep at "
        "most 1000 representative requests."
    )


def test_unsupported_log_type_fails_the_load(five):
    path = os.path.join(five, WARMUP)
    os.makedirs(os.path.dirname(path))
    record = prediction_log_pb2.PredictionLog()
    record.session_run_log.SetInParent()
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(record.SerializeToString())
    with pytest.raises(bi.ModelLoadError) as error:
        _load(five)
    assert str(error.value).startswith(
        f"warm-up record 0 (session_run_log, signature 'serving_default') of {five!r} "
        "failed: ValueError: unsupported warm-up log type 'session_run_log'; use "
        "predict_log, classify_log, regress_log or multi_inference_log.")


@pytest.mark.parametrize(("inputs", "signature", "message"), [
    ([b"x"], "predikt",
     "signature 'predikt' not found in <ROOT>; available: serving_default. Pass one of "
     "them as signature_name=..."),
    ([b"x"] * 1001, "serving_default",
     "write_warmup_requests needs 1 to 1000 sample inputs; got 1001. Pass a few "
     "representative inputs."),
])
def test_write_warmup_requests_errors(five, inputs, signature, message):
    with pytest.raises(bi.ConfigurationError) as error:
        bi.write_warmup_requests(five, inputs, signature_name=signature)
    assert str(error.value).replace(five, "<ROOT>") == message


def test_warmup_command_writes_the_file_from_a_tfrecord(five, tmp_path, capsys):
    samples = models.write_examples(str(tmp_path / "samples.tfrecord"), [1.0, 2.0])
    assert cli(["warmup", five, "--from", samples]) == 0
    target = os.path.join(five, WARMUP)
    assert capsys.readouterr().out == f"wrote 2 warm-up requests to {target}\n"
    assert _load(five).warmup_records == 2


def test_warmup_command_reports_usage_errors(five, tmp_path, capsys):
    missing = str(tmp_path / "none*.tfrecord")
    assert cli(["warmup", five, "--from", missing]) == 1
    assert capsys.readouterr().err == (
        f"beam-infer warmup: error: no file matches --from {missing!r}; pass a JSON lines "
        "file, a .npy or .npz file, or a TFRecord of serialized tf.train.Example.\n")
    samples = models.write_examples(str(tmp_path / "s.tfrecord"), [1.0])
    assert cli(["warmup", five, "--from", samples, "--signature_name", "nope"]) == 1
    assert "signature 'nope' not found" in capsys.readouterr().err


@pytest.fixture
def dense(zoo, tmp_path) -> str:
    """A private copy of the Keras 3 export (float32 x [None, 1]), to write into."""
    return shutil.copytree(zoo.keras3_dense, tmp_path / "dense").as_posix()


@pytest.fixture
def tensors(zoo, tmp_path) -> str:
    """A private copy of the multi-input model (x float32[?,2], count int64, label string)."""
    return shutil.copytree(zoo.tensors, tmp_path / "tensors").as_posix()


def _records(target: str) -> list[prediction_log_pb2.PredictionLog]:
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(target)]


def test_tensor_signatures_get_predict_requests_from_elements(dense):
    # numpy's default float64 is cast to the model's float32, as RunInference casts it.
    target = bi.write_warmup_requests(dense, [np.array([0.5]), [2.0]])
    records = _records(target)
    assert [tf.make_ndarray(r.predict_log.request.inputs["x"]).tolist() for r in records] \
        == [[[0.5]], [[2.0]]]
    assert {tf.make_ndarray(r.predict_log.request.inputs["x"]).dtype for r in records} == \
        {np.dtype(np.float32)}
    assert _load(dense).warmup_records == 2


def test_tensor_requests_from_stacked_arrays_one_per_row(dense, tensors):
    bi.write_warmup_requests(dense, np.zeros((3, 1)))
    assert _load(dense).warmup_records == 3
    target = bi.write_warmup_requests(tensors, {
        "x": np.ones((2, 2), np.float32), "count": np.array([1, 2]),
        "label": np.array(["a", "b"])})
    (first, second) = _records(target)
    assert sorted(first.predict_log.request.inputs) == ["count", "label", "x"]
    assert tf.make_ndarray(second.predict_log.request.inputs["count"]).tolist() == [2]
    assert _load(tensors).warmup_records == 2


def test_tensor_samples_that_do_not_fit_name_the_sample(dense):
    with pytest.raises(bi.ConfigurationError) as error:
        bi.write_warmup_requests(dense, [np.array([0.5]), np.array([1.0, 2.0])])
    assert str(error.value).replace(dense, "<ROOT>") == (
        "warm-up sample 1 does not fit signature 'serving_default' of <ROOT>: input 'x' of "
        "signature 'serving_default' takes elements of shape [1] (the signature's x: "
        "float32[?,1] without its batch dimension); element 0 of the batch has shape [2]. "
        "Give each element the shape of one example, without a batch dimension.")


def test_warmup_command_reads_json_lines_and_numpy_files(dense, tensors, tmp_path, capsys):
    lines = tmp_path / "samples.jsonl"
    lines.write_text("[0.5]\n[1.5]\n\n[2.5]\n")
    assert cli(["warmup", dense, "--from", str(lines)]) == 0
    assert capsys.readouterr().out == \
        f"wrote 3 warm-up requests to {os.path.join(dense, WARMUP)}\n"
    assert _load(dense).warmup_records == 3

    keyed = tmp_path / "keyed.jsonl"
    keyed.write_text(json.dumps({"x": [1.0, 2.0], "count": 3, "label": "a"}) + "\n")
    assert cli(["warmup", tensors, "--from", str(keyed)]) == 0
    assert _load(tensors).warmup_records == 1

    np.save(tmp_path / "rows.npy", np.zeros((4, 1), np.float32))
    assert cli(["warmup", dense, "--from", str(tmp_path / "rows.npy")]) == 0
    assert _load(dense).warmup_records == 4
    np.savez(tmp_path / "rows.npz", x=np.ones((2, 2)), count=np.array([1, 1]),
             label=np.array(["a", "b"]))
    assert cli(["warmup", tensors, "--from", str(tmp_path / "rows.npz")]) == 0
    assert _load(tensors).warmup_records == 2
