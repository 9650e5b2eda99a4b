"""SavedModelHandler as a plain function of a batch and a loaded model: no pipeline."""

from __future__ import annotations

import pytest

import beam_infer as bi
from tests.support import model_zoo


def test_run_inference_without_a_pipeline(zoo):
    handler = bi.SavedModelHandler(bi.ModelSpec(model_path=zoo.five))
    model = handler.load_model()
    examples = model_zoo.make_examples([1.0, 2.0])
    logs = list(handler.run_inference(examples, model))
    values = [log.predict_log.response.outputs["output_0"].float_val[0] for log in logs]
    assert values == [5.0, 10.0]
    assert handler.get_num_bytes(examples) == sum(len(e.SerializeToString()) for e in examples)
    assert list(handler.run_inference([], model)) == []


def test_wrong_element_type_says_what_to_pass(zoo):
    handler = bi.SavedModelHandler(bi.ModelSpec(model_path=zoo.five))
    with pytest.raises(bi.InputError) as error:
        handler.run_inference([1.5], handler.load_model())
    assert str(error.value) == (
        "signature 'serving_default' takes serialized examples, but got an element of type "
        "float: 1.5. Pass tf.train.Example, tf.train.SequenceExample or bytes."
    )


def test_classify_refuses_sequence_examples(zoo):
    handler = bi.SavedModelHandler(bi.ModelSpec(model_path=zoo.tf1))
    with pytest.raises(bi.InputError, match=r"Pass tf.train.Example or bytes \(classify and "
                                            r"regress take no SequenceExample\)."):
        handler.run_inference(model_zoo.make_sequence_examples([1.0]), handler.load_model())


def test_handler_works_inside_beams_own_keyed_handler(zoo):
    from apache_beam.ml.inference.base import KeyedModelHandler

    keyed = KeyedModelHandler(bi.SavedModelHandler(bi.ModelSpec(model_path=zoo.five)))
    model = keyed.load_model()
    (key, log), = keyed.run_inference([("a", model_zoo.make_examples([3.0])[0])], model)
    assert key == "a"
    assert log.predict_log.response.outputs["output_0"].float_val[0] == 15.0


def test_batching_and_sharing_reach_beam(zoo):
    spec = bi.ModelSpec(model_path=zoo.five, batching=bi.BatchConfig(max_batch_size=7),
                        share_across_processes=True, model_copies=2)
    handler = bi.SavedModelHandler(spec)
    assert handler.batch_elements_kwargs() == {"max_batch_size": 7}
    assert handler.share_model_across_processes()
    assert handler.model_copies() == 2
    assert handler.get_metrics_namespace() == "beam_infer"
