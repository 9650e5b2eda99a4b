"""The rest of tfx-bsl's public API under beam_infer: the same names, signatures and outputs.

Modelled on what tfx-bsl's own RunInference tests check (per-model tuples, keyed batches,
CreateModelHandler with Beam's RunInference, batch_parameters passed on, load_override_fn,
declared output types), against real SavedModels from the zoo.
"""

from __future__ import annotations

import inspect

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.ml.inference import base
from apache_beam.typehints import typehints
from apache_beam.utils import shared
from tensorflow_serving.apis import prediction_log_pb2
from tfx_bsl.public.beam import run_inference as tfx_beam
from tfx_bsl.public.proto import model_spec_pb2

import beam_infer as bi
from tests.support import model_zoo
from tests.support.beam_helpers import run_collect

PredictionLog = prediction_log_pb2.PredictionLog


def _spec(path: str, *signatures: str, **batching) -> model_spec_pb2.InferenceSpecType:
    spec = model_spec_pb2.InferenceSpecType(
        saved_model_spec=model_spec_pb2.SavedModelSpec(model_path=path,
                                                       signature_name=list(signatures)))
    if batching:
        spec.batch_parameters.CopyFrom(model_spec_pb2.BatchParameters(**batching))
    return spec


def _y(log: PredictionLog) -> float:
    kind = log.WhichOneof("log_type")
    if kind == "regress_log":
        return log.regress_log.response.result.regressions[0].value
    return log.predict_log.response.outputs["output_0"].float_val[0]


EXAMPLES = model_zoo.make_examples([1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("name", ["RunInference", "RunInferencePerModel",
                                  "RunInferenceOnKeyedBatches",
                                  "RunInferencePerModelOnKeyedBatches"])
def test_transforms_take_tfx_bsls_arguments(name):
    ours = inspect.signature(getattr(bi, name)).parameters
    theirs = list(inspect.signature(getattr(tfx_beam, name)).parameters.values())
    assert [p.name for p in theirs] == list(ours)[:len(theirs)]
    assert all(ours[p.name].default == p.default for p in theirs)
    assert list(inspect.signature(bi.CreateModelHandler).parameters) == \
        list(inspect.signature(tfx_beam.CreateModelHandler).parameters)


def test_per_model_gives_one_log_per_model_in_order(zoo, tmp_path):
    specs = [_spec(zoo.five), _spec(zoo.ten)]
    outputs, _ = run_collect(lambda p: {
        "unkeyed": p | "Unkeyed" >> beam.Create(EXAMPLES) | "U" >> bi.RunInferencePerModel(specs),
        "keyed": (p | "Keyed" >> beam.Create([(f"k{i}", e) for i, e in enumerate(EXAMPLES)])
                  | "K" >> bi.RunInferencePerModel(specs)),
    }, str(tmp_path))
    assert sorted(tuple(map(_y, logs)) for logs in outputs["unkeyed"]) == [
        (5.0, 10.0), (10.0, 20.0), (15.0, 30.0), (20.0, 40.0)]
    assert sorted((k, tuple(map(_y, logs))) for k, logs in outputs["keyed"]) == [
        ("k0", (5.0, 10.0)), ("k1", (10.0, 20.0)), ("k2", (15.0, 30.0)), ("k3", (20.0, 40.0))]


def test_keyed_batches_keep_their_key_and_order(zoo, tmp_path):
    batches = [("first", EXAMPLES[:3]), ("second", [EXAMPLES[3]]), ("empty", [])]
    specs = [_spec(zoo.five), _spec(zoo.ten)]
    outputs, _ = run_collect(lambda p: {
        "run_inference": p | "A" >> beam.Create(batches) | "RI" >> bi.RunInference(specs[0]),
        "on_keyed_batches": (p | "B" >> beam.Create(batches)
                             | "OKB" >> bi.RunInferenceOnKeyedBatches(specs[0])),
        "per_model": (p | "C" >> beam.Create(batches)
                      | "PM" >> bi.RunInferencePerModelOnKeyedBatches(specs)),
        "per_model_lists": (p | "D" >> beam.Create(batches)
                            | "PML" >> bi.RunInferencePerModel(specs)),
    }, str(tmp_path))
    expected = {"first": [5.0, 10.0, 15.0], "second": [20.0], "empty": []}
    for name in ("run_inference", "on_keyed_batches"):
        assert {k: [_y(log) for log in logs] for k, logs in outputs[name]} == expected
    twice = {k: (values, [2 * v for v in values])
             for k, values in expected.items()}
    for name in ("per_model", "per_model_lists"):
        assert {k: tuple([_y(log) for log in logs] for logs in per_model)
                for k, per_model in outputs[name]} == twice


def test_keyed_batch_logs_equal_the_logs_of_single_elements(zoo, tmp_path):
    spec = _spec(zoo.tf1, "regress")
    outputs, _ = run_collect(lambda p: {
        "batched": p | "B" >> beam.Create([("k", EXAMPLES)]) | "RB" >> bi.RunInference(spec),
        "single": p | "S" >> beam.Create(EXAMPLES) | "RS" >> bi.RunInference(spec),
    }, str(tmp_path))
    ((key, logs),) = outputs["batched"]
    assert key == "k"
    assert sorted(log.SerializeToString() for log in logs) == sorted(
        log.SerializeToString() for log in outputs["single"])


def test_a_bad_example_in_a_keyed_batch_dead_letters_the_whole_element(zoo, tmp_path):
    element = ("k", [EXAMPLES[0], b"\xff\xff not a proto"])
    outputs, _ = run_collect(lambda p: dict(zip(
        ("logs", "failed"),
        p | beam.Create([element, ("ok", [EXAMPLES[1]])])
        | bi.RunInference(_spec(zoo.five)).with_dead_letters(), strict=True)), str(tmp_path))
    assert [(k, [_y(log) for log in logs]) for k, logs in outputs["logs"]] == [("ok", [10.0])]
    (letter,) = outputs["failed"]
    assert (letter.key, letter.element, letter.stage) == ("k", element, bi.Stage.DECODE)


OUTPUT_TYPES = [
    (tf.train.Example(), PredictionLog),
    (b"", PredictionLog),
    (tf.train.SequenceExample(), PredictionLog),
    (("key", tf.train.Example()), typehints.Tuple[str, PredictionLog]),
    (("key", b""), typehints.Tuple[str, PredictionLog]),
    (("key", [tf.train.Example()]), typehints.Tuple[str, typehints.List[PredictionLog]]),
]


@pytest.mark.parametrize(("element", "output_type"), OUTPUT_TYPES,
                         ids=["example", "bytes", "sequence_example", "keyed_example",
                              "keyed_bytes", "keyed_example_list"])
def test_declared_output_types_follow_the_input_as_tfx_bsls(zoo, element, output_type):
    p = beam.Pipeline()  # built, not run: the types are set while the graph is built
    single = p | "One" >> beam.Create([element]) | "RI" >> bi.RunInference(_spec(zoo.five))
    both = (p | "Two" >> beam.Create([element])
            | "PM" >> bi.RunInferencePerModel([_spec(zoo.five), _spec(zoo.ten)]))
    assert single.element_type == output_type
    value = output_type.tuple_types[1] if isinstance(element, tuple) else output_type
    pair = typehints.Tuple[value, value]
    assert both.element_type == (typehints.Tuple[str, pair] if isinstance(element, tuple)
                                 else pair)


def test_create_model_handler_runs_under_beams_run_inference(zoo, tmp_path):
    handler = bi.CreateModelHandler(_spec(zoo.tf1, "regress"))
    assert isinstance(handler, base.ModelHandler)
    outputs, _ = run_collect(lambda p: {
        "unkeyed": p | "U" >> beam.Create(EXAMPLES) | "RU" >> base.RunInference(handler),
        "keyed": (p | "K" >> beam.Create([("a", EXAMPLES[0])])
                  | "RK" >> base.RunInference(base.KeyedModelHandler(handler))),
    }, str(tmp_path))
    assert sorted(map(_y, outputs["unkeyed"])) == [5.0, 10.0, 15.0, 20.0]
    assert [(k, _y(log)) for k, log in outputs["keyed"]] == [("a", 5.0)]


def test_create_model_handler_passes_batch_parameters_on_as_set(zoo):
    assert bi.CreateModelHandler(_spec(zoo.five)).batch_elements_kwargs() == {}
    given = {"min_batch_size": 1, "max_batch_size": 10, "target_batch_overhead": 1.1,
             "target_batch_duration_secs": 2.2, "variance": 3.3}
    for signatures in ((), ("regress",), ("classify",), ("classify", "regress")):
        path = zoo.tf1 if signatures else zoo.five
        handler = bi.CreateModelHandler(_spec(path, *signatures, **given))
        assert handler.batch_elements_kwargs() == given


def test_remote_service_specs_are_refused_naming_tfx_bsl():
    spec = model_spec_pb2.InferenceSpecType(
        ai_platform_prediction_model_spec=model_spec_pb2.AIPlatformPredictionModelSpec(
            project_id="p", model_name="m"))
    with pytest.raises(bi.ConfigurationError) as error:
        bi.CreateModelHandler(spec)
    assert str(error.value) == (
        "InferenceSpecType sets ai_platform_prediction_model_spec; beam_infer runs "
        "SavedModels in process and needs saved_model_spec { model_path: ... }. To call a "
        "remote endpoint use tfx_bsl.public.beam.RunInference.")
    with pytest.raises(ValueError, match="ai_platform_prediction_model_spec"):
        bi.RunInferencePerModel([spec])


def test_per_model_needs_a_list_of_specs(zoo):
    with pytest.raises(bi.ConfigurationError, match="takes an iterable of specs"):
        bi.RunInferencePerModel(_spec(zoo.five))
    with pytest.raises(bi.ConfigurationError, match="needs at least one inference spec"):
        bi.RunInferencePerModel([])


# --- load_override_fn -----------------------------------------------------------------


def _run_with_override(spec, override, tmp_path, elements=EXAMPLES):
    outputs, _ = run_collect(lambda p: {
        "logs": p | beam.Create(elements) | bi.RunInference(spec, override)}, str(tmp_path))
    return sorted(map(_y, outputs["logs"]))


def test_load_override_fn_may_return_a_tf1_session_as_tfx_bsl_loads(zoo, tmp_path):
    handle = shared.Shared()
    calls = []

    def load() -> tf.compat.v1.Session:
        calls.append(1)
        session = tf.compat.v1.Session(graph=tf.compat.v1.Graph())
        tf.compat.v1.saved_model.loader.load(session, ["serve"], zoo.tf1)
        return session

    def override(model_path, tags):
        assert (model_path, list(tags)) == (zoo.tf1, ["serve"])
        return handle.acquire(load)

    kept = override(zoo.tf1, ["serve"])  # loaded once; the pipeline reuses it
    assert _run_with_override(_spec(zoo.tf1, "regress"), override, tmp_path) == \
        [5.0, 10.0, 15.0, 20.0]
    assert len(calls) == 1
    del kept


def test_load_override_fn_may_return_a_tf2_saved_model(zoo, tmp_path):
    assert _run_with_override(_spec(zoo.five), lambda path, tags: tf.saved_model.load(path),
                              tmp_path) == [5.0, 10.0, 15.0, 20.0]


def test_load_override_fn_returning_something_else_fails_the_load_clearly(zoo):
    handler = bi.SavedModelHandler(bi.ModelSpec(model_path=zoo.five),
                                   load_override_fn=lambda path, tags: "a model")
    with pytest.raises(bi.ModelLoadError) as error:
        handler.load_model()
    assert str(error.value) == (
        f"load_override_fn returned str for {zoo.five!r}; it must return what "
        "tf.saved_model.load(path, tags) returns (an object with .signatures) or a "
        "tf.compat.v1.Session with the SavedModel loaded, as tfx-bsl's loader does.")


def test_load_override_fn_and_live_versions_do_not_mix(zoo):
    with pytest.raises(bi.ConfigurationError, match="use one or the other"):
        bi.RunInference(bi.ModelSpec(model_path=zoo.five, poll_interval_secs=5),
                        lambda path, tags: None)
