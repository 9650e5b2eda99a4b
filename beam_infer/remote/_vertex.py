"""Vertex AI online prediction: ``projects/P/locations/L/endpoints/E:predict``.

The request is ``{"instances": [...]}`` in TF Serving's row format (Vertex's
TensorFlow serving containers are TF Serving behind it: one JSON value per row, an
object per row for several inputs, ``{"b64": ...}`` for bytes), optionally with
``parameters``. The answer is ``{"predictions": [...], "deployedModelId": ...,
"model": ..., "modelVersionId": ...}``; predictions are read with the model's
SignatureDef (Vertex has no metadata route, so the client is given it). The version
that answered is ``modelVersionId`` (a number in Vertex's model registry).

Errors come as ``{"error": {"code", "message", "status"}}`` and are classed like any
HTTP error (``_http``). Tokens: Application Default Credentials by default (refreshed
when they expire), or any ``BearerToken``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from tensorflow.core.protobuf import meta_graph_pb2

from beam_infer.remote._common import DEFAULT_TIMEOUT_SECS, BearerToken, Tls, row_count
from beam_infer.remote._http import HttpTransport
from beam_infer.remote._tf_serving_grpc import Calls, RemoteResult
from beam_infer.remote._tf_serving_rest import predict_body, predict_outputs

PROTOCOL = "vertex"

#: Vertex refuses online prediction requests over 1.5 MB.
MAX_REQUEST_BYTES = 1_500_000


def base_url(location: str, api_endpoint: str | None = None) -> str:
    """Where a location's endpoints are served: ``api_endpoint``, else Vertex's regional host."""
    return api_endpoint or f"https://{location}-aiplatform.googleapis.com"


def endpoint_url(project: str, location: str, endpoint: str, *,
                 api_endpoint: str | None = None) -> str:
    return (f"{base_url(location, api_endpoint).rstrip('/')}/v1/projects/{project}/"
            f"locations/{location}/endpoints/{endpoint}:predict")


def predict_request(feeds, parameters: Mapping | None = None) -> dict:
    body = {"instances": predict_body("", feeds)["instances"]}
    if parameters:
        body["parameters"] = dict(parameters)
    return body


class VertexClient:
    """A Vertex AI endpoint serving a TensorFlow model.

    Args:
        project, location, endpoint: The endpoint's resource name parts.
        signature: The deployed model's serving SignatureDef (decodes the predictions).
        signature_name: The name calls use for it.
        api_endpoint: Another host (a regional or private endpoint; a test server).
        token: Default: Application Default Credentials.
        parameters: Sent as the request's ``parameters``.
        timeout_secs, tls, pool_size: see ``HttpTransport``.
    """

    def __init__(self, project: str, location: str, endpoint: str, *,
                 signature: meta_graph_pb2.SignatureDef,
                 signature_name: str = "serving_default", api_endpoint: str | None = None,
                 token: BearerToken | None = None, parameters: Mapping | None = None,
                 timeout_secs: float = DEFAULT_TIMEOUT_SECS, tls: Tls | None = None,
                 pool_size: int = 8):
        self.url = endpoint_url(project, location, endpoint, api_endpoint=api_endpoint)
        self.signature = signature
        self.signature_name = signature_name
        self.parameters = dict(parameters or {})
        self._http = HttpTransport(PROTOCOL, timeout_secs=timeout_secs, tls=tls,
                                   token=token or BearerToken(google=True),
                                   pool_size=pool_size)

    def __repr__(self) -> str:
        return f"VertexClient(url={self.url!r}, transport={self._http!r})"

    def close(self) -> None:
        self._http.close()

    def requests(self, calls: Calls) -> list[tuple[bytes, int]]:
        sent = []
        for name, feeds in calls:
            if name != self.signature_name:
                raise ValueError(f"the endpoint serves {self.signature_name!r}, not {name!r}")
            sent.append((json.dumps(predict_request(feeds, self.parameters),
                                    separators=(",", ":")).encode(), row_count(feeds)))
        return sent

    def request_bytes(self, calls: Calls) -> int:
        return max((len(body) for body, _ in self.requests(calls)), default=0)

    @staticmethod
    def prepared_bytes(prepared: Sequence[tuple[bytes, int]]) -> int:
        return max((len(body) for body, _ in prepared), default=0)

    def call(self, calls: Calls, prepared: Sequence | None = None) -> RemoteResult:
        """``prepared``: what ``requests(calls)`` returned, if already built."""
        outputs, records, version = [], [], None
        for body, rows in (self.requests(calls) if prepared is None else prepared):
            answer, record = self._http.request(
                "POST", self.url, name="predict", body=body, rows=rows,
                headers={"Content-Type": "application/json"})
            records.append(record)
            parsed = answer.json()
            outputs.append(predict_outputs(parsed, self.signature))
            answered = str(parsed.get("modelVersionId") or "")
            version = int(answered) if answered.isdigit() else None
        return RemoteResult(outputs, version, records)
