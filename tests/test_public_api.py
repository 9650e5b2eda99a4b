"""The public surface is ``beam_infer/__init__.py``; this pins it."""

from __future__ import annotations

import beam_infer as bi


def test_public_names_are_pinned_and_sorted():
    assert bi.__all__ == [
        "METRICS_NAMESPACE",
        "BatchConfig",
        "BeamInferError",
        "BearerToken",
        "ConfigurationError",
        "CreateModelHandler",
        "DeadLetter",
        "EndpointHandler",
        "EndpointSpec",
        "Feed",
        "IncompatibleVersionError",
        "InferenceError",
        "InferenceResults",
        "InputError",
        "ModelCache",
        "ModelLoadError",
        "ModelPathError",
        "ModelSpec",
        "ModelType",
        "Operation",
        "Output",
        "PredictionLogToRows",
        "Protocol",
        "ReadTFRecordBatches",
        "RetryConfig",
        "RunInference",
        "RunInferenceOnBatches",
        "RunInferenceOnKeyedBatches",
        "RunInferencePerModel",
        "RunInferencePerModelOnKeyedBatches",
        "RunInferenceWithDeadLetters",
        "SavedModelHandler",
        "SignatureError",
        "Stage",
        "TFModelHandlerNumpy",
        "TFModelHandlerTensor",
        "TagsError",
        "Tls",
        "UnknownArgumentError",
        "VersionPolicy",
        "default_numpy_inference_fn",
        "default_tensor_inference_fn",
        "patch_local_runner_metrics",
        "prediction_log_to_row",
        "write_warmup_requests",
    ]
    assert bi.__all__ == sorted(bi.__all__, key=lambda n: (not n.isupper(), n))
    assert all(hasattr(bi, name) for name in bi.__all__)


def test_version_comes_from_one_place():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    text = (root / "beam_infer" / "_version.py").read_text()
    assert re.search(r'^__version__ = "([^"]+)"$', text, re.M).group(1) == bi.__version__
    assert "_version.py" in (root / "setup.py").read_text()  # setup.py reads the same file


def test_error_tree():
    assert issubclass(bi.ModelPathError, bi.ConfigurationError)
    # tfx-bsl raises an OSError for a model path without a SavedModel; so does beam_infer.
    assert issubclass(bi.ModelPathError, FileNotFoundError)
    assert issubclass(bi.UnknownArgumentError, TypeError)
    assert issubclass(bi.SignatureError, ValueError)
    assert issubclass(bi.ModelLoadError, RuntimeError)
    assert all(issubclass(getattr(bi, n), bi.BeamInferError) for n in bi.__all__
               if n.endswith("Error"))
