"""Dead letters for tensor inputs: missing inputs, uncastable dtypes and wrong shapes are
refused per element before the model, with the messages batch stacking would give, and
the good elements of the batch score as in a clean run."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import beam_infer as bi
from beam_infer._isolation import IsolatingHandler
from beam_infer._keys import Keys
from beam_infer._retries import ModelCaller
from beam_infer._validation import Failure
from tests.support.beam_helpers import run_collect


def _isolating(path: str, *signatures: str, **options) -> IsolatingHandler:
    inner = bi.SavedModelHandler(bi.ModelSpec(model_path=path, signature_names=signatures,
                                              **options))
    return IsolatingHandler(inner, keys=Keys.PER_ELEMENT,
                            caller=ModelCaller(inner, bi.RetryConfig(max_attempts=1)),
                            validator=inner.validator(), dead_letters=True)


@pytest.fixture(scope="module")
def tensors(zoo):
    handler = _isolating(zoo.tensors)
    return handler, handler.load_model()


def _good(i: int) -> dict:
    return {"x": np.array([i, i + 1], np.float32), "count": i, "label": f"l{i}"}


BAD = {
    "none": (None, "decode", "InputError"),
    "not_a_dict": (np.array([1.0, 2.0]), "decode", "InputError"),
    "missing_input": ({"x": [1.0, 2.0], "count": 3}, "validate", "InputError"),
    "wrong_shape": ({"x": np.zeros(3, np.float32), "count": 3, "label": "a"}, "validate",
                    "InputError"),
    "lossy_cast": ({"x": [1.0, 2.0], "count": 1.5, "label": "a"}, "decode", "InputError"),
    "text_for_float": ({"x": ["a", "b"], "count": 1, "label": "a"}, "decode", "InputError"),
    "ragged": ({"x": [[1.0], [2.0, 3.0]], "count": 1, "label": "a"}, "decode", "ValueError"),
    "number_for_text": ({"x": [1.0, 2.0], "count": 1, "label": 7}, "decode", "InputError"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_each_kind_of_bad_tensor_element_is_refused_before_the_model(tensors, name):
    handler, model = tensors
    element, stage, error_type = BAD[name]
    failure = handler.explain(element)
    assert failure is not None and (failure[0].value, failure[1]) == (stage, error_type)
    with pytest.raises(Exception):  # noqa: B017 - the model refuses it too, in any way
        handler.inner.run_inference([element], model)


def test_tensor_messages_name_the_input_and_what_to_change(zoo):
    inner = bi.SavedModelHandler(bi.ModelSpec(model_path=zoo.tensors))
    validator = inner.validator()
    assert validator.check(BAD["wrong_shape"][0]) == Failure("validate", "InputError", (
        "input 'x' of signature 'serving_default' takes elements of shape [2] (the "
        "signature's x: float32[?,2] without its batch dimension); the element has shape "
        "[3]. Give each element the shape of one example, without a batch dimension."))
    assert validator.check(BAD["lossy_cast"][0]) == Failure("decode", "InputError", (
        "input 'count' of signature 'serving_default' takes int64, but got float64 values "
        "and int64 cannot hold 1.5 exactly; a cast across kinds (float64 to int64) is made "
        "only when no value changes. Pass int64 values (e.g. np.asarray(value, "
        "dtype=np.int64)) if rounding is what you want."))
    assert validator.check(BAD["missing_input"][0]) == Failure("validate", "InputError", (
        "signature 'serving_default' takes inputs count, label, x; an element has keys "
        "count, x (missing label). Key each element by the signature's input aliases."))


def test_a_batch_with_bad_tensor_elements_scores_the_good_ones_as_a_clean_batch(tensors):
    handler, model = tensors
    batch = [_good(i) for i in range(6)]
    names = sorted(BAD)
    for position, name in zip((1, 3, 4, 6, 7, 8, 9, 10), names, strict=True):
        batch.insert(position, BAD[name][0])
    outputs = handler.run_inference(batch, model)
    scored = [o for o in outputs if not isinstance(o, bi.DeadLetter)]
    assert scored == list(handler.inner.run_inference([_good(i) for i in range(6)], model))
    assert sorted((o.stage.value, o.error_type) for o in outputs
                  if isinstance(o, bi.DeadLetter)) == sorted(BAD[n][1:] for n in names)


def test_variable_lengths_without_padding_are_scored_in_compatible_groups(zoo):
    handler = _isolating(zoo.tokens)
    model = handler.load_model()
    batch = [np.array([1, 2], np.int32), np.array([3, 4, 5], np.int32),
             np.array([6, 7], np.int32)]
    outputs = handler.run_inference(batch, model)
    totals = [int(o.predict_log.response.outputs["total"].int_val[0]) for o in outputs]
    assert totals == [3, 12, 13]


@pytest.mark.parametrize("options", [[], ["--direct_num_workers=2",
                                           "--direct_running_mode=multi_processing"]],
                         ids=["in_process", "multi_process"])
def test_tensor_dead_letters_in_a_pipeline_lose_nothing(zoo, tmp_path, options):
    good = [(f"good{i}", _good(i)) for i in range(20)]
    mixed = good[:5] + [(name, element) for name, (element, _, _) in BAD.items()] + good[5:]
    spec = bi.ModelSpec(model_path=zoo.tensors, batching=bi.BatchConfig(max_batch_size=8))

    def build(p):
        results, failed = (p | "Mixed" >> beam.Create(mixed)
                           | "Score" >> bi.RunInference(spec, output=bi.Output.RESULT)
                           .with_dead_letters())
        clean = (p | "Clean" >> beam.Create(good)
                 | "ScoreClean" >> bi.RunInference(spec, output=bi.Output.RESULT))
        return {"results": results, "failed": failed, "clean": clean}

    outputs, _ = run_collect(build, str(tmp_path), options)
    assert len(mixed) == len(outputs["results"]) + len(outputs["failed"])
    assert {d.key: (d.stage.value, d.error_type) for d in outputs["failed"]} == {
        name: (stage, error_type) for name, (_, stage, error_type) in BAD.items()}

    def totals(pairs):
        return sorted((k, float(r.inference["total"])) for k, r in pairs)

    assert totals(outputs["results"]) == totals(outputs["clean"])


VALUES = st.one_of(
    st.lists(st.floats(-1e3, 1e3, width=32), min_size=0, max_size=3).map(
        lambda v: np.array(v, np.float32)),
    st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=2),  # float64 lists: cast if exact
    st.integers(-5, 5),
    st.floats(-5, 5),
    st.text(max_size=3),
    st.binary(max_size=3),
    st.none(),
)
TENSOR_ELEMENTS = st.one_of(
    st.builds(_good, st.integers(0, 100)),
    st.dictionaries(st.sampled_from(["x", "count", "label", "other"]), VALUES, max_size=4),
    VALUES,
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(TENSOR_ELEMENTS, min_size=1, max_size=12))
def test_random_tensor_elements_are_scored_or_dead_lettered_and_refusals_are_certain(
        tensors, values):
    handler, model = tensors
    outputs = handler.run_inference(values, model)
    assert len(outputs) == len(values)
    scored = [(v, o) for v, o in zip(values, outputs, strict=True)
              if not isinstance(o, bi.DeadLetter)]
    if scored:
        clean = handler.inner.run_inference([v for v, _ in scored], model)
        assert [o for _, o in scored] == list(clean)
    for value, output in zip(values, outputs, strict=True):
        if isinstance(output, bi.DeadLetter):
            assert output.element is value
            with pytest.raises(Exception):  # noqa: B017 - the model refuses it alone too
                handler.inner.run_inference([value], model)
