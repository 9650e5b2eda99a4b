"""BigQuery for tests: local-bigquery (Python 3.13) with a GCS emulator, and Beam pointed at it.

Fixtures (a pytest plugin, registered in ``tests/conftest.py``):

* ``local_bigquery`` (session): builds or reuses the emulator's venv, starts
  ``gcp-storage-emulator`` and ``local-bigquery`` on free loopback ports and stops both when the
  session ends. When no Python 3.13 is found it skips, naming where it looked.
* ``bigquery_beam`` (function): that emulator, with Beam's BigQuery IO pointed at it for one
  test by ``beam_pointed_at``, which undoes every change afterwards.

Why patches: Beam 2.77 has no endpoint option for BigQuery. It builds three clients with
fixed endpoints: apitools ``BigqueryV2`` (tables, datasets and jobs, used by every method), the
google-cloud-bigquery ``Client`` of STREAMING_INSERTS, and the Storage Read client of
DIRECT_READ. ``beam_pointed_at`` replaces the three where Beam's modules look them up. It also
settles Beam's credential lookup as "none", so Beam's GCS client goes anonymous to
``STORAGE_EMULATOR_HOST`` instead of retrying for about 20 s, and it lets the jobs' credential
pre-flight (``pipelines.bigquery_preflight``) pass. The patches live in this process, so only
in-process runners (DirectRunner, FnApiRunner) see them. ``multi_processing`` and portable
workers do not.

Why GCS: ReadFromBigQuery's default EXPORT and WriteToBigQuery's batch default FILE_LOADS
stage files under ``--temp_location``, which must be ``gs://``. local-bigquery reads and
writes those files through the same GCS emulator. ``LocalBigQuery.pipeline_args()`` gives
``--project`` and ``--temp_location``.

The venv: local-bigquery runs on Python 3.13, in a venv built once per user and then reused
(``bigquery_venv``: all pins, nothing fetched at run time). The pytest summary says whether the
venv was built or reused, and the times.

By hand, without pytest (one command each)::

    python -m tests.emulators.bigquery            # pipelines.keyed, BigQuery in and out
    python -m tests.emulators.bigquery --query='SELECT key, value FROM maths.maths_problems_1'
    python -m tests.emulators.bigquery --serve    # start both, print the endpoints, wait
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.emulators.bigquery_venv import (
    EmulatorError,
    Python313NotFoundError,
    Venv,
    ensure_venv,
    find_python313,
)

if TYPE_CHECKING:
    from google.cloud import bigquery

PROJECT = "beam-infer-test"
TEMP_BUCKET = "beam-infer-bq-temp"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0

_PORT_ATTEMPTS = 3
_LOG_TAIL_CHARS = 4000
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1
_REPORT: list[str] = []  # lines for the pytest terminal summary


@dataclasses.dataclass(frozen=True)
class LocalBigQuery:
    """A running local-bigquery and the GCS emulator behind it.

    Attributes:
        project: The emulator's project, for ``--project`` and table names.
        rest_url: ``http://127.0.0.1:PORT``, the BigQuery REST API.
        grpc_address: ``127.0.0.1:PORT``, the BigQuery Storage API.
        gcs_url: ``http://127.0.0.1:PORT``, the value for ``STORAGE_EMULATOR_HOST``.
        temp_bucket: An existing bucket on the GCS emulator, for ``--temp_location``.
    """

    project: str
    rest_url: str
    grpc_address: str
    gcs_url: str
    temp_bucket: str

    def client(self) -> bigquery.Client:
        """A google-cloud-bigquery client of the emulator, anonymous."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(project=self.project, credentials=AnonymousCredentials(),
                               client_options=ClientOptions(api_endpoint=self.rest_url))

    def table(self, dataset: str, name: str) -> str:
        """``PROJECT:DATASET.TABLE``, as the jobs' table flags take it."""
        return f"{self.project}:{dataset}.{name}"

    def pipeline_args(self) -> list[str]:
        """The Beam flags BigQuery IO needs here: ``--project`` and a ``gs://`` temp location."""
        return [f"--project={self.project}", f"--temp_location=gs://{self.temp_bucket}/tmp"]


# -- the servers ---------------------------------------------------------------------------

@dataclasses.dataclass
class Server:
    """One emulator subprocess, leader of its own process group, logging to a file.

    Attributes:
        log_offset: Where its output starts in ``log_path``; attempts on other ports wrote
            before it.
    """

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_offset: int = 0

    def log_tail(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_offset)
                return log.read().decode(errors="replace")[-_LOG_TAIL_CHARS:]
        except OSError as e:
            return f"<cannot read {self.log_path}: {e}>"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the process group after ``STOP_TIMEOUT_S``."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


def free_port() -> int:
    """A loopback port that was free a moment ago (callers retry if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # A test process killed by SIGKILL runs no teardown: the kernel then stops the server.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def _get_json(url: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    with opener.open(url, timeout=2) as response:
        return json.load(response)


def _start(name: str, command: Callable[[list[int]], list[str]], ports: int,
           ready: Callable[[list[int]], bool], log_path: Path,
           env: dict[str, str]) -> tuple[Server, list[int]]:
    """Starts ``command`` on free ports and waits until ``ready``; new ports if one was taken."""
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        chosen = [free_port() for _ in range(ports)]
        with log_path.open("ab") as log:
            offset = log.tell()
            popen = subprocess.Popen(command(chosen), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        server = Server(name, popen, log_path, offset)
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error: Exception | None = None
        while popen.poll() is None and time.monotonic() < deadline:
            try:
                if ready(chosen) and popen.poll() is None:
                    return server, chosen
            except (OSError, ValueError) as e:
                last_error = e
                if _port_taken(server.log_tail()):  # gcp-storage-emulator stays up after it
                    break
            time.sleep(0.1)
        exit_code = popen.poll()
        server.stop()
        tail = server.log_tail()
        if _port_taken(tail) and attempt < _PORT_ATTEMPTS:
            continue
        state = (f"exited with code {exit_code}" if exit_code is not None
                 else f"was not ready after {START_TIMEOUT_S:.0f} s (last: {last_error!r})")
        raise EmulatorError(f"{name} on ports {chosen} {state}. Log {log_path}:\n{tail}")
    raise AssertionError("unreachable")


def _port_taken(log: str) -> bool:
    return "address already in use" in log.lower() or "failed to bind" in log.lower()


def start_gcs(work_dir: Path) -> tuple[Server, str]:
    """gcp-storage-emulator in memory with ``TEMP_BUCKET``; returns it and its URL."""

    def command(ports: list[int]) -> list[str]:
        return [sys.executable, "-m", "gcp_storage_emulator", "start", "--host=127.0.0.1",
                f"--port={ports[0]}", "--in-memory", f"--default-bucket={TEMP_BUCKET}"]

    def ready(ports: list[int]) -> bool:
        url = f"http://127.0.0.1:{ports[0]}/storage/v1/b/{TEMP_BUCKET}"
        return _get_json(url).get("name") == TEMP_BUCKET

    server, ports = _start("gcp-storage-emulator", command, 1, ready,
                           work_dir / "gcs-emulator.log", dict(os.environ))
    return server, f"http://127.0.0.1:{ports[0]}"


def start_local_bigquery(venv: Venv, gcs_url: str, work_dir: Path) -> tuple[Server, list[int]]:
    """local-bigquery with its data in ``work_dir``; returns it and its (REST, gRPC) ports."""
    import grpc

    data_dir = work_dir / "local-bigquery-data"
    data_dir.mkdir(exist_ok=True)

    def command(ports: list[int]) -> list[str]:
        return [str(venv.path / "bin" / "local-bigquery"), "serve", "--host", "127.0.0.1",
                "--port", str(ports[0]), "--grpc-port", str(ports[1]), "--project", PROJECT,
                "--data-dir", str(data_dir)]

    def ready(ports: list[int]) -> bool:
        listing = _get_json(f"http://127.0.0.1:{ports[0]}/bigquery/v2/projects/{PROJECT}/datasets")
        with grpc.insecure_channel(f"127.0.0.1:{ports[1]}") as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=2)
            except grpc.FutureTimeoutError:
                return False
        return listing.get("kind") == "bigquery#datasetList"

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HOME=str(venv.duckdb_home), STORAGE_EMULATOR_HOST=gcs_url)
    return _start("local-bigquery", command, 2, ready, work_dir / "local-bigquery.log", env)


@contextlib.contextmanager
def running(work_dir: Path, python: str | None = None) -> Iterator[LocalBigQuery]:
    """Builds or reuses the venv, starts both servers, yields them, stops them.

    Args:
        work_dir: For the servers' logs and data.
        python: A Python 3.13; default: ``find_python313()``.

    Raises:
        Python313NotFoundError: no Python 3.13 was found.
        EmulatorError: the venv or a server failed.
    """
    venv = ensure_venv(python or find_python313())
    started = time.monotonic()
    gcs, gcs_url = start_gcs(work_dir)
    try:
        bigquery_server, (rest, grpc_port) = start_local_bigquery(venv, gcs_url, work_dir)
    except BaseException:
        gcs.stop()
        raise
    built = ("reused" if venv.built_s is None else f"built in {venv.built_s:.1f} s")
    _REPORT.append(f"local-bigquery: venv {venv.path} {built}; local-bigquery and "
                   f"gcp-storage-emulator ready in {time.monotonic() - started:.1f} s")
    try:
        yield LocalBigQuery(PROJECT, f"http://127.0.0.1:{rest}", f"127.0.0.1:{grpc_port}",
                            gcs_url, TEMP_BUCKET)
    finally:
        bigquery_server.stop()
        gcs.stop()


# -- Beam ----------------------------------------------------------------------------------

class _Rerouted:
    """A module as one Beam module sees it: some names replaced, the rest the module's own."""

    def __init__(self, module: Any, **replaced: Any):
        self._module = module
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


@contextlib.contextmanager
def beam_pointed_at(emulator: LocalBigQuery) -> Iterator[LocalBigQuery]:
    """Points Beam's BigQuery IO (all methods) and GCS at ``emulator`` until the block ends.

    Only Beam's references are replaced; ``google.cloud.bigquery`` and
    ``google.cloud.bigquery_storage_v1`` themselves stay as they are.
    """
    import grpc
    from apache_beam.internal.gcp import auth
    from apache_beam.internal.http_client import get_new_http
    from apache_beam.io.gcp import bigquery as beam_bigquery
    from apache_beam.io.gcp import bigquery_tools
    from apache_beam.io.gcp.internal.clients import bigquery as apitools_bigquery
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery, bigquery_storage_v1
    from google.cloud.bigquery_storage_v1.services.big_query_read import transports

    from pipelines import bigquery_preflight

    def apitools_client(pipeline_options: Any) -> Any:
        return apitools_bigquery.BigqueryV2(
            url=f"{emulator.rest_url}/bigquery/v2/", get_credentials=False,
            http=get_new_http(), response_encoding="utf8")

    def cloud_client(*args: Any, **kwargs: Any) -> bigquery.Client:
        return bigquery.Client(*args, project=emulator.project,
                               credentials=AnonymousCredentials(),
                               client_options=ClientOptions(api_endpoint=emulator.rest_url),
                               **kwargs)

    def read_client(*args: Any, **kwargs: Any) -> bigquery_storage_v1.BigQueryReadClient:
        channel = grpc.insecure_channel(emulator.grpc_address)
        return bigquery_storage_v1.BigQueryReadClient(
            transport=transports.BigQueryReadGrpcTransport(channel=channel))

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", emulator.gcs_url)
        patch.setattr(auth._Credentials, "_credentials_init", True)
        patch.setattr(auth._Credentials, "_credentials", None)
        patch.setattr(bigquery_tools.BigQueryWrapper, "_bigquery_client",
                      staticmethod(apitools_client))
        patch.setattr(bigquery_tools, "gcp_bigquery", _Rerouted(bigquery, Client=cloud_client))
        patch.setattr(beam_bigquery, "bq_storage",
                      _Rerouted(bigquery_storage_v1, BigQueryReadClient=read_client))
        # The emulator takes anonymous calls: the jobs' pre-flight has nothing to refuse.
        patch.setattr(bigquery_preflight, "find_credentials", AnonymousCredentials)
        yield emulator


# -- pytest --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def local_bigquery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBigQuery]:
    """local-bigquery and its GCS emulator for the session (skips without Python 3.13)."""
    try:
        python = find_python313()
    except Python313NotFoundError as e:
        pytest.skip(str(e))
    with running(tmp_path_factory.mktemp("local_bigquery"), python) as emulator:
        yield emulator


@pytest.fixture
def bigquery_beam(local_bigquery: LocalBigQuery) -> Iterator[LocalBigQuery]:
    """The session's emulator with Beam's BigQuery IO pointed at it for this test."""
    with beam_pointed_at(local_bigquery) as emulator:
        yield emulator


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _REPORT:
        terminalreporter.write_line(line)


# -- by hand -------------------------------------------------------------------------------

def load_questions(emulator: LocalBigQuery, dataset: str = "maths",
                   table: str = "maths_problems_1") -> str:
    """Creates ``dataset.table`` (key STRING, value FLOAT64) with the bundled questions."""
    from google.cloud import bigquery

    from pipelines import models

    client = emulator.client()
    client.create_dataset(dataset, exists_ok=True)
    schema = [bigquery.SchemaField("key", "STRING"), bigquery.SchemaField("value", "FLOAT64")]
    full = f"{emulator.project}.{dataset}.{table}"
    client.delete_table(full, not_found_ok=True)
    client.create_table(bigquery.Table(full, schema=schema))
    errors = client.insert_rows_json(
        full, [{"key": k, "value": v} for k, v in models.read_questions()])
    if errors:
        raise EmulatorError(f"loading the questions into {full} failed: {errors}")
    return emulator.table(dataset, table)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``pipelines.keyed`` against the emulators (or, with ``--serve``, just starts them)."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.emulators.bigquery",
        description="Run pipelines.keyed against local-bigquery and gcp-storage-emulator. "
                    "Other flags go to the job (e.g. --query, --model_version, --runner is "
                    "ignored: the patches reach in-process runners only).")
    parser.add_argument("--serve", action="store_true",
                        help="Only start the emulators, print their endpoints, wait for Ctrl-C.")
    parser.add_argument("--work_dir", default=os.path.join("work", "bigquery-emulator"))
    args, job_args = parser.parse_known_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="local-bigquery-", dir=args.work_dir))
    try:
        with running(logs) as emulator, beam_pointed_at(emulator):
            print(*_REPORT, sep="\n")
            questions = load_questions(emulator)
            if args.serve:
                return _serve(emulator, questions)
            return _run_keyed(emulator, questions, job_args, args.work_dir)
    except EmulatorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _serve(emulator: LocalBigQuery, questions: str) -> int:
    print(f"BigQuery REST {emulator.rest_url}, Storage API {emulator.grpc_address}, project "
          f"{emulator.project}; {questions} holds the bundled questions.\n"
          f"export STORAGE_EMULATOR_HOST={emulator.gcs_url}  # temp bucket "
          f"gs://{emulator.temp_bucket}\nCtrl-C stops both.", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()
    return 0


def _run_keyed(emulator: LocalBigQuery, questions: str, job_args: list[str],
               work_dir: str) -> int:
    from pipelines import keyed

    source_given = any(a.startswith(("--input", "--query")) for a in job_args)
    output_table = next((a.split("=", 1)[1] for a in job_args
                         if a.startswith("--output_table=")), None)
    if output_table is None:
        output_table = emulator.table("maths", "answers")
        job_args = [*job_args, f"--output_table={output_table}"]
    if not source_given:
        job_args = [f"--input_table={questions}", *job_args]
    argv = [f"--work_dir={work_dir}", *job_args, *emulator.pipeline_args()]
    print("python -m pipelines.keyed", shlex.join(argv), flush=True)
    keyed.run(argv, save_main_session=False)
    table = output_table.replace(":", ".")
    rows = emulator.client().query(f"SELECT * FROM `{table}` ORDER BY key").result()
    print(f"{output_table} now holds:")
    for row in rows:
        print(json.dumps(dict(row.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())


@pytest.fixture
def dataset(bigquery_beam: LocalBigQuery) -> Iterator[str]:
    """A fresh dataset on the emulator for one test (Beam pointed at it), dropped after."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    client = bigquery_beam.client()
    client.create_dataset(name)
    yield name
    client.delete_dataset(name, delete_contents=True, not_found_ok=True)
