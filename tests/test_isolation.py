"""The isolating handler as a plain function of a batch: a failing model call is retried
when transient and bisected otherwise, so only the bad elements fail."""

from __future__ import annotations

import math
import pickle
import time

import pytest
import tensorflow as tf

import beam_infer as bi
from beam_infer._forwarding import LastBatch
from beam_infer._isolation import IsolatingHandler
from beam_infer._keyed_batches import KeyedBatchesHandler
from beam_infer._keys import KeyedBatch, Keys
from beam_infer._retries import ModelCaller
from tests.support import model_zoo

QUICK = bi.RetryConfig(max_attempts=3, initial_backoff_secs=0.01)


def _isolating(path: str, *, dead_letters: bool = True, retry: bi.RetryConfig = QUICK,
               keys: Keys = Keys.PER_ELEMENT) -> IsolatingHandler:
    inner = bi.SavedModelHandler(bi.ModelSpec(model_path=path))
    return IsolatingHandler(inner, keys=keys, caller=ModelCaller(inner, retry),
                            validator=inner.validator(), dead_letters=dead_letters)


def _value(log) -> float:
    return log.predict_log.response.outputs["output_0"].float_val[0]


@pytest.fixture(scope="module")
def poison(fault_zoo):
    handler = _isolating(fault_zoo.poison)
    return handler, handler.load_model()


def _calls(model) -> int:
    # The poison model counts its own calls in a variable.
    return int(model.current_model()._root.calls.numpy())


@pytest.mark.parametrize("size, bad", [(64, [17]), (64, [0]), (64, [63]), (7, [3]),
                                       (64, [3, 17, 40]), (8, list(range(8)))])
def test_only_the_bad_elements_fail_and_the_rest_score_as_in_a_clean_batch(poison, size, bad):
    handler, model = poison
    values = [float(i) for i in range(size)]
    for i in bad:
        values[i] = 1000.0 + i
    batch = [(f"k{i}", e) for i, e in enumerate(model_zoo.make_examples(values))]
    before = _calls(model)
    outputs = handler.run_inference(batch, model)
    extra_calls = _calls(model) - before - 1

    clean = handler.inner.run_inference([e for i, (_, e) in enumerate(batch) if i not in bad],
                                        model)
    scored = [o for o in outputs if not isinstance(o, bi.DeadLetter)]
    assert [log for _, log in scored] == list(clean)
    assert [k for k, _ in scored] == [f"k{i}" for i in range(size) if i not in bad]
    dead = [o for o in outputs if isinstance(o, bi.DeadLetter)]
    assert [d.key for d in dead] == [f"k{i}" for i in bad]
    assert [d.element for d in dead] == [batch[i] for i in bad]
    assert {d.stage for d in dead} == {bi.Stage.INFERENCE}
    if len(bad) == 1:  # about log2(batch) extra calls per bad element
        assert extra_calls <= math.log2(size) + 2


def test_isolated_failure_message_names_the_model_and_the_reason(poison):
    handler, model = poison
    (letter,) = handler.run_inference(model_zoo.make_examples([1234.0]), model)
    assert letter.error_type == "InvalidArgumentError"
    assert letter.message == (
        f"signature 'serving_default' of {handler.inner.spec.model_path} failed on this "
        "element alone: assertion failed: [x must be below 1000] [Condition x < y did not "
        "hold element-wise:] [x (ParseExample/ParseExampleV2:0) = ] [[1234]] "
        "[y (assert_less/y:0) = ] [1000]")


def test_deterministic_failures_are_not_retried(poison):
    handler, model = poison
    before = _calls(model)
    handler.run_inference(model_zoo.make_examples([5000.0]), model)
    assert _calls(model) - before == 1


def test_elements_that_cannot_be_encoded_fail_alone_at_decode(poison):
    handler, model = poison
    (good,) = model_zoo.make_examples([2.0])
    outputs = handler.run_inference([good, None, 3.5, good], model)
    assert _value(outputs[0]) == _value(outputs[3]) == 10.0
    assert [(o.stage, o.error_type) for o in outputs[1:3]] == [
        (bi.Stage.DECODE, "InputError"), (bi.Stage.DECODE, "InputError")]
    assert outputs[1].message.startswith("element is None")


def test_keyed_input_that_is_not_a_pair_is_a_decode_dead_letter(fault_zoo):
    handler = _isolating(fault_zoo.poison, keys=Keys.ALL)
    (good,) = model_zoo.make_examples([1.0])
    key_and_log, letter = handler.run_inference([("a", good), good], handler.load_model())
    assert key_and_log[0] == "a"
    assert letter.stage is bi.Stage.DECODE
    assert letter.message.startswith(
        "expected a (key, example) pair because the input PCollection is declared keyed, "
        "but got Example:")


def test_without_dead_letters_the_first_failure_stops_with_key_stage_and_reason(fault_zoo):
    handler = _isolating(fault_zoo.poison, dead_letters=False)
    model = handler.load_model()
    batch = list(zip(["a", "b", "c"], model_zoo.make_examples([1.0, 2.0, 3.0]), strict=True))
    batch[1] = ("b", tf.train.Example())
    with pytest.raises(bi.InferenceError) as error:
        handler.run_inference(batch, model)
    assert str(error.value) == (
        "element with key 'b' failed at stage validate: InputError: feature 'x' is missing; "
        "signature 'serving_default' requires it (float, 1 value). Features found: none. "
        "To route such elements to a second output instead of stopping, use "
        "RunInference(spec).with_dead_letters().")


@pytest.mark.pipeline  # processes or a pipeline: kept out of the one-minute unit tier
def test_a_call_that_times_out_is_retried_and_then_scores(fault_zoo):
    retry = bi.RetryConfig(max_attempts=2, initial_backoff_secs=0.01, call_timeout_secs=1.0)
    inner = bi.SavedModelHandler(bi.ModelSpec(model_path=fault_zoo.slow))
    caller = ModelCaller(inner, retry)
    handler = IsolatingHandler(inner, keys=Keys.PER_ELEMENT, caller=caller, validator=None,
                               dead_letters=True)
    model = handler.load_model()
    outputs = handler.run_inference(model_zoo.make_examples([1.0, 2.0]), model)
    assert [_value(o) for o in outputs] == [5.0, 10.0]
    # The abandoned first call took the model's load event with it; when it finishes,
    # the event waits for the next call to report it instead of being lost.
    deadline = time.monotonic() + 10
    while not caller.unreported:
        assert time.monotonic() < deadline, "the abandoned call never handed back its loads"
        time.sleep(0.05)
    assert [event.ok for results in caller.unreported for event in results.loads] == [True]
    handler.run_inference(model_zoo.make_examples([3.0]), model)
    assert caller.unreported == []


def test_a_batch_whose_retries_run_out_is_dead_lettered_whole(fault_zoo):
    retry = bi.RetryConfig(max_attempts=1, call_timeout_secs=0.5)
    handler = _isolating(fault_zoo.slow, retry=retry)
    outputs = handler.run_inference(model_zoo.make_examples([1.0, 2.0]), handler.load_model())
    assert [(o.stage, o.error_type) for o in outputs] == [
        (bi.Stage.INFERENCE, "CallTimeoutError")] * 2
    assert outputs[0].message == (
        f"signature 'serving_default' of {fault_zoo.slow} failed transiently on a call of 2 "
        "element(s) holding this one, 1 time(s) in a row; last error: the model call on 2 "
        "element(s) did not finish within 0.5 s (RetryConfig.call_timeout_secs). The model "
        "or machine was overloaded: retry these elements, or allow more attempts with "
        "RunInference(spec, retry=bi.RetryConfig(max_attempts=...)).")


def test_resource_exhausted_is_retried(tmp_path):
    # TensorFlow's allocator waits about 10 s before it gives up on the 4 TiB tensor.
    path = model_zoo.flaky_examples(tmp_path / "oom", failure="oom", fail_calls=1)
    handler = _isolating(path, retry=bi.RetryConfig(max_attempts=2, initial_backoff_secs=0))
    outputs = handler.run_inference(model_zoo.make_examples([3.0]), handler.load_model())
    assert [_value(o) for o in outputs] == [15.0]


@pytest.mark.parametrize("field, value, message", [
    ("max_attempts", 0, "RetryConfig.max_attempts must be a positive integer; got 0. Use "
                        "max_attempts=1 to turn retries off."),
    ("initial_backoff_secs", -1, "RetryConfig.initial_backoff_secs must be a number of "
                                 "seconds >= 0; got -1."),
    ("backoff_multiplier", 0.5, "RetryConfig.backoff_multiplier must be >= 1; got 0.5."),
    ("call_timeout_secs", 0, "RetryConfig.call_timeout_secs must be a positive number of "
                             "seconds or None; got 0."),
])
def test_retry_config_mistakes_say_what_to_pass(field, value, message):
    with pytest.raises(bi.ConfigurationError) as error:
        bi.RetryConfig(**{field: value})
    assert str(error.value) == message


def test_backoff_grows_and_is_capped():
    retry = bi.RetryConfig(initial_backoff_secs=1, backoff_multiplier=3, max_backoff_secs=5)
    assert [retry.backoff_secs(n) for n in (1, 2, 3)] == [1, 3, 5]


def test_run_inference_refuses_a_retry_that_is_not_a_retry_config(zoo):
    with pytest.raises(bi.ConfigurationError) as error:
        bi.RunInference(bi.ModelSpec(model_path=zoo.five), retry=3)
    assert str(error.value) == ("RunInference(retry=...) takes a beam_infer.RetryConfig; got "
                                "int. Example: retry=bi.RetryConfig(max_attempts=5).")


def test_outputs_without_the_batch_dimension_fail_at_postprocess(tmp_path):
    path = model_zoo.summing_examples(tmp_path / "summing")
    handler = _isolating(path)
    outputs = handler.run_inference(model_zoo.make_examples([1.0, 2.0]), handler.load_model())
    assert [(o.stage, o.error_type) for o in outputs] == [
        (bi.Stage.POSTPROCESS, "InputError")] * 2
    assert outputs[0].message == (
        "signature 'serving_default' returned output 'output_0' with shape [] for a batch of "
        "2; every output needs the batch as its first dimension. Export the signature so it "
        "maps a batch of N inputs to outputs of shape [N, ...].")


def test_multi_inference_isolates_a_bad_element_and_explains_it(zoo):
    inner = bi.SavedModelHandler(bi.ModelSpec(model_path=zoo.tf1,
                                              signature_names=("classify", "regress")))
    handler = IsolatingHandler(inner, keys=Keys.NONE, caller=ModelCaller(inner, QUICK),
                               validator=inner.validator(), dead_letters=True)
    model = handler.load_model()
    good = model_zoo.make_examples([1.0, 2.0])
    outputs = handler.run_inference([good[0], b"\x00\x01", good[1]], model)
    assert [outputs[0], outputs[2]] == list(inner.run_inference(good, model))
    assert (outputs[1].stage, outputs[1].error_type) == (bi.Stage.DECODE, "DecodeError")
    assert outputs[1].message.startswith(
        "2 bytes b'\\x00\\x01' do not parse as a tf.train.Example")


@pytest.mark.parametrize("dead_letters", [True, False])
def test_a_batch_mixing_pairs_and_bare_elements_keeps_every_pairs_key(zoo, dead_letters):
    # Undeclared element types decide keys per element: only pairs get (key, log).
    handler = _isolating(zoo.five, dead_letters=dead_letters)
    examples = model_zoo.make_examples([1.0, 2.0, 3.0, 4.0])
    batch = [("a", examples[0]), examples[1], ("c", examples[2]), examples[3]]
    outputs = handler.run_inference(batch, handler.load_model())
    assert [o[0] if isinstance(o, tuple) else None for o in outputs] == ["a", None, "c", None]
    values = [_value(o[1] if isinstance(o, tuple) else o) for o in outputs]
    assert values == [5.0, 10.0, 15.0, 20.0]


def test_load_metrics_are_reported_when_model_calls_run_under_a_timeout(zoo, tmp_path):
    # With call_timeout_secs the model runs in a helper thread, where Beam keeps no
    # metrics: the loads it returns are reported by the bundle's own thread.
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter

    from tests.support.beam_helpers import run_collect

    spec = bi.ModelSpec(model_path=zoo.five)
    retry = bi.RetryConfig(call_timeout_secs=30.0)

    def build(p):
        examples = model_zoo.make_examples([1.0, 2.0])
        return {"logs": p | beam.Create(examples) | bi.RunInference(spec, retry=retry)}

    outputs, result = run_collect(build, str(tmp_path))
    assert len(outputs["logs"]) == 2
    metrics = result.metrics().query(MetricsFilter().with_namespace("beam_infer"))
    distributions = {m.key.metric.name: m.committed for m in metrics["distributions"]}
    assert distributions["saved_model_byte_size"].count == 1


def test_the_byte_count_after_a_batch_reuses_its_split_and_counts_values_only(zoo, monkeypatch):
    handler = _isolating(zoo.five)
    model = handler.load_model()
    examples = model_zoo.make_examples([1.0, 2.0, 3.0])
    batch = [(f"k{i}", e) for i, e in enumerate(examples)]
    value_bytes = sum(len(e.SerializeToString()) for e in examples)
    splits = []
    split = KeyedBatch.split
    monkeypatch.setattr(KeyedBatch, "split",
                        classmethod(lambda cls, b, k: splits.append(b) or split(b, k)))
    handler.run_inference(batch, model)
    assert handler.get_num_bytes(batch) == value_bytes
    assert splits == [batch]  # Beam asks with the same list: not split a second time
    # Any other batch (an equal copy, or the same one asked twice) is split and counted.
    assert handler.get_num_bytes(list(batch)) == value_bytes
    assert handler.get_num_bytes(batch) == value_bytes
    assert len(splits) == 3


def test_keyed_example_lists_are_counted_item_by_item_after_scoring(zoo):
    handler = KeyedBatchesHandler(_isolating(zoo.five))
    model = handler.load_model()
    one, two, three = model_zoo.make_examples([1.0, 2.0, 3.0])
    batch = [("a", [one, two]), ("b", three)]
    outputs = handler.run_inference(batch, model)
    assert [key for key, _ in outputs] == ["a", "b"] and len(outputs[0][1]) == 2
    expected = sum(len(e.SerializeToString()) for e in (one, two, three))
    assert handler.get_num_bytes(batch) == expected
    assert handler.get_num_bytes(batch) == expected  # asked again: flattened again


def test_what_a_handler_kept_of_its_last_batch_is_not_pickled():
    last = LastBatch()
    batch = [b"x"]
    last.keep(batch, "values")
    assert pickle.loads(pickle.dumps(last)).take(batch) is None
    assert last.take([b"x"]) is None  # an equal list is another batch
    last.keep(batch, "values")
    assert last.take(batch) == "values" and last.take(batch) is None
