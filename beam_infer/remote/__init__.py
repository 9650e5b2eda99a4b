"""Models behind serving endpoints: TF Serving (gRPC, REST), KServe v2, Vertex AI.

Two layers:

* the backend (``_spec``, ``_backend``, ``_servable`` with ``_throttling`` and
  ``_row_cache``): ``EndpointSpec`` (one frozen spec for every protocol, or
  ``EndpointSpec.from_url``) and ``RemoteBackend`` / ``RemoteServable``, the ``_backend``
  seam's two halves, with which ``bi.RunInference(spec)`` and ``bi.EndpointHandler``
  score as they do local SavedModels: requests split by rows and bytes, sent ahead, a
  bounded number in flight per worker, client-side throttling, retries of retryable
  failures only. ``describe_endpoint`` is what ``beam-infer inspect`` shows;
* the clients (pure transport and codecs, no Beam): each client's ``call(calls)``
  takes the calls a servable takes, ``[(signature name, {input alias: batch})]``, and
  returns a ``RemoteResult``: the output dicts the local SavedModel would give (same
  aliases, dtypes and shapes), the version that answered, and a ``CallRecord`` per
  request (for metrics). Failures raise ``RetryableRemoteError`` (a
  ``TransientError``), ``RemoteInputError``, ``RequestTooLargeError`` or
  ``RemoteServerError`` (see ``_common``); nothing retries in the clients.
"""

from beam_infer.remote._backend import RemoteBackend, describe_endpoint
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
    TokenError,
    UntrustedServerError,
)
from beam_infer.remote._kserve_v2 import KServeV2Client, ModelMetadata
from beam_infer.remote._servable import ElementTooLargeError, RemoteServable
from beam_infer.remote._spec import EndpointSpec, Protocol, is_endpoint_url, parse_url
from beam_infer.remote._tf_serving_grpc import RemoteResult, TfServingGrpcClient
from beam_infer.remote._tf_serving_rest import TfServingRestClient
from beam_infer.remote._vertex import VertexClient

__all__ = [
    "DEFAULT_TIMEOUT_SECS", "BearerToken", "CallRecord", "ElementTooLargeError",
    "EndpointSpec", "KServeV2Client", "ModelMetadata", "Protocol", "RemoteBackend",
    "RemoteError", "RemoteInputError", "RemoteResult", "RemoteServable",
    "RemoteServerError", "RequestTooLargeError", "RetryableRemoteError", "Secret",
    "TfServingGrpcClient", "TfServingRestClient", "Tls", "TokenError", "UntrustedServerError",
    "VertexClient",
    "describe_endpoint", "is_endpoint_url", "parse_url",
]
