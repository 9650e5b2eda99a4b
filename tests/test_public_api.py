"""The public surface is ``beam_infer/__init__.py``; this pins it."""

from __future__ import annotations

import beam_infer as bi


def test_public_names_are_pinned_and_sorted():
    assert bi.__all__ == [
        "METRICS_NAMESPACE",
        "BatchConfig",
        "BeamInferError",
        "ConfigurationError",
        "DeadLetter",
        "Feed",
        "IncompatibleVersionError",
        "InferenceError",
        "InferenceResults",
        "InputError",
        "ModelCache",
        "ModelLoadError",
        "ModelPathError",
        "ModelSpec",
        "Operation",
        "Output",
        "PredictionLogToRows",
        "ReadTFRecordBatches",
        "RetryConfig",
        "RunInference",
        "RunInferenceOnBatches",
        "RunInferenceWithDeadLetters",
        "SavedModelHandler",
        "SignatureError",
        "Stage",
        "TagsError",
        "VersionPolicy",
        "patch_local_runner_metrics",
        "prediction_log_to_row",
        "write_warmup_requests",
    ]
    assert bi.__all__ == sorted(bi.__all__, key=lambda n: (not n.isupper(), n))
    assert all(hasattr(bi, name) for name in bi.__all__)


def test_error_tree():
    assert issubclass(bi.ModelPathError, bi.ConfigurationError)
    assert issubclass(bi.SignatureError, ValueError)
    assert issubclass(bi.ModelLoadError, RuntimeError)
    assert all(issubclass(getattr(bi, n), bi.BeamInferError) for n in bi.__all__
               if n.endswith("Error"))
