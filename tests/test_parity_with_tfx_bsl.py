"""beam_infer's PredictionLogs equal tfx-bsl's wherever tfx-bsl runs, and are right where
it does not: every model kind users export, every signature kind, keyed and unkeyed."""

from __future__ import annotations

import math

import apache_beam as beam
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2
from tfx_bsl.public.beam import RunInference as TfxRunInference
from tfx_bsl.public.proto import model_spec_pb2

import beam_infer as bi
from tests.support import model_zoo
from tests.support.beam_helpers import run_collect

VALUES = (105.0, 108.0, 1000.0, 1013.0, -2.5, 0.0, 3.25)


def _spec(path: str, signatures: tuple[str, ...] = ()) -> model_spec_pb2.InferenceSpecType:
    return model_spec_pb2.InferenceSpecType(
        saved_model_spec=model_spec_pb2.SavedModelSpec(
            model_path=path, signature_name=list(signatures)))


def _input_of(log: prediction_log_pb2.PredictionLog) -> bytes:
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        (tensor,) = log.predict_log.request.inputs.values()
        return tensor.string_val[0]
    return getattr(log, kind).request.input.example_list.examples[0].SerializeToString()


def _run_both(tmp_path, path: str, signatures: tuple[str, ...], elements: list,
              with_tfx: bool = True) -> dict[str, list]:
    spec = _spec(path, signatures)

    def build(p: beam.Pipeline) -> dict[str, beam.PCollection]:
        unkeyed = p | "Unkeyed" >> beam.Create(elements)
        keyed = p | "Keyed" >> beam.Create([(f"key{i}", e) for i, e in enumerate(elements)])
        outputs = {
            "ours": unkeyed | "Ours" >> bi.RunInference(spec),
            "ours_keyed": keyed | "OursKeyed" >> bi.RunInference(spec),
        }
        if with_tfx:
            outputs["tfx"] = unkeyed | "Tfx" >> TfxRunInference(spec)
            outputs["tfx_keyed"] = keyed | "TfxKeyed" >> TfxRunInference(spec)
        return outputs

    outputs, _ = run_collect(build, str(tmp_path))
    return outputs


def _assert_equal_to_tfx(outputs: dict[str, list], n: int) -> None:
    ours = sorted(outputs["ours"], key=_input_of)
    tfx = sorted(outputs["tfx"], key=_input_of)
    assert len(ours) == n
    assert ours == tfx
    assert dict(outputs["ours_keyed"]) == dict(outputs["tfx_keyed"])
    assert len(outputs["ours_keyed"]) == n


def _predicted(log: prediction_log_pb2.PredictionLog, alias: str) -> list[float]:
    return list(tf.make_ndarray(log.predict_log.response.outputs[alias]).ravel())


@pytest.mark.parametrize(
    ("model", "signatures", "output"),
    [
        ("five", (), "output_0"),
        ("tf_module", (), "output_0"),
        ("tf_module", ("predict_two_outputs",), "y"),
        ("tf_keras", (), "output_0"),
        ("tf1", ("predict",), "outputs"),
    ],
    ids=["demo-tf-module", "tf-module", "tf-module-two-outputs", "tf-keras", "tf1-predict"],
)
def test_predict_logs_equal_tfx_bsl(zoo, tmp_path, model, signatures, output):
    examples = model_zoo.make_examples(VALUES)
    outputs = _run_both(tmp_path, getattr(zoo, model), signatures, examples)
    _assert_equal_to_tfx(outputs, len(VALUES))
    by_input = {_input_of(log): log for log in outputs["ours"]}
    for example, value in zip(examples, VALUES, strict=True):
        assert _predicted(by_input[example.SerializeToString()], output) == [5.0 * value]


def test_serialized_bytes_and_examples_give_the_same_logs(zoo, tmp_path):
    examples = model_zoo.make_examples(VALUES)
    serialized = [e.SerializeToString() for e in examples]
    from_bytes = _run_both(tmp_path / "bytes", zoo.five, (), serialized)
    _assert_equal_to_tfx(from_bytes, len(VALUES))
    from_protos = _run_both(tmp_path / "protos", zoo.five, (), examples, with_tfx=False)
    assert sorted(from_protos["ours"], key=_input_of) == sorted(from_bytes["ours"], key=_input_of)


def test_sequence_examples_equal_tfx_bsl(zoo, tmp_path):
    sequence_examples = model_zoo.make_sequence_examples(VALUES)
    outputs = _run_both(tmp_path, zoo.tf_module, ("serving_sequence",), sequence_examples)
    _assert_equal_to_tfx(outputs, len(VALUES))
    got = sorted(_predicted(log, "output_0")[0] for log in outputs["ours"])
    assert got == sorted(5.0 * v for v in VALUES)


@pytest.mark.parametrize(
    "signatures",
    [(), ("classify",), ("classify_scores_only",), ("regress",), ("classify", "regress"),
     ("regress", "classify_scores_only")],
    ids=["default-classify", "classify", "scores-only", "regress", "multi", "multi-reordered"],
)
def test_tf1_classify_regress_multi_logs_equal_tfx_bsl(zoo, tmp_path, signatures):
    outputs = _run_both(tmp_path, zoo.tf1, signatures, model_zoo.make_examples(VALUES))
    _assert_equal_to_tfx(outputs, len(VALUES))


def test_tf1_classify_log_holds_labels_and_scores(zoo, tmp_path):
    outputs = _run_both(tmp_path, zoo.tf1, ("classify",), model_zoo.make_examples([0.0, 1.0]),
                        with_tfx=False)
    by_input = {_input_of(log): log for log in outputs["ours"]}
    log = by_input[model_zoo.make_examples([1.0])[0].SerializeToString()]
    classes = log.classify_log.response.result.classifications[0].classes
    assert [c.label for c in classes] == ["neg", "pos"]
    pos = 1.0 / (1.0 + math.exp(-5.0))
    assert [c.score for c in classes] == pytest.approx([1.0 - pos, pos], rel=1e-6)


def test_multi_inference_log_names_each_signature(zoo, tmp_path):
    outputs = _run_both(tmp_path, zoo.tf1, ("classify", "regress"),
                        model_zoo.make_examples([2.0]), with_tfx=False)
    (log,) = outputs["ours"]
    results = log.multi_inference_log.response.results
    assert [r.model_spec.signature_name for r in results] == ["classify", "regress"]
    assert results[1].regression_result.regressions[0].value == pytest.approx(10.0)


def test_keras3_layers_in_tf_module_are_scored_where_tfx_bsl_fails(zoo, tmp_path):
    examples = model_zoo.make_examples(VALUES)
    with pytest.raises(Exception, match="Could not find variable"):
        _run_both(tmp_path / "tfx", zoo.keras3_examples, (), examples[:1])
    outputs = _run_both(tmp_path / "ours", zoo.keras3_examples, (), examples, with_tfx=False)
    got = {_input_of(log): _predicted(log, "output_0") for log in outputs["ours"]}
    assert got == {e.SerializeToString(): [5.0 * v] for e, v in zip(examples, VALUES,
                                                                      strict=True)}
    assert {k: _predicted(log, "output_0") for k, log in outputs["ours_keyed"]} == {
        f"key{i}": [5.0 * v] for i, v in enumerate(VALUES)}
