"""``RemoteBackend``: a model behind an endpoint as a ``_backend``, built with the pipeline.

``RemoteBackend`` reads the model's signatures from the server (TF Serving's
``GetModelMetadata`` or REST ``/metadata``, KServe's v2 metadata; Vertex and
``signatures_from``: a local SavedModel), within seconds or with a clear error, and
plans them with ``_signatures.plan`` as a local model's are. On the worker it loads a
``_servable.RemoteServable`` (requests, throttling, send-ahead). ``refreshed_spec`` points
a spec at the model a refresh URL names; ``describe_endpoint`` is ``beam-infer inspect``.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping

from beam_infer._backend import ModelVersion, SpecOptions
from beam_infer._errors import ConfigurationError, ModelPathError, SignatureError
from beam_infer._signatures import SignaturePlan, plan, signatures_of
from beam_infer._validation import Validator
from beam_infer.remote._common import (
    NoMetadataRouteError,
    RemoteError,
    RemoteServerError,
    RetryableRemoteError,
    Tls,
    TokenError,
    UntrustedServerError,
    read_ca_file,
)
from beam_infer.remote._kserve_v2 import KServeV2Client
from beam_infer.remote._servable import RemoteServable
from beam_infer.remote._spec import EndpointSpec, Protocol, parse_url
from beam_infer.remote._tf_serving_grpc import TfServingGrpcClient
from beam_infer.remote._tf_serving_rest import TfServingRestClient
from beam_infer.remote._vertex import VertexClient
from beam_infer.remote._vertex import base_url as vertex_base_url

#: Seconds the build-time metadata read may take per attempt (a server that is down
#: fails the pipeline's construction within seconds, never hangs it).
METADATA_TIMEOUT_SECS = 5.0
METADATA_ATTEMPTS = 2
def make_client(spec: EndpointSpec, *, timeout_secs: float | None = None,
                signatures: Mapping | None = None):
    """The ``remote`` client of ``spec`` (one per worker; ``signatures``: already read)."""
    timeout = timeout_secs or spec.timeout_secs
    common = {"timeout_secs": timeout, "tls": spec.tls, "token": spec.token}
    if spec.protocol is Protocol.TF_SERVING_GRPC:
        return TfServingGrpcClient(
            spec.target, spec.model_name, version=spec.version,
            version_label=spec.version_label, example_api=spec.example_api,
            max_message_bytes=max(64 * 2**20, 2 * spec.request_bytes),
            signatures=signatures, **common)
    pool = max(spec.max_in_flight, 1)
    if spec.protocol is Protocol.TF_SERVING_REST:
        return TfServingRestClient(
            spec.target, spec.model_name, version=spec.version,
            version_label=spec.version_label, columnar=spec.columnar,
            example_api=spec.example_api, pool_size=pool, signatures=signatures, **common)
    if spec.protocol is Protocol.KSERVE_V2:
        return KServeV2Client(spec.target, spec.model_name, version=spec.version,
                              signature_name=spec.signature_names[0], pool_size=pool,
                              **common)
    project, location, endpoint = spec.vertex_endpoint
    signature = (signatures or {}).get(spec.signature_names[0])
    if signature is None:
        raise SignatureError(
            f"signature {spec.signature_names[0]!r} is not in {spec.signatures_from}; "
            f"available: {', '.join(sorted(signatures or {})) or 'none'}.")
    return VertexClient(project, location, endpoint, signature=signature,
                        signature_name=spec.signature_names[0],
                        api_endpoint=spec.api_endpoint, pool_size=pool, **common)


def read_signatures(spec: EndpointSpec) -> tuple[dict, int | None]:
    """The endpoint's SignatureDefs and the version its metadata names (if it says).

    Raises:
        ConfigurationError: the server cannot be reached or does not serve the model.
    """
    if spec.signatures_from is not None:
        from beam_infer.saved_model import _files

        try:
            saved = _files.read_saved_model(spec.signatures_from)
            graph = _files.select_meta_graph(saved, ("serve",), spec.signatures_from)
        except OSError as e:
            raise ModelPathError(
                f"EndpointSpec.signatures_from={spec.signatures_from!r} holds no readable "
                f"SavedModel ({type(e).__name__}); point it at the SavedModel the endpoint "
                "serves.") from None
        return dict(graph.signature_def), None
    try:
        read_ca_file(spec.tls)  # here too: the metadata is read over this TLS now
    except RemoteServerError as e:
        raise ConfigurationError(f"{spec.url}: {e}") from None
    client = make_client(spec, timeout_secs=min(spec.timeout_secs, METADATA_TIMEOUT_SECS))
    error: RemoteError | None = None
    for attempt in range(METADATA_ATTEMPTS):
        try:
            if spec.protocol is Protocol.KSERVE_V2:
                defs, _ = client.signature_defs()
                return defs, None
            defs, version, _ = client.metadata()
            return defs, version
        except RetryableRemoteError as e:
            error = e
            if attempt + 1 < METADATA_ATTEMPTS:
                time.sleep(0.5)
        except RemoteError as e:
            error = e
            break
        finally:
            close = getattr(client, "close", None)
            if close is not None:
                close()
    if isinstance(error, UntrustedServerError | TokenError | NoMetadataRouteError):
        raise ConfigurationError(
            f"could not read the model's signatures from {spec.url}: {error}") from None
    raise ConfigurationError(
        f"could not read the model's signatures from {spec.url}: {error}. Check that the "
        "server is up, reachable from here and serves this model (name, version); or pass "
        "EndpointSpec(signatures_from=<the SavedModel it serves>) to skip the metadata "
        "call.") from None


class RemoteBackend(SpecOptions):
    """A model behind an endpoint (``_backend.Backend``): read and planned at build time.

    Args:
        spec: The endpoint and how it is called.

    Raises:
        ConfigurationError: the server cannot be reached, or its signatures do not fit
            (an unknown signature lists the available ones).
    """

    def __init__(self, spec: EndpointSpec):
        if not isinstance(spec, EndpointSpec):
            raise ConfigurationError(f"RemoteBackend takes an EndpointSpec; got "
                                     f"{type(spec).__name__}.")
        defs, version = read_signatures(spec)
        if spec.protocol is Protocol.TF_SERVING_REST and spec.version is None \
                and not spec.version_label and version is not None:
            # REST answers do not name the version: ask for the one read now, all job
            # long, so the version logs record is the one that answered.
            spec = spec.replace(version=version)
        self.spec = spec
        self.signature_defs = defs
        self.plan: SignaturePlan = plan(signatures_of(defs), spec.signature_names,
                                        spec.url)
        self.version = ModelVersion(path=spec.url, name=spec.recorded_name,
                                    version=spec.version)

    @property
    def location(self) -> str:
        return self.spec.url

    share_across_processes = False  # a connection per process is cheap
    sends_ahead = True  # RemoteServable.send_ahead (see _send_ahead)

    def load(self) -> RemoteServable:
        return RemoteServable(self.spec, make_client(self.spec, signatures=self.signature_defs))

    def validator(self) -> Validator:
        if self.spec.signatures_from is not None:
            from beam_infer.saved_model._backend import validator

            return validator(self.spec.signatures_from, ("serve",), self.plan,
                             strict_casts=self.spec.strict_input_casts)
        return Validator.for_plan(self.plan, strict_casts=self.spec.strict_input_casts)

    def model_copies(self) -> int:
        return 1

    def update_model_path(self, model_path: str) -> RemoteBackend:
        """Beam's model-refresh side input, given an endpoint URL (``EndpointSpec.from_url``).

        See ``refreshed_spec``: the URL says which model, the pipeline's spec the rest.
        The new model's signatures are read (and checked) now, as at build time.
        """
        return RemoteBackend(refreshed_spec(self.spec, model_path))

    def describe(self) -> str:
        """The endpoint, its plan and each signature, as lines (for ``beam-infer inspect``)."""
        lines = [self.spec.describe(),
                 f"operation: {self.plan.operation.value}, fed {self.plan.feed.value}"]
        if self.spec.version is not None:
            lines.append(f"version: {self.spec.version}")
        for signature in signatures_of(self.signature_defs).values():
            lines.append(signature.describe())
        return "\n".join(lines)

    def __repr__(self) -> str:
        names = ",".join(s.name for s in self.plan.signatures)
        return f"{self.spec.url}, {self.plan.operation.value}:{names}"


def refreshed_spec(spec: EndpointSpec, url: str) -> EndpointSpec:
    """``spec`` pointed at the model ``url`` names (a model-refresh side input's path).

    The URL names the whole model: protocol, server, model, version or label (none: the
    server's latest, so a version pinned by the old URL is not carried over) and whether
    TLS is used (``grpcs://``, ``https://``). What a URL cannot say is kept: the token
    (only for the same host: see ``_check_token_host``), the TLS CA (``tls.ca_file``;
    ``server_name`` only while the server is the same one),
    batching, request limits, timeouts and signature names. Options of another protocol
    (``columnar``, ``example_api``, ``api_endpoint``) are dropped when the protocol changes.

    Raises:
        ConfigurationError: ``url`` is not an endpoint URL, or it names another host
            while ``spec`` has a token.
    """
    fields = parse_url(url)
    protocol, target = fields["protocol"], fields["target"]
    same_server = protocol is spec.protocol and target == spec.target
    secure = "tls" in fields or target.startswith("https://")
    tls = None
    if secure:
        old = spec.tls or Tls()
        tls = Tls(ca_file=old.ca_file, server_name=old.server_name if same_server else None)
        if tls == Tls() and protocol is not Protocol.TF_SERVING_GRPC:
            tls = None  # https with the system's CAs
    changes = {"protocol": protocol, "target": target, "tls": tls,
               "model_name": fields.get("model_name"), "version": fields.get("version"),
               "version_label": fields.get("version_label")}
    if protocol is Protocol.VERTEX:  # its URLs say neither TLS nor the recorded name
        changes["tls"] = spec.tls if spec.protocol is Protocol.VERTEX else None
        if same_server:
            changes["model_name"] = spec.model_name
    if protocol is not spec.protocol:
        if protocol is not Protocol.TF_SERVING_REST:
            changes["columnar"] = False
        if protocol not in (Protocol.TF_SERVING_GRPC, Protocol.TF_SERVING_REST):
            changes["example_api"] = False
        if protocol is not Protocol.VERTEX:
            changes["api_endpoint"] = None
    refreshed = spec.replace(**changes)
    _check_token_host(spec, refreshed)
    return refreshed


def _server_host(spec: EndpointSpec) -> str:
    """The host ``spec``'s requests go to, lower case, without port or path."""
    if spec.protocol is Protocol.VERTEX:
        base = vertex_base_url(spec.vertex_endpoint[1], spec.api_endpoint)
    elif spec.protocol is Protocol.TF_SERVING_GRPC:
        base = "//" + spec.target
    else:
        base = spec.target
    return (urllib.parse.urlsplit(base).hostname or "").lower()


def _check_token_host(old: EndpointSpec, new: EndpointSpec) -> None:
    """A token goes only to the host it was given for.

    A refresh URL comes from a side input (a file listing, a Pub/Sub topic) that whoever
    can write to it controls: following it with the token would hand the credential to
    any host it names. The port and protocol may change (TF Serving's gRPC and REST
    ports), the host may not; Google credentials may go to any ``googleapis.com`` host
    (Vertex's regions), the only hosts they are meant for.
    """
    if old.token is None:
        return
    before, after = _server_host(old), _server_host(new)
    if after == before:
        return
    if old.token.google and after.endswith(".googleapis.com"):
        return
    raise ConfigurationError(
        f"the model-refresh URL {new.url} names the host {after!r}, but this pipeline's "
        f"EndpointSpec.token is for {before!r}; a token is not sent to another host. "
        f"Refresh to a model served on {before!r}, or start a pipeline whose "
        "EndpointSpec names the new server and its token.")


def describe_endpoint(endpoint: EndpointSpec | str) -> str:
    """What ``beam-infer inspect`` shows of an endpoint: reads its metadata now.

    Example:
        >>> print(describe_endpoint("grpc://localhost:8500/models/five"))
    """
    spec = endpoint if isinstance(endpoint, EndpointSpec) else EndpointSpec.from_url(endpoint)
    return RemoteBackend(spec).describe()
