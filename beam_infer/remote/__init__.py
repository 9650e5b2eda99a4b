"""Clients of remote model endpoints: TF Serving (gRPC, REST), KServe v2, Vertex AI.

Pure transport and codecs, no Beam: each client's ``call(calls)`` takes the calls
``ServingModel.call`` takes, ``[(signature name, {input alias: batch})]``, and returns a
``RemoteResult``: the output dicts the local SavedModel would give (same aliases,
dtypes and shapes), the version that answered, and a ``CallRecord`` per request (for
metrics). Failures raise ``RetryableRemoteError``, ``RemoteInputError``,
``RequestTooLargeError`` or ``RemoteServerError`` (see ``_common``); nothing retries here.
"""

from beam_infer.remote._common import (
    DEFAULT_TIMEOUT_SECS,
    BearerToken,
    CallRecord,
    RemoteError,
    RemoteInputError,
    RemoteServerError,
    RequestTooLargeError,
    RetryableRemoteError,
    Secret,
    Tls,
)
from beam_infer.remote._kserve_v2 import KServeV2Client, ModelMetadata
from beam_infer.remote._tf_serving_grpc import RemoteResult, TfServingGrpcClient
from beam_infer.remote._tf_serving_rest import TfServingRestClient
from beam_infer.remote._vertex import VertexClient

__all__ = [
    "DEFAULT_TIMEOUT_SECS", "BearerToken", "CallRecord", "KServeV2Client", "ModelMetadata",
    "RemoteError", "RemoteInputError", "RemoteResult", "RemoteServerError",
    "RequestTooLargeError", "RetryableRemoteError", "Secret", "TfServingGrpcClient",
    "TfServingRestClient", "Tls", "VertexClient",
]
