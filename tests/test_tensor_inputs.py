"""Signatures that take named tensors: element kinds, casts, shapes, padding, logs, lean output."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.ml.inference.base import PredictionResult

import beam_infer as bi
from tests.support import model_zoo
from tests.support.beam_helpers import run_collect


def _handler(path: str, *signatures: str, **options) -> bi.SavedModelHandler:
    output = options.pop("output", bi.Output.PREDICTION_LOG)
    return bi.SavedModelHandler(bi.ModelSpec(model_path=path, signature_names=signatures,
                                             **options), output=output)


def _run(handler: bi.SavedModelHandler, batch: list) -> list:
    return list(handler.run_inference(batch, handler.load_model()))


def _output(log, alias: str) -> np.ndarray:
    return tf.make_ndarray(log.predict_log.response.outputs[alias])


def _request(log, alias: str) -> np.ndarray:
    return tf.make_ndarray(log.predict_log.request.inputs[alias])


def test_keras3_export_scores_arrays_lists_and_tf_tensors(zoo):
    handler = _handler(zoo.keras3_dense)
    assert handler.plan.feed is bi.Feed.TENSORS
    logs = _run(handler, [np.array([1.0], np.float32), [2.0], tf.constant([3.0])])
    assert [_output(log, "output_0").tolist() for log in logs] == [[[5.0]], [[10.0]], [[15.0]]]
    for log, value in zip(logs, (1.0, 2.0, 3.0), strict=True):
        assert log.predict_log.request.inputs["x"] == tf.make_tensor_proto(
            np.array([[value]], np.float32))
        assert log.predict_log.request.model_spec.signature_name == "serving_default"
        assert log.predict_log.response.model_spec.signature_name == "serving_default"


def test_multi_input_dict_elements_give_every_output(zoo):
    handler = _handler(zoo.tensors)
    logs = _run(handler, [
        {"x": np.array([1.0, 2.0], np.float32), "count": 2, "label": "ab"},
        {"x": [0.5, 0.5], "count": np.int64(1), "label": b"c"},
    ])
    assert [_output(log, "total").tolist() for log in logs] == [[30.0], [5.0]]
    assert _output(logs[0], "doubled").tolist() == [[2.0, 4.0]]
    assert [_output(log, "shout").tolist() for log in logs] == [[b"AB"], [b"C"]]
    assert set(logs[0].predict_log.request.inputs) == {"x", "count", "label"}
    assert _request(logs[0], "label").tolist() == [b"ab"]
    assert _request(logs[1], "count").tolist() == [1]


def test_scalar_elements_feed_a_one_dimensional_input(zoo):
    logs = _run(_handler(zoo.tensors, "scalar"), [1.5, np.float32(2.0), np.array(-1.0)])
    assert [_output(log, "y").tolist() for log in logs] == [[7.5], [10.0], [-5.0]]
    assert _request(logs[0], "v").tolist() == [1.5]


def test_raw_string_tensors_and_serialized_bytes_share_a_string_input(zoo):
    handler = _handler(zoo.tensors, "text_length")
    assert handler.plan.feed is bi.Feed.EXAMPLES
    logs = _run(handler, ["héllo", np.array(b"ab", dtype=object), {"text": "xyz"}])
    assert [_output(log, "length").tolist() for log in logs] == [[5], [2], [3]]
    assert _request(logs[0], "text").tolist() == ["héllo".encode()]
    (as_bytes,) = _run(handler, [b"ab"])  # bytes: the serialized-example path, same tensor
    assert as_bytes == logs[1]


def test_missing_and_unknown_keys_list_the_aliases(zoo):
    handler = _handler(zoo.tensors)
    with pytest.raises(bi.InputError) as error:
        _run(handler, [{"x": [1.0, 2.0], "count": 1, "labels": "a"}])
    assert str(error.value) == (
        "signature 'serving_default' takes inputs count, label, x; an element has keys count, "
        "labels, x (missing label; unknown labels). Key each element by the signature's input "
        "aliases."
    )
    with pytest.raises(bi.InputError) as error:
        _run(handler, [np.zeros(2, np.float32)])
    assert str(error.value) == (
        "signature 'serving_default' takes 3 inputs (count, label, x), so each element must "
        "be a dict keyed by those aliases; got numpy.ndarray."
    )


def test_lossless_casts_are_made(zoo):
    handler = _handler(zoo.tensors)
    logs = _run(handler, [{"x": np.array([1, 2], np.int64), "count": np.int8(1),
                           "label": np.str_("a")},
                          {"x": np.array([0.5, 0.25]), "count": 2.0, "label": "b"}])
    assert [_output(log, "total").tolist() for log in logs] == [[15.0], [7.5]]
    assert _request(logs[1], "x").dtype == np.float32


def test_float64_rows_score_on_a_float32_model_as_keras_predict_takes_them(zoo):
    # numpy's default dtype: np.array([0.1]) is float64, which Keras predict and TF
    # Serving's REST API round to the model's float32.
    logs = _run(_handler(zoo.keras3_dense), [np.array([0.1]), np.array([2.5])])
    assert [_output(log, "output_0").ravel().tolist() for log in logs] == [
        [pytest.approx(0.5)], [12.5]]
    assert _request(logs[0], "x").dtype == np.float32


def test_same_kind_casts_are_made_when_every_value_fits(zoo):
    logs = _run(_handler(zoo.tokens), [np.array([1, 2], np.int64)])
    assert _request(logs[0], "tokens").dtype == np.int32
    with pytest.raises(bi.InputError) as error:
        _run(_handler(zoo.tokens), [np.array([1, 2**40], np.int64)])
    assert str(error.value) == (
        "input 'tokens' of signature 'serving_default' takes int32, but got int64 values and "
        "1099511627776 is outside int32's range [-2147483648, 2147483647]; casts within a "
        "kind are made only when every value fits (ModelSpec(strict_input_casts=False), the "
        "default). Pass int32 values (e.g. np.asarray(value, dtype=np.int32)) if rounding is "
        "what you want."
    )


def test_finite_values_must_stay_finite(zoo):
    with pytest.raises(bi.InputError) as error:
        _run(_handler(zoo.keras3_dense), [np.array([1e300])])
    assert str(error.value) == (
        "input 'x' of signature 'serving_default' takes float32, but got float64 values and "
        "1e+300 is outside float32's range; casts within a kind are made only when every "
        "value fits (ModelSpec(strict_input_casts=False), the default). Pass float32 values "
        "(e.g. np.asarray(value, dtype=np.float32)) if rounding is what you want."
    )
    # Non-finite values are kept as they are: nan and inf exist in float32 too.
    (log,) = _run(_handler(zoo.keras3_dense), [np.array([np.inf])])
    assert np.isinf(_output(log, "output_0")).all()


def test_strict_input_casts_refuse_every_lossy_cast_and_say_so(zoo):
    handler = _handler(zoo.keras3_dense, strict_input_casts=True)
    with pytest.raises(bi.InputError) as error:
        _run(handler, [np.array([0.1])])
    assert str(error.value) == (
        "input 'x' of signature 'serving_default' takes float32, but got float64 values and "
        "float32 cannot hold 0.1 exactly; ModelSpec(strict_input_casts=True) makes only "
        "lossless casts (the default, False, also casts within a kind when every value "
        "fits). Pass float32 values (e.g. np.asarray(value, dtype=np.float32)) if rounding "
        "is what you want."
    )
    (log,) = _run(handler, [np.array([0.5])])  # lossless: still cast
    assert _output(log, "output_0").ravel().tolist() == [2.5]


def test_lossy_casts_across_kinds_are_refused_with_the_value(zoo):
    handler = _handler(zoo.keras3_dense)
    with pytest.raises(bi.InputError) as error:
        _run(_handler(zoo.tensors), [{"x": [1.0, 2.0], "count": 1.5, "label": "a"}])
    assert str(error.value) == (
        "input 'count' of signature 'serving_default' takes int64, but got float64 values and "
        "int64 cannot hold 1.5 exactly; a cast across kinds (float64 to int64) is made only "
        "when no value changes. Pass int64 values (e.g. np.asarray(value, dtype=np.int64)) "
        "if rounding is what you want."
    )
    with pytest.raises(bi.InputError) as error:
        _run(handler, [np.array(["1"])])
    assert str(error.value) == (
        "input 'x' of signature 'serving_default' takes float32, but got str32 values; "
        "strings and objects are not converted to numbers. Parse them into float32 values "
        "first."
    )
    with pytest.raises(bi.InputError) as error:
        _run(_handler(zoo.tensors, "text_length"), [np.array([1.5])])
    assert str(error.value) == (
        "input 'text' of signature 'text_length' takes strings, but got float64 values; only "
        "str and bytes go into a string input. Convert the values to text first "
        "(e.g. str(value))."
    )


def test_python_floats_round_to_the_signature_dtype(zoo):
    (log,) = _run(_handler(zoo.keras3_dense), [[0.1]])
    assert _request(log, "x").tolist() == [[np.float32(0.1)]]


def test_a_wrong_shape_names_both_shapes(zoo):
    with pytest.raises(bi.InputError) as error:
        _run(_handler(zoo.keras3_dense), [np.array([1.0, 2.0], np.float32)])
    assert str(error.value) == (
        "input 'x' of signature 'serving_default' takes elements of shape [1] (the signature's "
        "x: float32[?,1] without its batch dimension); element 0 of the batch has shape [2]. "
        "Give each element the shape of one example, without a batch dimension."
    )


def test_variable_lengths_without_padding_say_how_to_enable_it(zoo):
    with pytest.raises(bi.InputError) as error:
        _run(_handler(zoo.tokens), [[1, 2, 3], [4, 5]])
    assert str(error.value) == (
        "input 'tokens' of signature 'serving_default' got elements of shapes [2] and [3] in "
        "one batch; the signature takes tokens: int32[?,?], whose variable dimensions must "
        "agree within a batch. Set ModelSpec(pad_variable_length_inputs=True) to pad each "
        "batch to its largest element (zeros, empty strings), as TF Serving's "
        "pad_variable_length_inputs does."
    )


def test_padding_fills_to_the_longest_and_logs_each_element_unpadded(zoo):
    handler = _handler(zoo.tokens, pad_variable_length_inputs=True)
    logs = _run(handler, [[1, 2, 3], np.array([4, 5], np.int32), [7]])
    assert [_output(log, "total").tolist() for log in logs] == [[6], [9], [7]]
    assert [_output(log, "length").tolist() for log in logs] == [[3], [2], [1]]
    assert [_request(log, "tokens").tolist() for log in logs] == [[[1, 2, 3]], [[4, 5]], [[7]]]


def test_lean_output_is_the_element_and_numpy_rows(zoo):
    element = {"x": np.array([1.0, 2.0], np.float32), "count": 1, "label": "a"}
    (result,) = _run(_handler(zoo.tensors, output=bi.Output.RESULT), [element])
    assert isinstance(result, PredictionResult)
    assert result.example is element
    assert sorted(result.inference) == ["doubled", "shout", "total"]
    assert result.inference["doubled"].tolist() == [2.0, 4.0]
    assert result.inference["total"] == np.float32(15.0)
    (five,) = _run(_handler(zoo.five, output=bi.Output.RESULT),
                   model_zoo.make_examples([2.0]))
    assert five.inference["output_0"].tolist() == [10.0]


def test_lean_output_of_multi_inference_is_keyed_by_signature(zoo):
    handler = _handler(zoo.tf1, "classify", "regress", output=bi.Output.RESULT)
    (result,) = _run(handler, model_zoo.make_examples([1.0]))
    assert sorted(result.inference) == ["classify/classes", "classify/scores",
                                        "regress/outputs"]
    assert result.inference["regress/outputs"].tolist() == [5.0]


def test_options_are_checked_when_built(zoo):
    with pytest.raises(bi.ConfigurationError) as error:
        bi.RunInference(bi.ModelSpec(model_path=zoo.keras3_dense), output="result")
    assert str(error.value) == (
        "output must be a beam_infer.Output; got 'result'. Pass "
        "output=bi.Output.PREDICTION_LOG or output=bi.Output.RESULT."
    )
    with pytest.raises(bi.ConfigurationError) as error:
        bi.ModelSpec(model_path=zoo.tokens, pad_variable_length_inputs="yes")
    assert str(error.value) == (
        "ModelSpec.pad_variable_length_inputs must be True or False; got 'yes'."
    )


def test_num_bytes_counts_tensor_values(zoo):
    handler = _handler(zoo.tensors)
    batch = [{"x": np.zeros(2, np.float32), "count": np.int64(1), "label": "abc"}]
    assert handler.get_num_bytes(batch) == 8 + 8 + 3


@pytest.mark.pipeline  # processes or a pipeline: kept out of the one-minute unit tier
def test_pipeline_keyed_and_unkeyed_logs_and_results(zoo, tmp_path):
    spec = bi.ModelSpec(model_path=zoo.keras3_dense)
    arrays = [np.array([float(v)], np.float32) for v in range(5)]

    def build(p: beam.Pipeline) -> dict[str, beam.PCollection]:
        unkeyed = p | "Unkeyed" >> beam.Create(arrays)
        keyed = p | "Keyed" >> beam.Create([(f"k{i}", a) for i, a in enumerate(arrays)])
        return {
            "logs": unkeyed | "Logs" >> bi.RunInference(spec),
            "keyed_logs": keyed | "KeyedLogs" >> bi.RunInference(spec),
            "results": unkeyed | "Results" >> bi.RunInference(spec, output=bi.Output.RESULT),
            "keyed_results": keyed | "KeyedResults" >> bi.RunInference(
                spec, output=bi.Output.RESULT),
        }

    outputs, _ = run_collect(build, str(tmp_path))
    assert sorted(_output(log, "output_0").item() for log in outputs["logs"]) == \
        [0.0, 5.0, 10.0, 15.0, 20.0]
    assert {k: _output(log, "output_0").item() for k, log in outputs["keyed_logs"]} == \
        {f"k{i}": 5.0 * i for i in range(5)}
    assert sorted((r.example.item(), r.inference["output_0"].item())
                  for r in outputs["results"]) == [(i, 5.0 * i) for i in range(5)]
    assert {k: r.inference["output_0"].item() for k, r in outputs["keyed_results"]} == \
        {f"k{i}": 5.0 * i for i in range(5)}


def test_tf1_signature_mixing_examples_and_numbers_takes_dicts(zoo):
    handler = _handler(zoo.tf1, "two_inputs")
    assert handler.plan.feed is bi.Feed.TENSORS
    example = model_zoo.make_examples([2.0])[0].SerializeToString()
    (log,) = _run(handler, [{"examples": example, "extra": [0.5]}])
    assert _output(log, "outputs").tolist() == [[10.5]]
    assert _request(log, "examples").tolist() == [example]
