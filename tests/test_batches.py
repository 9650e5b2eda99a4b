"""Pre-batched input: ``RunInference(spec).on_batches()`` scores whole batches per element."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.typehints import typehints

import beam_infer as bi
from beam_infer._batches import BatchesHandler, as_batch
from beam_infer._coders import SizedPickleCoder
from beam_infer._outputs import BatchResult
from beam_infer._retries import ModelCaller
from pipelines import models
from tests.support import model_zoo
from tests.support.beam_helpers import run_collect

_NO_DEAD_LETTERS = (" on_batches() has no dead-letter output: to set failing elements aside "
                    "and score the rest, score them one by one with "
                    "RunInference(spec).with_dead_letters().")


def _handler(path: str, *signatures: str, output: bi.Output = bi.Output.PREDICTION_LOG
             ) -> bi.SavedModelHandler:
    return bi.SavedModelHandler(bi.ModelSpec(model_path=path, signature_names=signatures),
                                output=output)


def _per_element(handler: bi.SavedModelHandler, elements: list) -> list[bytes]:
    return [log.SerializeToString()
            for log in handler.run_inference(elements, handler.load_model())]


def _batches_handler(handler: bi.SavedModelHandler,
                     retry: bi.RetryConfig | None = None) -> BatchesHandler:
    return BatchesHandler(handler, ModelCaller(handler, retry or bi.RetryConfig()))


def _batched(handler: bi.SavedModelHandler, batch) -> list:
    name = handler.plan.signatures[0].name
    (answer,) = _batches_handler(handler).run_inference(as_batch(batch, name),
                                                        handler.load_model())
    return answer


def _serialized(logs) -> list[bytes]:
    return [log.SerializeToString() for log in logs]


def test_list_and_bytes_array_batches_give_the_per_element_logs_byte_for_byte(zoo):
    handler = _handler(zoo.five)
    examples = model_zoo.make_examples([1.0, 2.0, 3.5])
    expected = _per_element(handler, examples)
    assert _serialized(_batched(handler, examples)) == expected
    serialized = np.array([e.SerializeToString() for e in examples], dtype=object)
    assert _serialized(_batched(handler, serialized)) == expected
    assert _serialized(_batched(handler, tf.constant(serialized))) == expected


def test_a_fixed_width_bytes_array_is_refused_as_it_loses_trailing_zero_bytes(zoo):
    # x = 0.0 serializes with four zero bytes at the end, which "S" items drop.
    examples = [e.SerializeToString() for e in model_zoo.make_examples([0.0, 1.0])]
    assert examples[0].endswith(b"\x00")
    fixed = np.array(examples)
    assert fixed.dtype.kind == "S"
    with pytest.raises(bi.InferenceError) as error:
        _batched(_handler(zoo.five), fixed)
    assert str(error.value) == (
        f"batch (numpy.ndarray of 2 element(s)) failed at stage decode: InputError: "
        f"signature 'serving_default' got a batch as a numpy {fixed.dtype} array; numpy "
        "drops the trailing zero bytes of such items, which often ends serialized examples. "
        "Build the array with dtype=object, or pass a list of bytes or a string tf.Tensor."
        f"{_NO_DEAD_LETTERS}")


def test_stacked_raw_text_feeds_a_one_string_input_signature_as_elements_do(zoo):
    handler = _handler(zoo.tensors, "text_length")
    texts = ["héllo", "ab"]
    per_element = _per_element(handler, texts)
    for batch in (np.array(texts), np.array(texts, dtype=object),
                  np.array([texts[0], texts[1].encode()], dtype=object)):
        assert _serialized(_batched(handler, batch)) == per_element


def test_a_string_tensor_batch_is_fed_as_it_is_for_the_lean_output(zoo):
    handler = _handler(zoo.five, output=bi.Output.RESULT)
    records = tf.constant([e.SerializeToString() for e in model_zoo.make_examples([1.0, 3.0])])
    result = _batched(handler, records)
    assert result.example is records
    assert result.inference["output_0"].tolist() == [[5.0], [15.0]]
    assert _batches_handler(handler).get_num_bytes(as_batch(records, "serving_default")) == sum(
        len(r) for r in records.numpy())


def test_stacked_array_and_tensor_batches_give_the_per_element_logs(zoo):
    handler = _handler(zoo.keras3_dense)
    stacked = np.array([[1.0], [2.0], [4.0]], np.float32)
    expected = _per_element(handler, list(stacked))
    assert _serialized(_batched(handler, stacked)) == expected
    assert _serialized(_batched(handler, tf.constant(stacked))) == expected
    assert _serialized(_batched(handler, stacked.astype(np.float16))) == expected  # lossless


def test_dict_of_stacked_arrays_feeds_a_multi_input_signature(zoo):
    handler = _handler(zoo.tensors)
    x = np.array([[1.0, 2.0], [0.5, 0.5]], np.float32)
    count = np.array([2, 1])
    label = np.array([b"ab", b"c"], dtype=object)
    expected = _per_element(handler, [{"x": x[i], "count": count[i], "label": label[i]}
                                      for i in range(2)])
    assert _serialized(_batched(handler, {"x": x, "count": count, "label": label})) == expected


def test_lean_output_is_one_result_per_batch_with_the_batched_outputs(zoo):
    handler = _handler(zoo.tensors, output=bi.Output.RESULT)
    batch = {"x": np.array([[1.0, 2.0], [0.5, 0.5]], np.float32), "count": np.array([2, 1]),
             "label": np.array(["ab", "c"])}
    result = _batched(handler, batch)
    assert isinstance(result, PredictionResult)
    assert result.example is batch
    assert result.inference["total"].tolist() == [30.0, 5.0]
    assert result.inference["doubled"].shape == (2, 2)
    assert result.inference["shout"].tolist() == [b"AB", b"C"]


def test_keyed_and_unkeyed_batches_in_a_pipeline_match_per_element_scoring(zoo, work_dir):
    examples = [e.SerializeToString() for e in model_zoo.make_examples(range(6))]
    batches = [examples[:4], examples[4:]]
    per_element_spec = bi.ModelSpec(
        model_path=zoo.five, batching=bi.BatchConfig(min_batch_size=4, max_batch_size=4))
    spec = bi.ModelSpec(model_path=zoo.five)

    def build(p: beam.Pipeline) -> dict[str, beam.PCollection]:
        return {
            "elements": (p | "Elements" >> beam.Create(examples)
                         | "PerElement" >> bi.RunInference(per_element_spec)),
            "batches": (p | "Batches" >> beam.Create(batches)
                        | "OnBatches" >> bi.RunInference(spec).on_batches()),
            "keyed": (p | "Keyed" >> beam.Create([(b"first", batches[0]),
                                                  (b"second", batches[1])])
                      | "OnKeyed" >> bi.RunInference(spec).on_batches()),
        }

    outputs, result = run_collect(build, str(work_dir))
    expected = sorted(log.SerializeToString() for log in outputs["elements"])
    assert sorted(len(logs) for logs in outputs["batches"]) == [2, 4]
    assert sorted(b for logs in outputs["batches"] for b in _serialized(logs)) == expected
    keyed = dict(outputs["keyed"])
    assert _serialized(keyed[b"first"]) + _serialized(keyed[b"second"]) == [
        log.SerializeToString() for log in bi.SavedModelHandler(spec).run_inference(
            examples, bi.SavedModelHandler(spec).load_model())]
    counters = result.metrics().query(beam.metrics.MetricsFilter().with_name("num_inferences"))
    assert sum(c.committed for c in counters["counters"]) == 18  # elements, not batches


def test_on_batches_declares_its_output_types(zoo):
    run = bi.RunInference(bi.ModelSpec(model_path=zoo.five))
    batched = run.on_batches()
    assert batched.infer_output_type(list) == beam.typehints.List[bi._handler.PredictionLog]
    # Undeclared input may hold (key, batch) pairs or bare batches: decided per element.
    assert batched.infer_output_type(beam.typehints.Any) == Any
    assert batched.infer_output_type(np.ndarray) == beam.typehints.List[
        bi._handler.PredictionLog]
    # Declared batches are never pairs: a tf.Tensor, List[X] or Dict[K, V] batch.
    for declared in (tf.Tensor, beam.typehints.List[bytes], beam.typehints.Dict[str, Any]):
        assert batched.infer_output_type(declared) == beam.typehints.List[
            bi._handler.PredictionLog]
    lean = bi.RunInference(bi.ModelSpec(model_path=zoo.five), output=bi.Output.RESULT)
    # A PredictionResult of its own type (a subclass), whose coder sizes it cheaply.
    declared = lean.on_batches().infer_output_type(beam.typehints.Tuple[str, list])
    assert declared == beam.typehints.Tuple[str, BatchResult]
    assert typehints.is_consistent_with(declared, beam.typehints.Tuple[str, PredictionResult])
    assert isinstance(beam.coders.registry.get_coder(BatchResult), SizedPickleCoder)


@pytest.mark.parametrize(("element", "who", "message"), [
    (model_zoo.make_examples([1.0])[0], "batch (tensorflow.core.example.example_pb2.Example)",
     "on_batches() takes batches, but got tensorflow.core.example.example_pb2.Example for "
     "signature 'serving_default'. A batch is a list of elements (e.g. from "
     "beam.BatchElements()), a numpy array or tf.Tensor stacked along axis 0 (one-input "
     "signatures), a dict of such arrays keyed by input alias, or a (key, batch) pair. That "
     "is a single element: use bi.RunInference(spec) for single elements, or batch them "
     "first with beam.BatchElements()."),
    ((b"k", [b"x"], 3), "batch (tuple)",
     "on_batches() got a tuple of 3 items; a keyed batch is a (key, batch) pair. Pass a "
     "batch as a list, or pair it with its key."),
    ((b"k", np.float32(1.0)), "batch with key b'k' (numpy.float32)",
     "on_batches() takes batches, but got numpy.float32 for signature 'serving_default'. A "
     "batch is a list of elements (e.g. from beam.BatchElements()), a numpy array or "
     "tf.Tensor stacked along axis 0 (one-input signatures), a dict of such arrays keyed by "
     "input alias, or a (key, batch) pair."),
    (np.array(1.0), "batch (numpy.ndarray)",
     "on_batches() got a 0-d numpy.ndarray for signature 'serving_default'; a batch array "
     "has the elements along axis 0. Stack the elements (np.stack) or pass a list of them."),
    ({"x": np.zeros((3, 2)), "count": np.zeros(2)}, "batch (dict)",
     "on_batches() got a dict batch whose arrays disagree on the batch size (axis 0) for "
     "signature 'serving_default': x: 3, count: 2. Every input of a batch needs one row per "
     "element."),
])
def test_elements_that_are_not_batches_stop_with_the_kinds_taken(element, who, message):
    with pytest.raises(bi.InferenceError) as error:
        as_batch(element, "serving_default")
    assert str(error.value) == f"{who} failed at stage decode: InputError: {message}" + \
        _NO_DEAD_LETTERS
    assert isinstance(error.value.__cause__, bi.InputError)


@pytest.mark.parametrize(("model", "batch", "who", "message"), [
    ("five", np.zeros((2, 3), np.float32), "batch (numpy.ndarray of 2 element(s))",
     "signature 'serving_default' takes serialized examples; a batch for it is a list of "
     "tf.train.Example/bytes or a 1-D numpy array or tf.Tensor of bytes, but got "
     "numpy.ndarray of float32 shape [2, 3]. Parse the data inside the model, or pick a "
     "tensor-input signature with ModelSpec(signature_names=...)."),
    ("five", np.array([b"ok", 3], dtype=object), "batch (numpy.ndarray of 2 element(s))",
     "signature 'serving_default' takes serialized examples; a numpy batch for it must "
     "hold bytes, but an item is int. Serialize each example (SerializeToString()) first."),
    ("tensors", np.zeros((2, 2), np.float32), "batch (numpy.ndarray of 2 element(s))",
     "signature 'serving_default' takes 3 inputs (count, label, x), so a stacked batch "
     "must be a dict of arrays keyed by those aliases; got numpy.ndarray."),
    ("keras3_dense", np.zeros((2, 3), np.float32), "batch (numpy.ndarray of 2 element(s))",
     "input 'x' of signature 'serving_default' takes batches of shape [?,1] "
     "(x: float32[?,1]); got a stacked batch of shape [2, 3]. Stack elements of one "
     "example's shape along a new first axis (np.stack), or pass a list of elements."),
    ("keras3_dense", [np.zeros(1, np.float32), np.zeros(2, np.float32)],
     "batch (list of 2 element(s))",
     "input 'x' of signature 'serving_default' takes elements of shape [1] (the "
     "signature's x: float32[?,1] without its batch dimension); element 1 of the batch has "
     "shape [2]. Give each element the shape of one example, without a batch dimension."),
    ("five", [3.5], "batch (list of 1 element(s))",
     "signature 'serving_default' takes serialized examples, but got an element of type "
     "float: 3.5. Pass tf.train.Example, tf.train.SequenceExample or bytes."),
])
def test_batches_a_signature_cannot_take_stop_at_stage_decode(zoo, model, batch, who,
                                                               message):
    with pytest.raises(bi.InferenceError) as error:
        _batched(_handler(getattr(zoo, model)), batch)
    assert str(error.value) == \
        f"{who} failed at stage decode: InputError: {message}{_NO_DEAD_LETTERS}"
    assert isinstance(error.value.__cause__, bi.InputError)


def test_a_stacked_batch_is_cast_only_where_every_value_fits(zoo):
    with pytest.raises(bi.InferenceError) as error:
        _batched(_handler(zoo.keras3_dense), np.array([[0.1], [1e300]], np.float64))
    assert str(error.value) == (
        "batch (numpy.ndarray of 2 element(s)) failed at stage decode: InputError: input 'x' "
        "of signature 'serving_default' takes float32, but got float64 values and 1e+300 is "
        "outside float32's range; casts within a kind are made only when every value fits "
        "(ModelSpec(strict_input_casts=False), the default). Pass float32 values (e.g. "
        "np.asarray(value, dtype=np.float32)) if rounding is what you want." + _NO_DEAD_LETTERS)


def test_a_batch_the_model_fails_on_stops_the_pipeline_naming_its_key(fault_zoo, work_dir):
    spec = bi.ModelSpec(model_path=fault_zoo.poison)
    good, poison = (e.SerializeToString() for e in model_zoo.make_examples([1.0, 2000.0]))

    def build(p: beam.Pipeline) -> dict[str, beam.PCollection]:
        return {"logs": p | beam.Create([("ok", [good]), ("bad", [good, poison])])
                | bi.RunInference(spec).on_batches()}

    with pytest.raises(bi.InferenceError) as error:
        run_collect(build, str(work_dir))
    assert str(error.value) == (
        "batch with key 'bad' (list of 2 element(s)) failed at stage inference: "
        f"InvalidArgumentError: signature 'serving_default' of {fault_zoo.poison} failed on "
        "this batch: assertion failed: [x must be below 1000] [Condition x < y did not hold "
        "element-wise:] [x (ParseExample/ParseExampleV2:0) = ] [[1][2000]] "
        "[y (assert_less/y:0) = ] [1000]." + _NO_DEAD_LETTERS
        + " [while running 'RunInferenceOnBatches/Infer/BeamML_RunInference']")


def test_a_model_call_that_times_out_is_retried_as_retry_says(fault_zoo):
    handler = _handler(fault_zoo.slow)
    examples = model_zoo.make_examples([1.0, 2.0])
    quick = bi.RetryConfig(max_attempts=2, initial_backoff_secs=0.01, call_timeout_secs=1.0)
    (logs,) = _batches_handler(handler, quick).run_inference(
        as_batch(examples, "serving_default"), handler.load_model())
    assert [log.predict_log.response.outputs["output_0"].float_val[0] for log in logs] == [
        5.0, 10.0]
    once = bi.RetryConfig(max_attempts=1, call_timeout_secs=0.5)
    with pytest.raises(bi.InferenceError) as error:
        _batches_handler(handler, once).run_inference(
            as_batch(("k", examples), "serving_default"), handler.load_model())
    assert str(error.value) == (
        "batch with key 'k' (list of 2 element(s)) failed at stage inference: "
        f"CallTimeoutError: signature 'serving_default' of {fault_zoo.slow} failed "
        "transiently on this batch of 2 element(s), 1 time(s) in a row; last error: the "
        "model call on 2 element(s) did not finish within 0.5 s "
        "(RetryConfig.call_timeout_secs). The model or machine was overloaded: run the batch "
        "again, or allow more attempts with "
        "RunInference(spec, retry=bi.RetryConfig(max_attempts=...))." + _NO_DEAD_LETTERS)

def test_a_versioned_model_stamps_its_name_and_version_as_per_element_logs_do(tmp_path):
    base = model_zoo.versioned(tmp_path / "five", models.build_multiplier_model,
                               versions=(1, 2), factor=5.0)
    handler = _handler(base)
    examples = model_zoo.make_examples([1.0, 2.0])
    logs = _batched(handler, examples)
    assert _serialized(logs) == _per_element(handler, examples)
    assert [log.predict_log.response.outputs["output_0"].float_val[0] for log in logs] == [
        10.0, 20.0]
    for log in logs:
        for message in (log.predict_log.request, log.predict_log.response):
            assert (message.model_spec.name, message.model_spec.version.value) == ("five", 2)


def test_multi_inference_batches_give_per_element_logs_and_lean_outputs_by_signature(zoo):
    examples = model_zoo.make_examples([1.0, 2.0])
    logs = _handler(zoo.tf1, "classify", "regress")
    assert _serialized(_batched(logs, examples)) == _per_element(logs, examples)
    lean = _handler(zoo.tf1, "classify", "regress", output=bi.Output.RESULT)
    result = _batched(lean, np.array([e.SerializeToString() for e in examples], dtype=object))
    per_element = lean.run_inference(examples, lean.load_model())
    assert sorted(result.inference) == sorted(per_element[0].inference)
    for alias, batched in result.inference.items():
        assert np.array_equal(batched, np.stack([r.inference[alias] for r in per_element]))


def test_a_batch_pipeline_reports_the_model_load_and_element_counts(zoo, work_dir):
    spec = bi.ModelSpec(model_path=zoo.keras3_dense)
    batches = [np.full((4, 1), i, np.float32) for i in range(3)]

    def build(p: beam.Pipeline) -> dict[str, beam.PCollection]:
        return {"results": p | beam.Create(batches)
                | bi.RunInference(spec, output=bi.Output.RESULT).on_batches()}

    outputs, result = run_collect(build, str(work_dir))
    assert sorted(r.inference["output_0"][:, 0].tolist() for r in outputs["results"]) == [
        [0.0] * 4, [5.0] * 4, [10.0] * 4]
    metrics = result.metrics().query(beam.metrics.MetricsFilter().with_namespace("beam_infer"))
    counters = {m.key.metric.name: m.committed for m in metrics["counters"]}
    distributions = {m.key.metric.name: m.committed for m in metrics["distributions"]}
    assert counters["num_inferences"] == 12
    assert distributions["inference_request_batch_size"].sum == 12
    assert distributions["inference_request_batch_byte_size"].sum == 12 * 4
    assert distributions["load_model_latency_milli_secs"].count == 1
    assert distributions["saved_model_byte_size"].count == 1


def test_byte_counts_of_numeric_and_string_tensors_need_no_python_copy(zoo):
    handler = _handler(zoo.keras3_dense)
    assert handler.get_num_bytes([tf.constant([1.0], tf.float32)] * 3) == 12
    records = tf.constant([b"abc", b"de"])
    assert _batches_handler(_handler(zoo.five)).get_num_bytes(
        as_batch(records, "serving_default")) == 5


@pytest.mark.parametrize("output", [bi.Output.PREDICTION_LOG, bi.Output.RESULT])
def test_outputs_without_the_batch_dimension_stop_at_stage_postprocess(tmp_path, output):
    path = model_zoo.summing_examples(tmp_path / "summing")
    with pytest.raises(bi.InferenceError) as error:
        _batched(_handler(path, output=output), model_zoo.make_examples([1.0, 2.0]))
    assert str(error.value) == (
        "batch (list of 2 element(s)) failed at stage postprocess: InputError: signature "
        "'serving_default' returned output 'output_0' with shape [] for a batch of 2; every "
        "output needs the batch as its first dimension. Export the signature so it maps a "
        "batch of N inputs to outputs of shape [N, ...]." + _NO_DEAD_LETTERS)
