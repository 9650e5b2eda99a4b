"""A typo in a keyword names the class, the closest valid names and every name taken."""

from __future__ import annotations

import pytest

import beam_infer as bi


@pytest.mark.parametrize(("build", "message"), [
    (lambda: bi.ModelSpec(model_path="/m", singature_names=("a",)),
     "ModelSpec got an unknown keyword argument 'singature_names' (did you mean "
     "'signature_names'?). ModelSpec takes: model_path, signature_names, tags, batching, "
     "share_across_processes, model_copies, model_name, version_policy, poll_interval_secs, "
     "pad_variable_length_inputs, model_cache, strict_input_casts, intra_op_threads, "
     "inter_op_threads."),
    (lambda: bi.BatchConfig(max_batch=8),
     "BatchConfig got an unknown keyword argument 'max_batch' (did you mean "
     "'max_batch_size' or 'min_batch_size'?). BatchConfig takes: min_batch_size, "
     "max_batch_size, max_batch_duration_secs, target_batch_overhead, "
     "target_batch_duration_secs, variance."),
    (lambda: bi.RetryConfig(max_attempt=2, timeout=3),
     "RetryConfig got an unknown keyword arguments 'max_attempt' (did you mean "
     "'max_attempts'?), 'timeout' (did you mean 'call_timeout_secs'?). RetryConfig "
     "takes: max_attempts, initial_backoff_secs, backoff_multiplier, max_backoff_secs, "
     "call_timeout_secs."),
    (lambda: bi.ModelCache(max_size=10),
     "ModelCache got an unknown keyword argument 'max_size' (did you mean 'max_bytes'?). "
     "ModelCache takes: directory, max_bytes."),
])
def test_unknown_keywords_suggest_the_name_meant(build, message):
    with pytest.raises(bi.UnknownArgumentError) as error:
        build()
    assert str(error.value) == message
    assert isinstance(error.value, TypeError)  # what Python raises for a bad keyword
    assert isinstance(error.value, bi.ConfigurationError)


def test_transforms_and_handlers_check_their_keywords_before_reading_the_model(zoo):
    with pytest.raises(bi.UnknownArgumentError, match="did you mean 'retry'\\?"):
        bi.RunInference(bi.ModelSpec(model_path=zoo.five), retyr=bi.RetryConfig())
    with pytest.raises(bi.UnknownArgumentError, match="did you mean 'output'\\?"):
        bi.SavedModelHandler(bi.ModelSpec(model_path=zoo.five), outptu=bi.Output.RESULT)


def test_replace_checks_keywords_too():
    spec = bi.ModelSpec(model_path="/m")
    with pytest.raises(bi.UnknownArgumentError, match="did you mean 'model_path'"):
        spec.replace(model_pth="/n")
    assert spec.replace(model_path="/n").model_path == "/n"
