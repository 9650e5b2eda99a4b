"""``EndpointSpec``: a model behind a serving endpoint, as a pipeline is built with it.

One frozen, keyword-only spec for every protocol (``Protocol``: TF Serving gRPC, TF
Serving REST, KServe v2, Vertex AI), checked when it is built, and ``from_url`` for jobs
that take ``--endpoint URL``::

    grpc://HOST:PORT/models/NAME[/versions/N | /labels/L]      TF Serving gRPC (grpcs://: TLS)
    http(s)://HOST[:PORT][/PREFIX]/v1/models/NAME[/versions/N | /labels/L]   TF Serving REST
    http(s)://HOST[:PORT][/PREFIX]/v2/models/NAME[/versions/N]               KServe v2
    vertex://projects/P/locations/L/endpoints/E                 Vertex AI

A URL never holds a credential: one with ``user:password@`` or a token in its query is
refused; tokens come from ``BearerToken(file=|env=|google=True)``, read on the worker.
``url`` writes a spec back as its URL, ``describe()`` as lines for ``beam-infer inspect``.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import urllib.parse
from typing import Any

from beam_infer._config import BatchConfig, is_number, is_whole
from beam_infer._errors import ConfigurationError
from beam_infer._keywords import checked_keywords
from beam_infer.remote._common import DEFAULT_TIMEOUT_SECS, BearerToken, Tls

DEFAULT_SIGNATURE = "serving_default"
_BATCHING = BatchConfig()


class Protocol(enum.Enum):
    """How the endpoint is called (see ``EndpointSpec``)."""

    TF_SERVING_GRPC = "tf_serving_grpc"
    TF_SERVING_REST = "tf_serving_rest"
    KSERVE_V2 = "kserve_v2"
    VERTEX = "vertex"


#: Request bytes per protocol: the default cap, and the most a spec may set.
#: gRPC: under the 4 MiB default message limit of gRPC servers (TF Serving #288);
#: Vertex: under its 1.5 MB online-prediction limit; REST: a size servers take.
DEFAULT_MAX_REQUEST_BYTES = {
    Protocol.TF_SERVING_GRPC: 4_000_000,
    Protocol.TF_SERVING_REST: 8_000_000,
    Protocol.KSERVE_V2: 8_000_000,
    Protocol.VERTEX: 1_400_000,
}
LIMIT_REQUEST_BYTES = {
    Protocol.TF_SERVING_GRPC: 64 * 2**20,  # the client channel's cap
    Protocol.TF_SERVING_REST: 256 * 2**20,
    Protocol.KSERVE_V2: 256 * 2**20,
    Protocol.VERTEX: 1_500_000,
}
DEFAULT_MAX_REQUEST_ROWS = 256

_VERTEX_TARGET = re.compile(r"^projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/"
                            r"endpoints/(?P<endpoint>[^/:]+)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@checked_keywords
@dataclasses.dataclass(frozen=True, kw_only=True)
class EndpointSpec:
    """A model behind a serving endpoint: where, which signatures, batching, limits.

    ``bi.RunInference(spec)`` scores with it as with a ``ModelSpec``: the same
    PredictionLogs (the version that answered in ``model_spec``), lean results, dead
    letters and retries. Its signatures are read from the server when the pipeline is
    built (TF Serving's ``GetModelMetadata`` or REST ``/metadata``, KServe's v2 model
    metadata); Vertex has no metadata route, so give ``signatures_from``.

    Attributes:
        protocol: A ``Protocol``.
        target: gRPC: ``host:port``. REST and KServe: the base URL
            (``http(s)://host:port``, maybe with a path prefix). Vertex:
            ``projects/P/locations/L/endpoints/E``.
        model_name: The served model's name (TF Serving, KServe: required). Vertex: the
            name PredictionLogs record (default: the endpoint's id).
        version: Ask this version (TF Serving, KServe). Unset: the server's latest; over
            TF Serving REST, whose answers do not name a version, the latest version
            the metadata names when the pipeline is built is asked for all job long.
        version_label: TF Serving: ask the version this label points at.
        signature_names: Signatures to run, as ``ModelSpec.signature_names``.
        batching: How Beam batches elements into model calls (``BatchConfig``).
        max_request_rows: Rows per request: a call is split into requests of at most
            this many rows. Unset: ``batching.max_batch_size``, else 256.
        max_request_bytes: Bytes per request body; a call is split to stay under it,
            and an element whose own request is larger is dead-lettered with the reason.
            Unset: 4,000,000 for gRPC, 1,400,000 for Vertex, 8,000,000 for REST/KServe.
        max_in_flight: Requests in flight at once per worker process, all threads
            together (a worker does not idle on network latency).
        timeout_secs: Each request's deadline.
        tls: ``Tls(ca_file=..., server_name=...)`` for gRPC (``grpcs://``) or a custom CA
            for ``https://``; None: plain text for gRPC, the system's CAs for https.
        token: A ``BearerToken`` sent with every request (Vertex default: Application
            Default Credentials). Never shown in reprs, logs, errors or outputs.
        example_api: TF Serving: call Classify / Regress / MultiInference (REST
            ``:classify`` / ``:regress``) for classify and regress signatures instead of
            Predict; the logs are the same.
        columnar: TF Serving REST: send ``inputs`` (columnar) instead of ``instances``.
        signatures_from: A local SavedModel whose signatures the endpoint serves: read
            instead of the server's metadata (required for Vertex); also gives the
            validator the graph's feature rules.
        api_endpoint: Vertex: another host (regional, private, a test server).
        pad_variable_length_inputs, strict_input_casts: How tensor elements are
            stacked, as in ``ModelSpec``.

    Example:
        >>> spec = bi.EndpointSpec(protocol=bi.Protocol.TF_SERVING_GRPC,
        ...                        target="localhost:8500", model_name="five")
        >>> spec = bi.EndpointSpec.from_url("grpc://localhost:8500/models/five/versions/2",
        ...                                 max_in_flight=8)
    """

    protocol: Protocol
    target: str
    model_name: str | None = None
    version: int | None = None
    version_label: str | None = None
    signature_names: tuple[str, ...] = (DEFAULT_SIGNATURE,)
    batching: BatchConfig = _BATCHING
    max_request_rows: int | None = None
    max_request_bytes: int | None = None
    max_in_flight: int = 4
    timeout_secs: float = DEFAULT_TIMEOUT_SECS
    tls: Tls | None = None
    token: BearerToken | None = None
    example_api: bool = False
    columnar: bool = False
    signatures_from: str | None = None
    api_endpoint: str | None = None
    pad_variable_length_inputs: bool = False
    strict_input_casts: bool = False

    def __post_init__(self) -> None:
        protocol = self.protocol
        if not isinstance(protocol, Protocol):
            raise ConfigurationError(
                f"EndpointSpec.protocol must be a bi.Protocol; got {protocol!r}. One of: "
                f"{', '.join('Protocol.' + p.name for p in Protocol)}.")
        self._check_target()
        if protocol is not Protocol.VERTEX and not self.model_name:
            raise ConfigurationError(
                f"EndpointSpec.model_name is required for {protocol.name}: the name the "
                f"server serves the model under; got {self.model_name!r}.")
        if self.model_name is not None and (not isinstance(self.model_name, str)
                                            or not _NAME.match(self.model_name)):
            raise ConfigurationError(
                f"EndpointSpec.model_name must be a model name (letters, digits, _ . -); "
                f"got {self.model_name!r}.")
        if self.version is not None and not is_whole(self.version, at_least=0):
            raise ConfigurationError(
                f"EndpointSpec.version must be a version number >= 0; got {self.version!r}.")
        if self.version_label is not None:
            if protocol not in (Protocol.TF_SERVING_GRPC, Protocol.TF_SERVING_REST):
                raise ConfigurationError(
                    f"EndpointSpec.version_label is TF Serving's; {protocol.name} has no "
                    "version labels. Pass version=N, or unset version_label.")
            if not isinstance(self.version_label, str) or not _NAME.match(self.version_label):
                raise ConfigurationError(
                    f"EndpointSpec.version_label must be a label name; got "
                    f"{self.version_label!r}.")
            if self.version is not None:
                raise ConfigurationError(
                    f"EndpointSpec takes a version or a version_label, not both; got "
                    f"version={self.version}, version_label={self.version_label!r}.")
        if protocol is Protocol.VERTEX and self.version is not None:
            raise ConfigurationError(
                "EndpointSpec.version does not apply to Vertex: an endpoint splits traffic "
                "among its deployed models itself; the version that answered is recorded.")
        names = self.signature_names
        if isinstance(names, str) or not names or not all(
                isinstance(n, str) and n for n in names):
            raise ConfigurationError(
                f"EndpointSpec.signature_names must be a non-empty tuple of names; got "
                f"{names!r}. For one signature write signature_names=(\"{names if isinstance(names, str) else DEFAULT_SIGNATURE}\",).")  # noqa: E501
        object.__setattr__(self, "signature_names", tuple(names))
        if protocol in (Protocol.KSERVE_V2, Protocol.VERTEX) and len(self.signature_names) > 1:
            raise ConfigurationError(
                f"{protocol.name} serves one signature per model; got signature_names="
                f"{self.signature_names}. Name one, or use TF Serving for multi-inference.")
        if not isinstance(self.batching, BatchConfig):
            raise ConfigurationError(
                f"EndpointSpec.batching must be a BatchConfig; got "
                f"{type(self.batching).__name__}.")
        for name, least in (("max_request_rows", 1), ("max_request_bytes", 1),
                            ("max_in_flight", 1)):
            value = getattr(self, name)
            if value is not None and not is_whole(value, at_least=least):
                raise ConfigurationError(
                    f"EndpointSpec.{name} must be a positive integer; got {value!r}.")
        limit = LIMIT_REQUEST_BYTES[protocol]
        if self.max_request_bytes is not None and self.max_request_bytes > limit:
            raise ConfigurationError(
                f"EndpointSpec.max_request_bytes={self.max_request_bytes:,} is over what "
                f"{protocol.name} takes ({limit:,} bytes); pass at most {limit:,} "
                f"(default {DEFAULT_MAX_REQUEST_BYTES[protocol]:,}).")
        if not is_number(self.timeout_secs, above=0):
            raise ConfigurationError(
                f"EndpointSpec.timeout_secs must be a positive number of seconds; got "
                f"{self.timeout_secs!r}. Every request has a deadline.")
        if self.tls is not None and not isinstance(self.tls, Tls):
            raise ConfigurationError(
                f"EndpointSpec.tls must be a bi.Tls; got {type(self.tls).__name__}. "
                "Example: tls=bi.Tls(ca_file='/etc/ssl/my-ca.pem').")
        if self.tls is not None and self.tls.server_name and \
                protocol is not Protocol.TF_SERVING_GRPC:
            raise ConfigurationError(
                f"Tls.server_name applies to gRPC only; {protocol.name} checks the "
                f"certificate against the host in the URL. Connect by a name the server's "
                f"certificate holds and drop server_name={self.tls.server_name!r}.")
        if self.token is not None and not isinstance(self.token, BearerToken):
            raise ConfigurationError(
                f"EndpointSpec.token must be a bi.BearerToken; got "
                f"{type(self.token).__name__}. Read it where the workers run: "
                "token=bi.BearerToken(file='/secrets/token') or BearerToken(env='TOKEN').")
        for name in ("example_api", "columnar", "pad_variable_length_inputs",
                     "strict_input_casts"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(
                    f"EndpointSpec.{name} must be True or False; got {getattr(self, name)!r}.")
        if self.example_api and protocol not in (Protocol.TF_SERVING_GRPC,
                                                 Protocol.TF_SERVING_REST):
            raise ConfigurationError(
                f"EndpointSpec.example_api is TF Serving's Classify/Regress API; "
                f"{protocol.name} has none. Unset it.")
        if self.columnar and protocol is not Protocol.TF_SERVING_REST:
            raise ConfigurationError(
                "EndpointSpec.columnar is TF Serving REST's 'inputs' format; "
                f"{protocol.name} has no such choice. Unset it.")
        if self.signatures_from is not None and (not isinstance(self.signatures_from, str)
                                                 or not self.signatures_from):
            raise ConfigurationError(
                f"EndpointSpec.signatures_from must be a SavedModel path; got "
                f"{self.signatures_from!r}.")
        if protocol is Protocol.VERTEX and self.signatures_from is None:
            raise ConfigurationError(
                "Vertex endpoints have no metadata route: pass EndpointSpec("
                "signatures_from='gs://.../saved_model_dir') (the SavedModel deployed "
                "behind the endpoint) so its signatures can be checked and decoded.")
        if self.api_endpoint is not None and protocol is not Protocol.VERTEX:
            raise ConfigurationError(
                "EndpointSpec.api_endpoint is Vertex's host override; for "
                f"{protocol.name} put the host in target.")

    def _check_target(self) -> None:
        target, protocol = self.target, self.protocol
        if not isinstance(target, str) or not target:
            raise ConfigurationError(f"EndpointSpec.target must be a non-empty string; got "
                                     f"{target!r}.")
        if protocol is Protocol.VERTEX:
            if not _VERTEX_TARGET.match(target):
                raise ConfigurationError(
                    f"a Vertex target is projects/P/locations/L/endpoints/E; got {target!r}.")
            return
        if protocol is Protocol.TF_SERVING_GRPC:
            if "://" in target or "@" in target or not re.match(r"^[^/\s]+:\d+$", target):
                raise ConfigurationError(
                    f"a gRPC target is host:port (e.g. 'localhost:8500'); got {target!r}. "
                    "For a URL use EndpointSpec.from_url('grpc://host:port/models/NAME').")
            return
        parsed = urllib.parse.urlsplit(target)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigurationError(
                f"a {protocol.name} target is a base URL such as 'http://localhost:8501'; "
                f"got {target!r}.")
        _refuse_credentials(parsed, "EndpointSpec.target")
        if parsed.query or parsed.fragment or re.search(r"/v[12]/models", parsed.path):
            raise ConfigurationError(
                f"{protocol.name}'s target is the server's base URL, without /v1/models/... "
                f"or a query; got {target!r}. Pass model_name=, or use "
                "EndpointSpec.from_url for a whole model URL.")
        if self.tls is not None and parsed.scheme != "https":
            raise ConfigurationError(
                f"EndpointSpec.tls needs an https:// target; got {target!r}.")

    # --- derived values -----------------------------------------------------------------

    @property
    def request_rows(self) -> int:
        """Rows per request (``max_request_rows`` or its default)."""
        return self.max_request_rows or self.batching.max_batch_size or \
            DEFAULT_MAX_REQUEST_ROWS

    @property
    def request_bytes(self) -> int:
        """Bytes per request (``max_request_bytes`` or the protocol's default)."""
        return self.max_request_bytes or DEFAULT_MAX_REQUEST_BYTES[self.protocol]

    @property
    def url(self) -> str:
        """The endpoint as one URL (``from_url`` reads it back); never a credential."""
        protocol = self.protocol
        if protocol is Protocol.VERTEX:
            return f"vertex://{self.target}"
        if protocol is Protocol.TF_SERVING_GRPC:
            scheme = "grpcs" if self.tls is not None else "grpc"
            url = f"{scheme}://{self.target}/models/{self.model_name}"
        else:
            api = "v2" if protocol is Protocol.KSERVE_V2 else "v1"
            url = f"{self.target.rstrip('/')}/{api}/models/{self.model_name}"
        if self.version is not None:
            return f"{url}/versions/{self.version}"
        if self.version_label:
            return f"{url}/labels/{self.version_label}"
        return url

    @property
    def vertex_endpoint(self) -> tuple[str, str, str]:
        """Vertex's (project, location, endpoint)."""
        match = _VERTEX_TARGET.match(self.target)
        return match["project"], match["location"], match["endpoint"]

    @property
    def recorded_name(self) -> str:
        """The model name PredictionLogs record in ``model_spec.name``."""
        if self.model_name:
            return self.model_name
        return self.vertex_endpoint[2]

    def replace(self, **changes: Any) -> EndpointSpec:
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """The spec as lines (no credential), for ``beam-infer inspect`` and logs."""
        lines = [f"endpoint: {self.url}", f"protocol: {self.protocol.name}",
                 f"signatures: {', '.join(self.signature_names)}",
                 f"requests: at most {self.request_rows} rows and {self.request_bytes:,} "
                 f"bytes, {self.max_in_flight} in flight per worker, {self.timeout_secs:g} s "
                 "timeout"]
        if self.token is not None:
            lines.append(f"token: {_token_source(self.token)}")
        if self.tls is not None:
            lines.append(f"tls: ca_file={self.tls.ca_file or 'system'}")
        if self.signatures_from:
            lines.append(f"signatures from: {self.signatures_from}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}"
                           for f in dataclasses.fields(self)
                           if f.name != "token" and getattr(self, f.name) != f.default)
        token = f", token=<{_token_source(self.token)}>" if self.token is not None else ""
        return f"EndpointSpec({fields}{token})"

    # --- URLs ---------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **fields: Any) -> EndpointSpec:
        """The spec of an endpoint URL (see the module docstring), with ``fields`` set too.

        Raises:
            ConfigurationError: the URL is not one of the forms, holds a credential, or
                a field does not fit it.
        """
        return cls(**{**parse_url(url), **fields})


def _token_source(token: BearerToken) -> str:
    if token.file is not None:
        return f"file {token.file}"
    if token.env is not None:
        return f"environment variable {token.env}"
    if token.google:
        return "Google Application Default Credentials"
    return "a value (redacted)"


_FORMS = ("grpc://HOST:PORT/models/NAME[/versions/N|/labels/L], "
          "http(s)://HOST[:PORT]/v1/models/NAME[/versions/N|/labels/L] (TF Serving REST), "
          "http(s)://HOST[:PORT]/v2/models/NAME[/versions/N] (KServe v2), "
          "vertex://projects/P/locations/L/endpoints/E")
_MODEL_PATH = re.compile(r"^(?P<prefix>.*?)/(?P<api>v1|v2)/models/(?P<name>[^/:]+)"
                         r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?/?$")
_GRPC_PATH = re.compile(r"^/models/(?P<name>[^/:]+)"
                        r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?/?$")


#: The URL schemes of endpoints (anything else is a path on a Beam filesystem).
SCHEMES = ("grpc", "grpcs", "http", "https", "vertex")


def is_endpoint_url(text: str) -> bool:
    """Whether ``text`` names an endpoint (by its scheme) rather than a model path."""
    return isinstance(text, str) and urllib.parse.urlsplit(text.strip()).scheme.lower() in SCHEMES


def parse_url(url: str) -> dict[str, Any]:
    """An endpoint URL as ``EndpointSpec`` fields (see the module docstring)."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"an endpoint URL must be a non-empty string; got {url!r}. "
                                 f"Forms: {_FORMS}.")
    url = url.strip()
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.lower()
    _refuse_credentials(parsed, "<the URL>")
    if scheme == "vertex":
        target = (parsed.netloc + parsed.path).strip("/")
        if not _VERTEX_TARGET.match(target):
            raise ConfigurationError(
                f"a Vertex endpoint URL is vertex://projects/P/locations/L/endpoints/E; "
                f"got {url!r}.")
        return {"protocol": Protocol.VERTEX, "target": target}
    if scheme in ("grpc", "grpcs"):
        match = _GRPC_PATH.match(parsed.path)
        if not parsed.hostname or parsed.port is None or match is None:
            raise ConfigurationError(
                f"a TF Serving gRPC URL is {scheme}://HOST:PORT/models/NAME"
                f"[/versions/N|/labels/L]; got {url!r}.")
        fields = {"protocol": Protocol.TF_SERVING_GRPC, "target": parsed.netloc}
        if scheme == "grpcs":
            fields["tls"] = Tls()
        return {**fields, **_model_fields(match)}
    if scheme in ("http", "https"):
        match = _MODEL_PATH.match(parsed.path)
        if not parsed.hostname or match is None:
            raise ConfigurationError(
                f"an HTTP endpoint URL names its model: .../v1/models/NAME (TF Serving REST) "
                f"or .../v2/models/NAME (KServe v2); got {url!r}. Forms: {_FORMS}.")
        if parsed.query or parsed.fragment:
            raise ConfigurationError(f"an endpoint URL takes no query or fragment; got {url!r}.")
        protocol = Protocol.TF_SERVING_REST if match["api"] == "v1" else Protocol.KSERVE_V2
        if protocol is Protocol.KSERVE_V2 and match["label"]:
            raise ConfigurationError(f"KServe v2 has no version labels; got {url!r}.")
        target = f"{scheme}://{parsed.netloc}{match['prefix']}"
        return {"protocol": protocol, "target": target, **_model_fields(match)}
    raise ConfigurationError(f"unknown endpoint URL scheme {parsed.scheme or '(none)'!r} in "
                             f"{url!r}. Forms: {_FORMS}.")


def _model_fields(match: re.Match) -> dict[str, Any]:
    fields: dict[str, Any] = {"model_name": match["name"]}
    if match["version"]:
        fields["version"] = int(match["version"])
    if match["label"]:
        fields["version_label"] = match["label"]
    return fields


def _refuse_credentials(parsed: urllib.parse.SplitResult, shown: str) -> None:
    query = urllib.parse.parse_qs(parsed.query)
    if parsed.username or parsed.password or any(
            re.search(r"token|key|secret|password|auth", k, re.I) for k in query):
        raise ConfigurationError(
            f"endpoint URLs must not hold credentials (found one in {shown}): URLs show up "
            "in logs and pipeline options. Pass token=bi.BearerToken(file=...) or "
            "BearerToken(env=...) instead.")
