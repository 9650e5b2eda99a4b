"""beam_infer: score data with TensorFlow SavedModels in Apache Beam pipelines.

``RunInference`` batches elements, scores each batch with a backend (``saved_model``: a
SavedModel loaded once per worker; ``remote``: a model behind a TF Serving, KServe v2 or
Vertex AI endpoint, ``EndpointSpec``) through the handler's three stages (encode, call,
build PredictionLogs) and passes keys through; wrappers retry, isolate failing elements
and route them to dead letters. ``docs/architecture.md`` maps the modules.

Example:
    >>> import apache_beam as beam
    >>> import beam_infer as bi
    >>> spec = bi.ModelSpec(model_path="gs://bucket/models/five/1")
    >>> with beam.Pipeline() as p:
    ...     logs = (p | beam.io.ReadFromTFRecord("examples.tfrecord")
    ...               | bi.RunInference(spec))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from beam_infer import _startup

# Before anything else imports TensorFlow and Beam; see _startup for why.
with _startup.dependencies_imported():
    from beam_infer._beam_api import (
        ModelType,
        TFModelHandlerNumpy,
        TFModelHandlerTensor,
        default_numpy_inference_fn,
        default_tensor_inference_fn,
    )
    from beam_infer._config import (
        BatchConfig,
        ModelCache,
        ModelSpec,
        Output,
        RetryConfig,
        VersionPolicy,
    )
    from beam_infer._dead_letters import DeadLetter, InferenceResults, Stage
    from beam_infer._errors import (
        BeamInferError,
        ConfigurationError,
        IncompatibleVersionError,
        InferenceError,
        InputError,
        ModelLoadError,
        ModelPathError,
        SignatureError,
        TagsError,
        UnknownArgumentError,
    )
    from beam_infer._handler import EndpointHandler, SavedModelHandler
    from beam_infer._local_runner import patch_local_runner_metrics
    from beam_infer._metrics import NAMESPACE as METRICS_NAMESPACE
    from beam_infer._reading import ReadTFRecordBatches
    from beam_infer._rows import PredictionLogToRows, prediction_log_to_row
    from beam_infer._signatures import Feed, Operation
    from beam_infer._tfx_api import (
        CreateModelHandler,
        RunInferenceOnKeyedBatches,
        RunInferencePerModel,
        RunInferencePerModelOnKeyedBatches,
    )
    from beam_infer._transform import (
        RunInference,
        RunInferenceOnBatches,
        RunInferenceWithDeadLetters,
    )
    from beam_infer._version import __version__ as __version__
    from beam_infer.saved_model._warmup import write_warmup_requests

#: Public names of ``beam_infer.remote``, imported when first used (``__getattr__``): a
#: pipeline that scores SavedModels never loads the endpoint clients, protocols and codecs.
_REMOTE_NAMES = frozenset({"BearerToken", "EndpointSpec", "Protocol", "Tls"})
if TYPE_CHECKING:  # what type checkers and the API reference read
    from beam_infer.remote import BearerToken, EndpointSpec, Protocol, Tls


def __getattr__(name: str) -> object:
    if name in _REMOTE_NAMES:
        from beam_infer import remote

        value = getattr(remote, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'beam_infer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_REMOTE_NAMES})


__all__ = [
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
