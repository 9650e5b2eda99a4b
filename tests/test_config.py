"""ModelSpec and BatchConfig: explicit, frozen, validated, and 1:1 with what they configure."""

from __future__ import annotations

import dataclasses

import pytest
from tfx_bsl.public.proto import model_spec_pb2

import beam_infer as bi
from beam_infer._config import as_model_spec


def test_configs_are_frozen_and_keyword_only():
    spec = bi.ModelSpec(model_path="/m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.model_path = "/other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        bi.ModelSpec("/m")  # type: ignore[misc]
    with pytest.raises(TypeError, match="max_batch"):
        bi.BatchConfig(max_batch=3)  # type: ignore[call-arg]


def test_defaults_are_tf_servings():
    spec = bi.ModelSpec(model_path="/m")
    assert spec.effective_signature_names == ("serving_default",)
    assert spec.effective_tags == ("serve",)


def test_batch_config_maps_onto_batch_elements_kwargs():
    config = bi.BatchConfig(min_batch_size=2, max_batch_size=64, max_batch_duration_secs=0.01)
    assert config.batch_elements_kwargs() == {
        "min_batch_size": 2, "max_batch_size": 64, "max_batch_duration_secs": 0.01}
    assert bi.BatchConfig().batch_elements_kwargs() == {}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_batch_size": 0}, "BatchConfig.max_batch_size must be a positive integer; got 0. "
     "Pass a whole number of elements such as max_batch_size=64, or leave it unset."),
    ({"min_batch_size": 2.5}, "BatchConfig.min_batch_size must be a positive integer; got 2.5."),
    ({"min_batch_size": 10, "max_batch_size": 5},
     "BatchConfig.min_batch_size (10) is larger than max_batch_size (5); "
     "make min_batch_size <= max_batch_size."),
    ({"max_batch_duration_secs": 0},
     "BatchConfig.max_batch_duration_secs must be a positive number of seconds; got 0."),
    ({"target_batch_overhead": 2.0},
     "BatchConfig.target_batch_overhead is a fraction of batch time in (0, 1]; got 2.0."),
])
def test_bad_batch_config_is_refused(kwargs, message):
    with pytest.raises(bi.ConfigurationError) as error:
        bi.BatchConfig(**kwargs)
    assert str(error.value).startswith(message)


def test_signature_names_must_be_a_tuple_not_a_string():
    with pytest.raises(bi.ConfigurationError) as error:
        bi.ModelSpec(model_path="/m", signature_names="classify")  # type: ignore[arg-type]
    assert str(error.value) == (
        "ModelSpec.signature_names must be a tuple of non-empty strings; got 'classify'. "
        'For one name write signature_names=("classify",).'
    )


def test_model_copies_require_sharing():
    with pytest.raises(bi.ConfigurationError, match=r"Set share_across_processes=True\."):
        bi.ModelSpec(model_path="/m", model_copies=2)


@pytest.mark.parametrize("field", ["intra_op_threads", "inter_op_threads"])
@pytest.mark.parametrize("value", [0, -1, True, 1.5, "2"])
def test_thread_pools_must_be_positive_integers(field, value):
    with pytest.raises(bi.ConfigurationError) as raised:
        bi.ModelSpec(model_path="/m", **{field: value})
    assert str(raised.value) == (
        f"ModelSpec.{field} must be a positive integer (threads per worker process) or None "
        f"for TensorFlow's default; got {value!r}. Example: {field}=2.")


def test_thread_pools_default_to_tensorflows_own():
    spec = bi.ModelSpec(model_path="/m")
    assert (spec.intra_op_threads, spec.inter_op_threads) == (None, None)
    assert bi.ModelSpec(model_path="/m", intra_op_threads=1).intra_op_threads == 1


def test_inference_spec_type_converts_with_its_batch_parameters():
    proto = model_spec_pb2.InferenceSpecType(
        saved_model_spec=model_spec_pb2.SavedModelSpec(
            model_path="/m", signature_name=["classify", "regress"], tag=["serve", "gpu"]),
        batch_parameters=model_spec_pb2.BatchParameters(min_batch_size=4, max_batch_size=32))
    assert as_model_spec(proto) == bi.ModelSpec(
        model_path="/m", signature_names=("classify", "regress"), tags=("serve", "gpu"),
        batching=bi.BatchConfig(min_batch_size=4, max_batch_size=32))
