"""Dead letters on DirectRunner, in one process and in two worker processes: bad elements
of every kind mixed into batches of good ones lose nothing, and the good ones score as in
a clean run."""

from __future__ import annotations

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.metrics.metric import MetricsFilter

import beam_infer as bi
from tests.support import model_zoo
from tests.support.beam_helpers import run_collect

MULTI_PROCESS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def _feature(**kind) -> tf.train.Feature:
    return tf.train.Feature(**kind)


def _bad_elements() -> dict[str, object]:
    """One element of every kind the five model cannot score, by key."""
    def example(**features):
        return tf.train.Example(features=tf.train.Features(feature=features))

    return {
        "none": None,
        "text": "3.0",
        "garbage_bytes": b"\xff\xfe\x00garbage",
        "missing_feature": example(y=_feature(float_list=tf.train.FloatList(value=[1.0]))),
        "wrong_kind": example(x=_feature(int64_list=tf.train.Int64List(value=[3]))),
        "wrong_length": example(x=_feature(float_list=tf.train.FloatList(value=[1.0, 2.0]))),
        "sequence_example": model_zoo.make_sequence_examples([1.0])[0],
        "poison": model_zoo.make_examples([5000.0])[0],  # valid, but the model refuses it
    }


EXPECTED_STAGES = {
    "none": "decode", "text": "decode", "garbage_bytes": "decode", "sequence_example": "decode",
    "missing_feature": "validate", "wrong_kind": "validate", "wrong_length": "validate",
    "poison": "inference",
}


def _good(n: int) -> list[tuple[str, tf.train.Example]]:
    return [(f"good{i}", e) for i, e in enumerate(model_zoo.make_examples(range(n)))]


def _mixed(n: int) -> list[tuple[str, object]]:
    good, bad = _good(n), list(_bad_elements().items())
    mixed = []
    for i, pair in enumerate(good):  # spread the bad ones through the batches
        mixed.append(pair)
        if i % 5 == 2 and bad:
            mixed.append(bad.pop())
    return mixed + bad


@pytest.mark.parametrize("options", [[], MULTI_PROCESS], ids=["in_process", "multi_process"])
def test_keyed_bad_elements_of_every_kind_lose_nothing(fault_zoo, tmp_path, options):
    spec = bi.ModelSpec(model_path=fault_zoo.poison, batching=bi.BatchConfig(
        min_batch_size=8, max_batch_size=8))
    mixed = _mixed(40)

    def build(p):
        predictions, failed = (p | "Mixed" >> beam.Create(mixed)
                               | "Score" >> bi.RunInference(spec).with_dead_letters())
        clean = (p | "Clean" >> beam.Create(_good(40))
                 | "ScoreClean" >> bi.RunInference(spec))
        return {"predictions": predictions, "failed": failed, "clean": clean}

    outputs, result = run_collect(build, str(tmp_path), options)
    predictions, failed = outputs["predictions"], outputs["failed"]
    assert len(mixed) == len(predictions) + len(failed)
    assert sorted(predictions, key=_by_key) == sorted(outputs["clean"], key=_by_key)
    assert {d.key: d.stage.value for d in failed} == EXPECTED_STAGES
    by_key = {d.key: d for d in failed}
    assert all(by_key[k].element == (k, v) for k, v in _bad_elements().items() if v is not None)
    assert by_key["wrong_kind"].message == (
        "feature 'x' holds int64 values (int64_list); signature 'serving_default' parses it "
        "as float (float, 1 value). Write it as tf.train.Feature(float_list=...).")
    assert by_key["poison"].message.startswith(
        f"signature 'serving_default' of {fault_zoo.poison} failed on this element alone: "
        "assertion failed: [x must be below 1000]")

    counters = {m.key.metric.name: m.committed for m in result.metrics().query(
        MetricsFilter().with_namespace("beam_infer"))["counters"]}
    assert {k: v for k, v in counters.items() if k.startswith("failed_elements_")} == {
        "failed_elements_decode": 4, "failed_elements_validate": 3,
        "failed_elements_inference": 1}
    assert counters["isolation_model_calls"] >= 3
    assert counters.get("inference_retries", 0) == 0  # deterministic: never retried


def _by_key(pair):
    return pair[0]


def test_unkeyed_dead_letters_carry_the_element_and_no_key(zoo, tmp_path):
    values = [1.0, 2.0, 3.0]
    bad = model_zoo.make_examples([1.0])[0].SerializeToString()[:-2]  # truncated proto

    def build(p):
        logs, failed = (p | beam.Create([*model_zoo.make_examples(values), bad])
                        | bi.RunInference(bi.ModelSpec(model_path=zoo.five)).with_dead_letters())
        return {"logs": logs, "failed": failed}

    outputs, _ = run_collect(build, str(tmp_path))
    assert sorted(log.predict_log.response.outputs["output_0"].float_val[0]
                  for log in outputs["logs"]) == [5.0, 10.0, 15.0]
    (letter,) = outputs["failed"]
    assert (letter.element, letter.key, letter.stage) == (bad, None, bi.Stage.DECODE)


def test_without_dead_letters_a_bad_element_stops_the_pipeline_naming_its_key(zoo, tmp_path):
    rows = [("row-1", model_zoo.make_examples([1.0])[0]), ("row-2", tf.train.Example())]

    def build(p):
        return {"logs": p | beam.Create(rows) | bi.RunInference(bi.ModelSpec(model_path=zoo.five))}

    with pytest.raises(bi.InferenceError, match="element with key 'row-2' failed at stage "
                                                "validate: InputError: feature 'x' is missing"):
        run_collect(build, str(tmp_path))


def test_a_model_path_that_disappears_gives_a_load_error_naming_it(zoo, tmp_path):
    import shutil

    path = str(tmp_path / "model")
    shutil.copytree(zoo.five, path)
    transform = bi.RunInference(bi.ModelSpec(model_path=path))  # checked while it exists
    shutil.rmtree(path)

    def build(p):
        return {"logs": p | beam.Create(model_zoo.make_examples([1.0])) | transform}

    with pytest.raises(bi.ModelLoadError, match=f"model path '{path}' no longer exists"):
        run_collect(build, str(tmp_path / "out"))


def test_a_timed_out_call_is_retried_in_a_pipeline_and_counted(fault_zoo, tmp_path):
    retry = bi.RetryConfig(max_attempts=2, initial_backoff_secs=0.01, call_timeout_secs=1.0)
    spec = bi.ModelSpec(model_path=fault_zoo.slow)

    def build(p):
        logs, failed = (p | beam.Create(model_zoo.make_examples([1.0, 2.0]))
                        | bi.RunInference(spec, retry=retry).with_dead_letters())
        return {"logs": logs, "failed": failed}

    outputs, result = run_collect(build, str(tmp_path))
    assert sorted(log.predict_log.response.outputs["output_0"].float_val[0]
                  for log in outputs["logs"]) == [5.0, 10.0]
    assert outputs["failed"] == []
    counters = {m.key.metric.name: m.committed for m in result.metrics().query(
        MetricsFilter().with_namespace("beam_infer"))["counters"]}
    assert counters["inference_retries"] == 1
    assert "isolation_model_calls" not in counters  # a transient failure is not bisected
