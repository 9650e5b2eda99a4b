"""Only versions that fit the pipeline's plan are served: refused ones are named and counted."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

import beam_infer as bi
from beam_infer._signatures import Feed, Operation, Signature, SignaturePlan, TensorInfo
from beam_infer.saved_model import _compatibility
from pipelines import streaming
from tests.support import model_zoo
from tests.support.beam_helpers import beam_infer_metrics, later, read_number_lines
from tests.support.publishing import publish

MANUAL = 600.0


def _plan(inputs, outputs, *, method="tensorflow/serving/predict", name="serving_default",
          feed=Feed.TENSORS) -> SignaturePlan:
    signature = Signature(
        name=name, method_name=method,
        inputs=tuple(TensorInfo(a, d, s) for a, d, s in inputs),
        outputs=tuple(TensorInfo(a, d, s) for a, d, s in outputs))
    return SignaturePlan(operation=Operation.PREDICT, signatures=(signature,),
                         input_alias=signature.inputs[0].alias, feed=feed)


BUILT = _plan([("x", tf.float32, (None, 3))], [("y", tf.float32, (None, 1))])


@pytest.mark.parametrize(("candidate", "expected"), [
    (_plan([("inputs", tf.float32, (None, 3))], [("y", tf.float32, (None, 1))]),
     ["signature 'serving_default' takes inputs inputs, the pipeline feeds x"]),
    (_plan([("x", tf.float64, (None, 3))], [("y", tf.float32, (None, 1))]),
     ["input 'x' of 'serving_default' is float64, the pipeline feeds float32"]),
    (_plan([("x", tf.float32, (None, 4))], [("y", tf.float32, (None, 1))]),
     ["input 'x' of 'serving_default' has shape [?,4], the pipeline feeds [?,3]"]),
    (_plan([("x", tf.float32, (None, 3))], [("z", tf.float32, (None, 1))]),
     ["output 'y' of 'serving_default' is missing (outputs: z)"]),
    (_plan([("x", tf.float32, (None, 3))], [("y", tf.int64, (None, 1))]),
     ["output 'y' of 'serving_default' is y: int64[?,1], was y: float32[?,1]"]),
    (_plan([("x", tf.float32, (None, 3))], [("y", tf.float32, (None, 1))], name="other"),
     ["signature 'serving_default' is missing"]),
])
def test_differences_name_what_the_pipeline_relies_on(candidate, expected):
    assert _compatibility.differences(BUILT, candidate) == expected


def test_looser_shapes_and_new_outputs_fit():
    looser = _plan([("x", tf.float32, (None, None))],
                   [("y", tf.float32, (None, 1)), ("extra", tf.string, (None,))])
    assert _compatibility.differences(BUILT, looser) == []
    unknown_rank = _plan([("x", tf.float32, None)], [("y", tf.float32, (None, 1))])
    assert _compatibility.differences(BUILT, unknown_rank) == []
    stricter = _plan([("x", tf.float32, (None, None))], [("y", tf.float32, (None, 1))])
    assert _compatibility.differences(stricter, BUILT) == [
        "input 'x' of 'serving_default' has shape [?,3], the pipeline feeds [?,?]"]


def _answer(model, value: float = 1.0):
    serialized = np.array([model_zoo.make_examples([value])[0].SerializeToString()],
                          dtype=object)
    (outputs,), version, events = model.call([("serving_default", {"examples": serialized})])
    return (version.version, float(outputs["output_0"].ravel()[0]),
            [(e.version, e.ok, e.incompatible) for e in events])


def test_a_version_with_a_renamed_input_is_refused_once_and_the_current_one_serves(
        base, caplog):
    model = bi.SavedModelHandler(
        bi.ModelSpec(model_path=base, poll_interval_secs=MANUAL)).load_model()
    _answer(model)
    publish(base, 2, input_alias="inputs")
    with caplog.at_level("ERROR", logger="beam_infer.saved_model._serving"):
        assert model.refresh()
    assert _answer(model) == (1, 5.0, [(2, False, True)])
    (line,) = [r.getMessage() for r in caplog.records]
    assert ("version 2 of " + repr(base) + " does not fit the signatures the pipeline was "
            "built with (version 1): signature 'serving_default' takes inputs inputs, the "
            "pipeline feeds examples. It is not served.") in line
    assert "\n" not in line
    assert model.refresh()
    assert _answer(model) == (1, 5.0, [])  # same files: not tried again


def test_a_worker_starting_after_an_incompatible_version_landed_serves_the_one_before(base):
    handler = bi.SavedModelHandler(bi.ModelSpec(model_path=base, poll_interval_secs=MANUAL))
    publish(base, 2, input_alias="inputs")
    model = handler.load_model()
    assert _answer(model) == (1, 5.0, [(2, False, True), (1, True, False)])


def test_a_plain_directory_re_exported_incompatibly_fails_its_load_with_the_difference(tmp_path):
    path = str(tmp_path / "model")
    model_zoo.renamed_input_examples(path, alias="examples")
    handler = bi.SavedModelHandler(bi.ModelSpec(model_path=path))
    model_zoo.renamed_input_examples(path, alias="inputs")  # replaced before workers start
    with pytest.raises(bi.IncompatibleVersionError,
                       match=r"the model now at .* takes inputs inputs, the pipeline feeds "
                             r"examples"):
        handler.load_model()


@pytest.mark.pipeline  # processes or a pipeline: kept out of the one-minute unit tier
def test_an_incompatible_version_published_mid_stream_is_refused_and_nothing_is_lost(tmp_path):
    base = str(tmp_path / "five")
    os.makedirs(base)
    publish(base, 1)
    rate, duration = 25, 6.0
    renamed = later(2.5, lambda: publish(base, 2, input_alias="inputs"))
    result = streaming.run(
        ["--model_path", base, "--output", str(tmp_path / "out"), "--rate", str(rate),
         "--duration_secs", str(duration), "--poll_interval_secs", "0.5"],
        save_main_session=False)
    renamed.join()
    rows = sorted(read_number_lines(str(tmp_path / "out")), key=lambda r: r["x"])
    assert [int(r["x"]) for r in rows] == list(range(len(rows)))  # each exactly once
    assert len(rows) >= rate * duration - 1
    assert {r["version"] for r in rows} == {1.0}
    assert all(r["y"] == 5 * r["x"] for r in rows)
    counters, _ = beam_infer_metrics(result)
    assert counters["model_load_failures"] == 1
    assert counters["incompatible_model_versions"] == 1
    assert "model_version_swaps" not in counters
