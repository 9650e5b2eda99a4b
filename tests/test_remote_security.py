"""Endpoints behind TLS and bearer tokens, end to end against the TF Serving stand-in.

One set of servers for the module over the same two models (``five`` version 1, ``ten``
version 2): plain gRPC and REST; gRPC and https with a certificate from a throwaway CA
(``tests/support/certificates.py``); gRPC with a certificate for another name; gRPC and
REST that require a bearer token. Checked: a custom CA scores exactly as plain text,
refused certificates and unreadable CA files fail the build within seconds saying which
``Tls`` setting fixes them, ``server_name`` for gRPC, tokens from a file, a variable and
Google Application Default Credentials (a service-account key whose ``token_uri`` is a
loopback OAuth token server, through google-auth's real refresh) reach the server, and
no token shows in outputs, dead letters, logs, errors or the pickled transform.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import logging
import pickle
import threading
import time
import urllib.parse

import apache_beam as beam
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import beam_infer as bi
from beam_infer._errors import TransientError
from beam_infer.remote import _common
from beam_infer.remote._common import UntrustedServerError
from beam_infer.remote._tf_serving_grpc import TfServingGrpcClient
from tests.emulators.tf_serving import Faults, GrpcServer, Repository, RestServer, ServerTls
from tests.support.beam_helpers import run_collect
from tests.support.certificates import CertificateAuthority
from tests.support.remote_helpers import FAST_RETRY, TOKEN, canonical, examples, score

pytestmark = pytest.mark.emulators

WRONG = "wrong-token-4c1e-do-not-show"
VALUES = (1.0, 2.0, 3.0)
BUILD_SECS = 10.0  # "fails fast": the build-time metadata read, refused, well under this


@dataclasses.dataclass
class Servers:
    faults: Faults
    ca_file: str
    other_ca_file: str
    plain_grpc: GrpcServer
    plain_rest: RestServer
    tls_grpc: GrpcServer
    tls_rest: RestServer
    renamed_grpc: GrpcServer  # its certificate names serving.internal only
    token_grpc: GrpcServer
    token_rest: RestServer

    def url(self, server: GrpcServer | RestServer, model: str = "five") -> str:
        if isinstance(server, GrpcServer):
            scheme = "grpcs" if server.tls is not None else "grpc"
            return f"{scheme}://{server.target}/models/{model}"
        return f"{server.url}/v1/models/{model}"


@pytest.fixture(scope="module")
def servers(zoo, tmp_path_factory) -> Servers:
    pki = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(pki)
    other_ca = CertificateAuthority(tmp_path_factory.mktemp("pki_other"), "another CA")
    issued = ca.issue("server")  # localhost and 127.0.0.1
    renamed = ca.issue("renamed", dns_names=("serving.internal",), ips=())
    repository = Repository({"five": {1: zoo.five}, "ten": {2: zoo.ten}})
    faults = Faults()
    tls = ServerTls(issued.cert_file, issued.key_file)
    started = Servers(
        faults, ca.ca_file, other_ca.ca_file,
        plain_grpc=GrpcServer(repository, faults), plain_rest=RestServer(repository, faults),
        tls_grpc=GrpcServer(repository, faults, tls=tls),
        tls_rest=RestServer(repository, faults, tls=tls),
        renamed_grpc=GrpcServer(repository, faults,
                                tls=ServerTls(renamed.cert_file, renamed.key_file)),
        token_grpc=GrpcServer(repository, faults, token=TOKEN),
        token_rest=RestServer(repository, faults, token=TOKEN))
    with contextlib.ExitStack() as stack:
        for field in dataclasses.fields(Servers):
            server = getattr(started, field.name)
            if isinstance(server, GrpcServer | RestServer):
                server.start()
                stack.callback(server.stop)
        yield started


@pytest.fixture
def secure(servers: Servers) -> Servers:
    servers.faults.reset()
    yield servers
    servers.faults.reset()


def spec_for(url: str, **fields) -> bi.EndpointSpec:
    return bi.EndpointSpec.from_url(url, timeout_secs=10.0, **fields)


def outputs_of(logs) -> list[float]:
    return sorted(log.predict_log.response.outputs["output_0"].float_val[0] for log in logs)


def assert_no_token(token: str, *things, caplog=None) -> None:
    for thing in things:
        assert token.encode() not in pickle.dumps(thing)
        assert token not in repr(thing)
    if caplog is not None:
        assert token not in caplog.text


# --- TLS --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_a_custom_ca_scores_exactly_as_plain_text(secure, tmp_path, kind):
    plain = secure.plain_grpc if kind == "grpc" else secure.plain_rest
    tls = secure.tls_grpc if kind == "grpc" else secure.tls_rest
    spec = spec_for(secure.url(tls), tls=bi.Tls(ca_file=secure.ca_file))
    assert spec.url.startswith("grpcs://" if kind == "grpc" else "https://")
    logs, _ = score(spec, examples(*VALUES), str(tmp_path / "tls"))
    here, _ = score(spec_for(secure.url(plain)), examples(*VALUES), str(tmp_path / "plain"))
    assert outputs_of(logs) == [5.0, 10.0, 15.0]
    assert canonical(logs) == canonical(here)


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_a_certificate_no_trusted_ca_signed_fails_the_build_fast_saying_pass_the_ca(
        secure, kind):
    tls_server = secure.tls_grpc if kind == "grpc" else secure.tls_rest
    url = secure.url(tls_server)
    start = time.monotonic()
    with pytest.raises(bi.ConfigurationError) as system:
        bi.RunInference(spec_for(url))  # the system's CAs
    assert time.monotonic() - start < BUILD_SECS
    message = str(system.value)
    assert message.startswith(f"could not read the model's signatures from {url}: ")
    assert "not signed by a CA this machine trusts (the system's CAs): pass the CA that " \
           "signed it, EndpointSpec(tls=bi.Tls(ca_file='/path/to/ca.pem'))" in message
    assert "CERTIFICATE_VERIFY_FAILED" in message  # the transport's own words, after
    with pytest.raises(bi.ConfigurationError) as other:
        bi.RunInference(spec_for(url, tls=bi.Tls(ca_file=secure.other_ca_file)))
    assert f"not signed by a CA in tls.ca_file={secure.other_ca_file!r}: pass the PEM " \
           "bundle of the CA that signed it" in str(other.value)
    assert secure.faults.total_requests == 0  # no request got past the handshake


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_a_missing_or_non_pem_ca_file_is_a_build_time_error(secure, tmp_path, kind):
    url = secure.url(secure.tls_grpc if kind == "grpc" else secure.tls_rest)
    missing = str(tmp_path / "no-such-ca.pem")
    with pytest.raises(bi.ConfigurationError) as raised:
        bi.RunInference(spec_for(url, tls=bi.Tls(ca_file=missing)))
    assert str(raised.value) == (
        f"{url}: tls.ca_file={missing!r} cannot be read on this machine (No such file or "
        "directory): it must hold the PEM CA bundle that signed the server's certificate, "
        "wherever the pipeline is built and its workers run.")
    not_pem = tmp_path / "ca.der"
    not_pem.write_bytes(b"\x30\x82\x01\x0a not a PEM file")
    with pytest.raises(bi.ConfigurationError, match="holds no PEM certificate"):
        bi.RunInference(spec_for(url, tls=bi.Tls(ca_file=str(not_pem))))


def test_server_name_checks_another_name_in_the_grpc_certificate(secure, tmp_path):
    url = secure.url(secure.renamed_grpc)  # dialled as 127.0.0.1; issued for serving.internal
    with pytest.raises(bi.ConfigurationError) as raised:
        bi.RunInference(spec_for(url, tls=bi.Tls(ca_file=secure.ca_file)))
    assert "the server's TLS certificate is not issued for the name connected to: pass " \
           "tls=bi.Tls(server_name='<a name in the certificate>')" in str(raised.value)
    spec = spec_for(url, tls=bi.Tls(ca_file=secure.ca_file, server_name="serving.internal"))
    logs, _ = score(spec, examples(*VALUES), str(tmp_path))
    assert outputs_of(logs) == [5.0, 10.0, 15.0]


def test_a_certificate_refused_on_the_worker_is_permanent_not_retried(secure, zoo, tmp_path):
    # signatures_from: nothing is asked at build time, so the worker meets the refusal.
    spec = spec_for(secure.url(secure.tls_grpc), signatures_from=zoo.five)
    client = TfServingGrpcClient(secure.tls_grpc.target, "five", tls=bi.Tls(), timeout_secs=10)
    with pytest.raises(UntrustedServerError) as raised:
        client.call([("serving_default", {"examples": [examples(1.0)[0].SerializeToString()]})])
    assert not isinstance(raised.value, TransientError)
    slow_retry = bi.RetryConfig(max_attempts=3, initial_backoff_secs=20.0)
    start = time.monotonic()
    logs, failed = score(spec, examples(1.0), str(tmp_path), dead_letters=True,
                         retry=slow_retry)
    assert time.monotonic() - start < 20.0  # a retry would have waited 20 s
    (letter,) = failed
    assert logs == [] and letter.error_type == "UntrustedServerError"
    assert "pass the CA that signed it, EndpointSpec(tls=bi.Tls(ca_file=" in letter.message


# --- bearer tokens ----------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "source"), [("grpc", "file"), ("rest", "env")])
def test_a_token_from_a_file_or_a_variable_reaches_the_server_and_nothing_else(
        secure, tmp_path, monkeypatch, caplog, kind, source):
    caplog.set_level(logging.DEBUG)
    if source == "file":
        path = tmp_path / "token"
        path.write_text(TOKEN + "\n")
        token = bi.BearerToken(file=str(path))
    else:
        monkeypatch.setenv("BI_SECURITY_TOKEN", TOKEN)
        token = bi.BearerToken(env="BI_SECURITY_TOKEN")
    server = secure.token_grpc if kind == "grpc" else secure.token_rest
    spec = spec_for(secure.url(server), token=token)
    transform = bi.RunInference(spec, retry=FAST_RETRY)
    secure.faults.bad_values.add(2.0)
    logs, failed = score(spec, examples(*VALUES), str(tmp_path / "out"), dead_letters=True)
    assert outputs_of(logs) == [5.0, 15.0]
    (letter,) = failed  # the server refused one row: its message is kept, no token in it
    assert "x=2.0 is marked bad" in letter.message
    seen = secure.faults.authorizations
    assert seen and set(seen) == {"Bearer " + TOKEN}  # metadata at build time, then calls
    assert_no_token(TOKEN, transform, spec, logs, failed, caplog=caplog)
    assert TOKEN not in spec.describe() and TOKEN not in letter.message


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_a_wrong_token_fails_permanently_and_is_never_shown(secure, zoo, tmp_path, caplog,
                                                           kind):
    caplog.set_level(logging.DEBUG)
    server = secure.token_grpc if kind == "grpc" else secure.token_rest
    wrong = bi.BearerToken(value=WRONG)
    url = secure.url(server)
    with pytest.raises(bi.ConfigurationError) as raised:  # the build's metadata read
        bi.RunInference(spec_for(url, token=wrong))
    refused = "UNAUTHENTICATED" if kind == "grpc" else "HTTP 401"
    assert f"could not read the model's signatures from {url}: " in str(raised.value)
    assert refused in str(raised.value) and "<redacted>" in str(raised.value)  # echo cut
    assert len(secure.faults.authorizations) == 1  # refused once, not asked again
    secure.faults.reset()
    spec = spec_for(url, token=wrong, signatures_from=zoo.five)  # the worker meets it
    logs, failed = score(spec, examples(1.0), str(tmp_path), dead_letters=True)
    (letter,) = failed
    assert logs == [] and letter.error_type == "RemoteServerError"
    assert refused in letter.message and url.split("/models")[0].split("//")[1] in \
        letter.message.replace("localhost", "127.0.0.1")
    assert secure.faults.authorizations == ["Bearer " + WRONG]  # one request: no retries
    assert_no_token(WRONG, raised.value.args, failed, letter.message, caplog=caplog)
    assert WRONG not in repr(spec) and WRONG not in spec.describe()  # a value= token
    # travels to the workers inside the pickled spec, by design; file= and env= do not


def test_a_token_file_is_read_again_for_each_request(secure, tmp_path):
    path = tmp_path / "token"
    client = TfServingGrpcClient(secure.plain_grpc.target, "five", timeout_secs=10,
                                 token=bi.BearerToken(file=str(path)))
    calls = [("serving_default", {"examples": [examples(1.0)[0].SerializeToString()]})]
    for value in ("first-token", "rotated-token"):
        path.write_text(value + "\n")
        client.call(calls)
    assert secure.faults.authorizations == ["Bearer first-token", "Bearer rotated-token"]
    client.close()


# --- Google Application Default Credentials ---------------------------------------------

class _TokenEndpoint(http.server.BaseHTTPRequestHandler):
    """Google's OAuth token endpoint for a service account's signed JWT grant."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        server: _OAuthServer = self.server
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        import google.auth.jwt

        try:
            assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
            # google-auth posts to the key file's token_uri, for Google's audience.
            claims = google.auth.jwt.decode(form["assertion"][0], certs=server.public_pem,
                                            audience="https://oauth2.googleapis.com/token")
            assert claims["iss"] == server.email, claims
        except (AssertionError, KeyError, ValueError) as e:
            return self._send(400, {"error": "invalid_grant",
                                    "error_description": f"{type(e).__name__}: {e}"})
        with server.lock:
            server.issued.append(f"ya29.test-{len(server.issued) + 1}")
            token = server.issued[-1]
        self._send(200, {"access_token": token, "expires_in": server.expires_in,
                         "token_type": "Bearer"})

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _OAuthServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    email = "scorer@test-project.iam.gserviceaccount.com"

    def __init__(self, expires_in: int):
        super().__init__(("127.0.0.1", 0), _TokenEndpoint)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/token"
        self.expires_in = expires_in
        self.issued: list[str] = []
        self.lock = threading.Lock()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode()
        self.public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@contextlib.contextmanager
def oauth_server(expires_in: int):
    server = _OAuthServer(expires_in)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)


def application_default_credentials(server: _OAuthServer, folder, monkeypatch) -> str:
    """A service-account key file whose token_uri is ``server``, as ADC (the variable)."""
    path = folder / "adc.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "test-project", "private_key_id": "k1",
        "private_key": server.private_pem, "client_email": server.email,
        "client_id": "1", "token_uri": server.url}))
    path.chmod(0o600)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(folder / "no-gcloud"))  # never the user's
    return str(path)


@pytest.fixture
def adc_cache(monkeypatch):
    """A process cache of credentials of this test's own (the library keys it by file)."""
    monkeypatch.setattr(_common, "_GOOGLE", {})
    return _common._GOOGLE


def test_google_credentials_are_refreshed_through_the_token_uri_and_sent(
        secure, tmp_path, monkeypatch, caplog, adc_cache):
    caplog.set_level(logging.DEBUG)
    with oauth_server(expires_in=3600) as oauth:
        application_default_credentials(oauth, tmp_path, monkeypatch)
        spec = spec_for(secure.url(secure.plain_grpc), token=bi.BearerToken(google=True))
        logs, _ = score(spec, examples(*VALUES), str(tmp_path / "out"))
    assert outputs_of(logs) == [5.0, 10.0, 15.0]
    assert oauth.issued == ["ya29.test-1"]  # one refresh, then cached for the whole run
    seen = secure.faults.authorizations
    assert len(seen) >= 2 and set(seen) == {"Bearer ya29.test-1"}  # metadata and Predict
    assert_no_token("ya29.test-1", spec, bi.RunInference(spec), logs, caplog=caplog)
    assert oauth.private_pem.splitlines()[1] not in caplog.text


def test_google_credentials_are_refreshed_when_they_expire(secure, tmp_path, monkeypatch,
                                                           adc_cache):
    # google-auth refreshes REFRESH_THRESHOLD before the expiry: these live 1 s past it.
    import google.auth._helpers

    lives = int(google.auth._helpers.REFRESH_THRESHOLD.total_seconds()) + 1
    token = bi.BearerToken(google=True)
    with oauth_server(expires_in=lives) as oauth:
        application_default_credentials(oauth, tmp_path, monkeypatch)
        first, again = token.header(), token.header()
        time.sleep(1.2)
        later = token.header()
    assert first == again == "Bearer ya29.test-1"
    assert later == "Bearer ya29.test-2" and oauth.issued == ["ya29.test-1", "ya29.test-2"]
    assert isinstance(token.token(), _common.Secret)


def test_credentials_are_cached_per_credentials_file(tmp_path, monkeypatch, adc_cache):
    token = bi.BearerToken(google=True)
    with oauth_server(expires_in=3600) as one, oauth_server(expires_in=3600) as two:
        (tmp_path / "one").mkdir()
        (tmp_path / "two").mkdir()
        application_default_credentials(one, tmp_path / "one", monkeypatch)
        assert token.header() == "Bearer ya29.test-1"
        application_default_credentials(two, tmp_path / "two", monkeypatch)
        assert token.header() == "Bearer ya29.test-1"  # two's first token, not one's
        application_default_credentials(one, tmp_path / "one", monkeypatch)
        assert token.header() == "Bearer ya29.test-1"  # one's, still valid: no refresh
    assert one.issued == ["ya29.test-1"] and two.issued == ["ya29.test-1"]
    assert len(adc_cache) == 2


def test_a_refused_refresh_is_a_clear_error_without_secrets(secure, tmp_path, monkeypatch,
                                                           adc_cache):
    with oauth_server(expires_in=3600) as oauth:
        application_default_credentials(oauth, tmp_path, monkeypatch)
        oauth.email = "someone-else@test-project.iam.gserviceaccount.com"  # refuses ours
        with pytest.raises(bi.ConfigurationError) as raised:
            bi.RunInference(spec_for(secure.url(secure.plain_rest),
                                     token=bi.BearerToken(google=True)))
    message = str(raised.value)
    assert message.startswith(
        f"could not read the model's signatures from {secure.url(secure.plain_rest)}: "
        f"Google Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS="
        f"{tmp_path / 'adc.json'}) gave no token: RefreshError: ")
    assert "invalid_grant" in message and "Check that the server is up" not in message
    assert oauth.private_pem.splitlines()[1] not in message
    assert secure.faults.authorizations == []  # nothing was sent without a token


# --- update_model_path: Beam's model-refresh side input ---------------------------------

def refreshed(spec: bi.EndpointSpec, url: str, tmp_path, values=VALUES) -> list:
    """Scores with Beam's RunInference over ``spec``, its side input naming ``url``."""
    from apache_beam.ml.inference import base

    handler = bi.EndpointHandler(spec)

    def build(p):
        models = p | "Model" >> beam.Create([base.ModelMetadata(model_id=url,
                                                               model_name="refreshed")])
        logs = (p | beam.Create(examples(*values), reshuffle=False)
                | base.RunInference(handler, model_metadata_pcoll=models))
        return {"out": logs}

    outputs, _ = run_collect(build, str(tmp_path))
    return outputs["out"]


def test_a_refresh_url_switches_the_pipeline_to_another_model_and_logs_name_it(
        secure, tmp_path):
    spec = spec_for(secure.url(secure.plain_grpc) + "/versions/1")
    logs = refreshed(spec, secure.url(secure.plain_grpc, "ten"), tmp_path)
    assert outputs_of(logs) == [10.0, 20.0, 30.0]
    for log in logs:
        assert log.predict_log.response.model_spec.name == "ten"
        assert log.predict_log.response.model_spec.version.value == 2  # ten's latest
        assert log.predict_log.request.model_spec.name == "ten"


def test_a_refresh_over_tls_keeps_the_ca_and_the_token(secure, tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN)
    spec = spec_for(secure.url(secure.tls_grpc), tls=bi.Tls(ca_file=secure.ca_file),
                    token=bi.BearerToken(file=str(path)))
    logs = refreshed(spec, secure.url(secure.tls_grpc, "ten") + "/versions/2",
                     tmp_path / "out")
    assert outputs_of(logs) == [10.0, 20.0, 30.0]
    assert {log.predict_log.response.model_spec.name for log in logs} == {"ten"}
    assert set(secure.faults.authorizations) == {"Bearer " + TOKEN}


def test_a_refresh_to_another_host_stops_the_pipeline_before_the_token_goes_there(
        secure, tmp_path):
    # "localhost" is the same server under another name (its certificate names both), as
    # an attacker's host would be: whoever writes the refresh side input names the host.
    path = tmp_path / "token"
    path.write_text(TOKEN)
    spec = spec_for(secure.url(secure.tls_grpc), tls=bi.Tls(ca_file=secure.ca_file),
                    token=bi.BearerToken(file=str(path)))
    port = secure.tls_grpc.target.rsplit(":", 1)[1]
    assert secure.tls_grpc.target.startswith("127.0.0.1:")
    sent_before = len(secure.faults.authorizations)
    with pytest.raises(Exception, match="a token is not sent to another host") as stopped:
        refreshed(spec, f"grpcs://localhost:{port}/models/ten", tmp_path / "out")
    assert "token is for '127.0.0.1'" in str(stopped.value)
    assert TOKEN not in str(stopped.value)
    # Only the build-time metadata read (to 127.0.0.1) carried it; no request went after.
    assert secure.faults.authorizations[sent_before:] == ["Bearer " + TOKEN]
