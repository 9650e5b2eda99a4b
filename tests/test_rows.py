"""PredictionLog -> plain rows: the function on real logs of every API, and the transform."""

from __future__ import annotations

import math

import apache_beam as beam
import pytest
from tensorflow_serving.apis import prediction_log_pb2

import beam_infer as bi
from tests.support import model_zoo
from tests.support.beam_helpers import run_collect


def _logs(model_path: str, values: list[float], *signature_names: str) -> list:
    handler = bi.SavedModelHandler(bi.ModelSpec(model_path=model_path,
                                                signature_names=signature_names))
    return list(handler.run_inference(model_zoo.make_examples(values), handler.load_model()))


def test_predict_log_row_has_features_and_sliced_outputs(zoo):
    (log,) = _logs(zoo.five, [105.0])
    assert bi.prediction_log_to_row(log, key=b"first_question") == {
        "key": "first_question",
        "input": {"x": [105.0]},
        "output": {"output_0": [525.0]},
        "model_version": None,
    }


def test_predict_log_with_two_outputs(zoo):
    (log,) = _logs(zoo.tf_module, [3.0], "predict_two_outputs")
    row = bi.prediction_log_to_row(log)
    assert row["key"] is None
    assert sorted(row["output"]) == ["y", "y_squared"]
    assert row["output"]["y"] == [15.0]
    assert row["output"]["y_squared"] == [225.0]


def test_classify_regress_and_multi_inference_rows(zoo):
    (classify,) = _logs(zoo.tf1, [1.0], "classify")
    row = bi.prediction_log_to_row(classify, key="k")
    assert row["input"] == {"x": [1.0]}
    assert row["output"]["classes"] == ["neg", "pos"]
    assert math.isclose(sum(row["output"]["scores"]), 1.0, rel_tol=1e-6)

    (regress,) = _logs(zoo.tf1, [2.0], "regress")
    assert bi.prediction_log_to_row(regress)["output"] == {"outputs": [10.0]}

    (multi,) = _logs(zoo.tf1, [2.0], "classify", "regress")
    output = bi.prediction_log_to_row(multi)["output"]
    assert sorted(output) == ["classify", "regress"]
    assert output["regress"] == {"outputs": [10.0]}
    assert output["classify"]["classes"] == ["neg", "pos"]


def test_model_version_from_the_log_wins_over_the_default(zoo):
    (log,) = _logs(zoo.five, [1.0])
    assert bi.prediction_log_to_row(log, model_version="7")["model_version"] == "7"
    log.predict_log.request.model_spec.version.value = 3
    assert bi.prediction_log_to_row(log, model_version="7")["model_version"] == "3"


def test_non_example_predict_input_is_given_as_text(zoo):
    (log,) = _logs(zoo.five, [1.0])
    log.predict_log.request.inputs["examples"].string_val[0] = b"\xff\xfe not an example"
    row = bi.prediction_log_to_row(log)
    assert row["input"] == {"examples": "b64://4gbm90IGFuIGV4YW1wbGU="}


def test_wrong_element_says_where_to_apply_it():
    with pytest.raises(bi.InputError) as error:
        bi.prediction_log_to_row({"x": 1})
    assert str(error.value) == (
        "PredictionLogToRows takes PredictionLog or (key, PredictionLog) elements; got "
        "dict. Apply it right after beam_infer.RunInference.")
    with pytest.raises(bi.InputError, match="holds no inference"):
        bi.prediction_log_to_row(prediction_log_pb2.PredictionLog())


def test_transform_handles_keyed_and_unkeyed_logs(zoo, tmp_path):
    examples = model_zoo.make_examples([1.0, 2.0])

    def build(p):
        keyed = (p | "Keyed" >> beam.Create([(b"a", examples[0]), (b"b", examples[1])])
                 | "InferKeyed" >> bi.RunInference(bi.ModelSpec(model_path=zoo.five))
                 | "RowsKeyed" >> bi.PredictionLogToRows(model_version="1"))
        plain = (p | "Plain" >> beam.Create(examples)
                 | "InferPlain" >> bi.RunInference(bi.ModelSpec(model_path=zoo.ten))
                 | "RowsPlain" >> bi.PredictionLogToRows())
        return {"keyed": keyed, "plain": plain}

    out, _ = run_collect(build, str(tmp_path))
    assert sorted((r["key"], r["output"]["output_0"], r["model_version"]) for r in out["keyed"]) \
        == [("a", [5.0], "1"), ("b", [10.0], "1")]
    plain = [(r["key"], r["input"]["x"], r["output"]["output_0"]) for r in out["plain"]]
    assert sorted(plain, key=lambda t: t[1]) == [(None, [1.0], [10.0]), (None, [2.0], [20.0])]
