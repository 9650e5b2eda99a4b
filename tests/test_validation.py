"""Checks made before the model: what the signature needs is read from its graph, and each
kind of bad element gets a message that says what was wrong and how to fix it."""

from __future__ import annotations

import apache_beam as beam
import pytest
import tensorflow as tf

import beam_infer as bi
from beam_infer._validation import Failure, FeatureRule, Validator
from beam_infer.saved_model._backend import validator as saved_model_validator
from tests.support import model_zoo

X_RULE = FeatureRule(name="x", kind="float_list", length=1, required=True, shape=(1,))


def _validator(path: str, *signatures: str) -> Validator:
    handler = bi.SavedModelHandler(bi.ModelSpec(model_path=path, signature_names=signatures))
    return handler.validator()


def _example(**features: tf.train.Feature) -> tf.train.Example:
    return tf.train.Example(features=tf.train.Features(feature=features))


def _floats(*values: float) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


@pytest.fixture(scope="module")
def five(zoo) -> Validator:
    return _validator(zoo.five)


@pytest.mark.parametrize("model, signatures, proto", [
    ("five", (), "Example"),
    ("keras3_examples", (), "Example"),
    ("tf_keras", (), "Example"),
    ("tf1", ("classify",), "Example"),
    ("tf1", ("regress", "classify"), "Example"),
    ("tf_module", ("serving_sequence",), "SequenceExample"),
])
def test_feature_rules_are_read_from_the_signatures_parse_op(zoo, model, signatures, proto):
    validator = _validator(getattr(zoo, model), *signatures)
    assert validator.proto == proto
    assert validator.features == (X_RULE,)


def test_good_examples_pass_as_protos_and_as_bytes(five):
    (example,) = model_zoo.make_examples([3.0])
    assert five.check(example) is None
    assert five.check(example.SerializeToString()) is None
    assert five.check(_example(x=_floats(1.0), other=_floats(1.0, 2.0))) is None


@pytest.mark.parametrize("element, expected", [
    (None, Failure("decode", "InputError",
                   "element is None; signature 'serving_default' takes tf.train.Example or "
                   "bytes. Drop or repair missing rows before RunInference.")),
    (3.5, Failure("decode", "InputError",
                  "signature 'serving_default' takes serialized examples, but got an element "
                  "of type float: 3.5. Pass tf.train.Example or bytes (the signature "
                  "parses tf.train.Example).")),
    # A dict is named tensors: for this signature, its one input 'examples'.
    ({"x": 1.0}, Failure("validate", "InputError",
                         "signature 'serving_default' takes inputs examples; an element has "
                         "keys x (missing examples; unknown x). Key each element by the "
                         "signature's input aliases.")),
    # A str is a raw string fed to the signature, which parses it as an Example.
    ("3.0", Failure("decode", "DecodeError",
                    "3 bytes b'3.0' do not parse as a tf.train.Example (Error parsing message "
                    "with type 'tensorflow.Example'); signature 'serving_default' parses "
                    "serialized tf.train.Examples. Check what the input holds (e.g. read "
                    "TFRecords with coder=beam.coders.ProtoCoder(tf.train.Example)).")),
    (b"\xff\xff", Failure("decode", "DecodeError",
                          "2 bytes b'\\xff\\xff' do not parse as a tf.train.Example (Error "
                          "parsing message with type 'tensorflow.Example'); signature "
                          "'serving_default' parses serialized tf.train.Examples. Check what the "
                          "input holds (e.g. read TFRecords with "
                          "coder=beam.coders.ProtoCoder(tf.train.Example)).")),
    (tf.train.SequenceExample(), Failure(
        "decode", "InputError",
        "got a tf.train.SequenceExample, but signature 'serving_default' parses "
        "tf.train.Example; pass a tf.train.Example (or its serialized bytes).")),
    (_example(y=_floats(1.0)), Failure(
        "validate", "InputError",
        "feature 'x' is missing; signature 'serving_default' requires it (float, 1 value). "
        "Features found: y.")),
    (_example(x=tf.train.Feature()), Failure(
        "validate", "InputError",
        "feature 'x' is missing; signature 'serving_default' requires it (float, 1 value). "
        "Features found: x.")),
    (_example(x=tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))), Failure(
        "validate", "InputError",
        "feature 'x' holds int64 values (int64_list); signature 'serving_default' parses it "
        "as float (float, 1 value). Write it as tf.train.Feature(float_list=...).")),
    (_example(x=_floats(1.0, 2.0, 3.0)), Failure(
        "validate", "InputError",
        "feature 'x' has 3 values; signature 'serving_default' parses it as a fixed-length "
        "feature of 1 (float, 1 value). Pad or trim it to 1 value.")),
])
def test_each_kind_of_bad_element_is_explained(five, element, expected):
    assert five.check(element) == expected


def test_bad_bytes_are_checked_like_protos(five):
    wrong_kind = _example(x=tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"1"])))
    assert five.check(wrong_kind.SerializeToString()) == five.check(wrong_kind)
    assert five.check(b"").message.startswith("feature 'x' is missing")


def test_every_check_it_makes_is_one_the_model_agrees_with(zoo, five):
    model = bi.SavedModelHandler(bi.ModelSpec(model_path=zoo.five)).load_model()
    refused = [b"\xff\xff", b"", _example(y=_floats(1.0)), _example(x=_floats(1.0, 2.0)),
               _example(x=tf.train.Feature(int64_list=tf.train.Int64List(value=[1])))]
    for element in refused:
        assert five.check(element) is not None
        serialized = element if isinstance(element, bytes) else element.SerializeToString()
        # TensorFlow cannot even format its error for non-UTF-8 bytes: UnicodeDecodeError.
        with pytest.raises((tf.errors.InvalidArgumentError, UnicodeDecodeError)):
            model.current_model().run("serving_default",
                                      {"examples": tf.constant([serialized])})


def test_sequence_signature_checks_context_features(zoo):
    validator = _validator(zoo.tf_module, "serving_sequence")
    (good,) = model_zoo.make_sequence_examples([1.0])
    assert validator.check(good) is None
    assert validator.check(good.SerializeToString()) is None
    assert validator.check(tf.train.SequenceExample()).message == (
        "feature 'x' is missing; signature 'serving_sequence' requires it (float, 1 value). "
        "Features found: none.")


def test_no_rules_when_the_graph_transforms_the_input_before_parsing(tmp_path):
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(examples):
        decoded = tf.io.decode_base64(examples)
        x = tf.io.parse_example(decoded, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
        return {"output_0": 2.0 * x}

    path = str(tmp_path / "base64")
    tf.saved_model.save(module, path, signatures={"serving_default": serve})
    validator = _validator(path)
    assert (validator.proto, validator.features) == (None, ())
    assert validator.check(b"\xff\xff") is None  # not certain: the model decodes it first
    assert validator.check(None).stage == "decode"


def test_a_graph_that_cannot_be_read_leaves_only_the_type_checks(zoo, tmp_path):
    plan = bi.SavedModelHandler(bi.ModelSpec(model_path=zoo.five)).plan
    validator = saved_model_validator(str(tmp_path / "elsewhere"), ("serve",), plan)
    assert (validator.proto, validator.features) == (None, ())
    assert validator.check(b"\xff\xff") is None
    assert validator.check(None).stage == "decode"


def test_a_versioned_base_path_is_validated_with_its_serving_versions_rules(base, tmp_path):
    from tests.support.beam_helpers import run_collect

    no_x = tf.train.Example(features=tf.train.Features(feature={
        "y": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))}))

    def build(p):
        _, failed = (p | beam.Create([no_x]) | bi.RunInference(
            bi.ModelSpec(model_path=base)).with_dead_letters())
        return {"failed": failed}

    outputs, _ = run_collect(build, str(tmp_path / "out"))
    (letter,) = outputs["failed"]
    assert letter.stage is bi.Stage.VALIDATE
    assert "feature 'x'" in letter.message
