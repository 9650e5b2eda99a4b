"""A real local Beam job service plus an EXTERNAL Python SDK worker pool, for tests.

Tests that need the portable submission path (the one Flink uses: ``PortableRunner`` -> job
service -> ``EXTERNAL`` environment -> SDK worker processes) use the session fixture
``portable_runner``::

    def test_something(portable_runner, tmp_path):
        options = PipelineOptions(portable_runner.options())
        with beam.Pipeline(options=options) as p:
            ...

Enable it with ``pytest_plugins = ["tests.support.portable"]`` in ``tests/conftest.py`` (or
import the fixture into the test module).

What runs (all traffic goes to ``localhost``, but Beam binds the pool's and the runner's
control/data servers to ``[::]``, i.e. all interfaces; that is hard-coded):

* the job service: ``python -m apache_beam.runners.portability.local_job_service_main
  --port=PORT`` (an ``FnApiRunner`` behind the Job API), by default via the launcher below;
* the worker pool: ``python -m apache_beam.runners.worker.worker_pool_main
  --service_port=PORT``; for every ``StartWorker`` request it spawns one SDK worker process
  (``python -c "...SdkHarness(...).run()"``).

Behaviour of apache-beam 2.77 that shapes this module (read in its source, then verified):

* The stock local job service always asks for exactly ONE SDK worker per job: it calls
  ``FnApiRunner(...).run_via_runner_api()``, which skips ``run_pipeline()``, the only place
  that reads ``--direct_num_workers``, so ``FnApiRunner._num_workers`` stays 1. Neither
  ``--sdk_worker_parallelism`` (only read by the Java Flink/Spark job servers) nor
  ``--direct_num_workers``/``--direct_running_mode`` change that. By default this module
  therefore starts the job service through a small launcher (``python -m tests.support.portable``)
  that runs the same ``local_job_service_main.run()`` but makes the job's ``FnApiRunner`` use
  ``--sdk_worker_parallelism`` workers. The ``FnApiRunner`` then starts that many SDK worker
  processes via the pool and splits each stage's input across them (stateful stages stay on
  one worker). Pass ``honor_sdk_worker_parallelism=False`` to ``portable_services()`` for the
  unmodified module (one SDK worker process per job).
* The pool starts SDK workers with the bare command ``python`` found on ``PATH``, so the pool's
  ``PATH`` starts with the directory of ``sys.executable``; otherwise a pyenv shim or another
  interpreter could be picked up.
* The pool starts ``SdkHarness`` directly, not ``sdk_worker_main``: pipeline options are not
  applied in the workers, ``--save_main_session`` is never loaded there, and worker logging is
  not forwarded to the job service (WARNING and above reach the pool's stderr, i.e. its log
  file). User code is unpickled by the default pickler (cloudpickle), which pickles classes and
  functions of importable modules (``tests.test_x``, ``beam_infer.*``) BY REFERENCE, so the
  workers import them: the pool and job service get ``PYTHONPATH`` = repo root (+ the caller's
  ``PYTHONPATH``) and run in the repo root. Objects defined in ``__main__`` are pickled by value.
* Each SDK worker's stdout is a pipe that nobody reads: a DoFn printing more than ~64 KiB to
  stdout would block that worker. Use logging (stderr) instead.
* ``result.metrics()`` works, but the local job service only fills *committed* values:
  ``MetricResult.attempted`` is ``None``. Query after ``wait_until_finish()``; the result is
  cached on first call.
* ``PortableRunner`` runs ``pip freeze`` on every submission (~0.7 s) to stage a list of the
  submission environment; ``--experiments=disable_logging_submission_environment`` skips it.
  With the default ``--sdk_location=default`` nothing else is staged or downloaded.
* The workers share this machine's filesystem, so files written with ``beam.io.WriteToText``
  to an ABSOLUTE path are complete once ``wait_until_finish()`` returns DONE. Relative paths
  would be resolved against the workers' working directory (the repo root), not the test's.
* A failing DoFn makes ``wait_until_finish()`` raise ``RuntimeError`` whose message holds the
  worker's traceback; the services stay usable for the next test.
* SDK workers exit when their job ends, but the pool never reaps them (the job service's
  ``ExternalWorkerHandler.stop_worker`` is a no-op, so ``StopWorker`` is never sent): each job
  leaves ``sdk_worker_parallelism`` ``<defunct>`` entries until the pool exits. Harmless.

Shutdown: the job service gets SIGTERM and the pool SIGINT (its KeyboardInterrupt path stops
the gRPC server and, via atexit, any SDK worker still running), then SIGKILL goes to each
service's process group (each is started in its own session, with its SDK workers). On Linux
both services also get that signal if the test process dies without tearing down.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

if TYPE_CHECKING:
    from apache_beam.runners.portability.fn_api_runner.fn_runner import RunnerResult
    from apache_beam.runners.portability.local_job_service import BeamJob

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository root: put on the subprocesses' ``PYTHONPATH`` and used as their cwd."""

DEFAULT_SDK_WORKER_PARALLELISM = 2
"""SDK worker processes per job (needs ``honor_sdk_worker_parallelism=True``)."""

STARTUP_TIMEOUT_S = 60.0
"""How long to wait for each service to answer its first gRPC call."""

STOP_TIMEOUT_S = 20.0
"""How long to wait for each service to exit after the polite signal, before SIGKILL."""

JOB_SERVER_TIMEOUT_S = 60
"""``--job_server_timeout``: bound on each client -> job service RPC (Beam default: 300 s)."""

_LOG_TAIL_CHARS = 6000
_PORT_ATTEMPTS = 3
_THIS_MODULE = ".".join(Path(__file__).resolve().relative_to(REPO_ROOT).with_suffix("").parts)

_LOGGER = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class PortableServiceError(RuntimeError):
    """A portable service subprocess died or did not become ready in time."""


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that was free a moment ago.

    Returns:
        The port number. Another process may take it before it is used; callers retry.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def subprocess_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Builds the environment for the job service, the worker pool and its SDK workers.

    Args:
        base: Environment to start from; defaults to ``os.environ``.

    Returns:
        A copy of ``base`` with the repo root first on ``PYTHONPATH``, the directory of
        ``sys.executable`` first on ``PATH`` (the pool runs a bare ``python``) and unbuffered
        Python output.
    """
    env = dict(os.environ if base is None else base)
    pythonpath = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(pythonpath))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def portable_pipeline_options(
    job_endpoint: str,
    worker_pool_address: str,
    *,
    sdk_worker_parallelism: int = DEFAULT_SDK_WORKER_PARALLELISM,
    extra: Sequence[str] = (),
) -> list[str]:
    """Builds the pipeline flags that submit to the local job service.

    Args:
        job_endpoint: ``host:port`` of the job service.
        worker_pool_address: ``host:port`` of the EXTERNAL worker pool.
        sdk_worker_parallelism: SDK worker processes per job. Only honoured by a job service
            started with ``honor_sdk_worker_parallelism=True``.
        extra: More flags, appended last (argparse: the last occurrence of a flag wins, except
            for repeatable ones such as ``--experiments``, which accumulate).

    Returns:
        The flags, e.g. for ``PipelineOptions(flags)``.
    """
    return [
        "--runner=PortableRunner",
        f"--job_endpoint={job_endpoint}",
        f"--job_server_timeout={JOB_SERVER_TIMEOUT_S}",
        "--environment_type=EXTERNAL",
        f"--environment_config={worker_pool_address}",
        f"--sdk_worker_parallelism={sdk_worker_parallelism}",
        "--experiments=disable_logging_submission_environment",
        *extra,
    ]


@dataclasses.dataclass
class ServiceProcess:
    """One service subprocess, its address and its log file.

    Attributes:
        name: Human-readable name used in errors.
        popen: The subprocess, leader of its own process group (``start_new_session``).
        address: ``localhost:PORT`` the service listens on.
        log_path: File receiving the subprocess's stdout and stderr.
        stop_signal: Signal for a graceful stop (SIGINT lets the worker pool stop its workers).
        log_offset: Where this process's output starts in ``log_path`` (earlier attempts on
            another port wrote before it).
    """

    name: str
    popen: subprocess.Popen[bytes]
    address: str
    log_path: Path
    stop_signal: signal.Signals = signal.SIGTERM
    log_offset: int = 0

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """Returns the end of the service's log file.

        Args:
            chars: Maximum number of characters to return.

        Returns:
            The last ``chars`` characters this process logged (or a note that it is unreadable).
        """
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_offset)
                return log.read().decode(errors="replace")[-chars:]
        except OSError as exc:
            return f"<cannot read {self.log_path}: {exc}>"

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stops the service: the polite signal, then SIGKILL to its whole process group.

        The SIGKILL to the group also removes SDK worker processes the pool left behind.

        Args:
            timeout: Seconds to wait after the polite signal.
        """
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _LOGGER.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


def _probe_job_service(channel: grpc.Channel) -> None:
    from apache_beam.portability.api import beam_job_api_pb2, beam_job_api_pb2_grpc

    beam_job_api_pb2_grpc.JobServiceStub(channel).GetJobs(
        beam_job_api_pb2.GetJobsRequest(), timeout=5
    )


def _probe_worker_pool(channel: grpc.Channel) -> None:
    from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc

    # Stopping an unknown worker id is a no-op that proves the pool service is up.
    beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel).StopWorker(
        beam_fn_api_pb2.StopWorkerRequest(worker_id="readiness-probe"), timeout=5
    )


def _wait_until_serving(
    service: ServiceProcess, probe: Callable[[grpc.Channel], None], timeout: float
) -> None:
    """Waits until ``service`` accepts TCP connections and answers ``probe`` over gRPC.

    Args:
        service: The starting service.
        probe: A cheap RPC on the service; raises ``grpc.RpcError`` while not serving.
        timeout: Seconds before giving up.

    Raises:
        PortableServiceError: The subprocess exited or the timeout passed; the message holds
            the end of its log.
    """
    host, port = service.address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if service.popen.poll() is not None:
            raise PortableServiceError(
                f"{service.name} exited with code {service.popen.returncode} during startup."
                f" Log {service.log_path}:\n{service.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise PortableServiceError(
                f"{service.name} not serving at {service.address} after {timeout:.0f} s"
                f" (last error: {last_error!r}). Log {service.log_path}:\n{service.log_tail()}"
            )
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                pass
            with grpc.insecure_channel(service.address) as channel:
                probe(channel)
        except (OSError, grpc.RpcError) as exc:
            last_error = exc
            time.sleep(0.1)
            continue
        if service.popen.poll() is None:  # Not someone else answering on a stolen port.
            return


def _start_service(
    name: str,
    command: Callable[[int], list[str]],
    probe: Callable[[grpc.Channel], None],
    log_path: Path,
    *,
    stop_signal: signal.Signals,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ServiceProcess:
    """Starts a service subprocess on a free port and waits until it serves.

    Args:
        name: Human-readable name used in errors.
        command: Builds the argv for a given port.
        probe: Readiness RPC, see ``_wait_until_serving``.
        log_path: File for the subprocess's stdout and stderr (a file, not a pipe nobody
            reads: the job service logs forever).
        stop_signal: Signal for a graceful stop.
        timeout: Startup timeout in seconds, per attempt.
        env: The subprocess's environment; default ``subprocess_env()``.
        cwd: Its working directory; default the repo root.

    Returns:
        The running service.

    Raises:
        PortableServiceError: It could not be started.
    """
    error: PortableServiceError | None = None
    for _ in range(_PORT_ATTEMPTS):
        port = free_port()
        with log_path.open("ab") as log:
            log_offset = log.tell()
            popen = subprocess.Popen(
                command(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd or REPO_ROOT,
                env=env or subprocess_env(),
                start_new_session=True,
                preexec_fn=functools.partial(_prepare_child, stop_signal, os.getpid()),
            )
        service = ServiceProcess(
            name, popen, f"localhost:{port}", log_path, stop_signal, log_offset
        )
        try:
            _wait_until_serving(service, probe, timeout)
        except PortableServiceError as exc:
            service.stop(timeout=2)
            if not _port_conflict(service.log_tail()):
                raise
            error = exc
            continue
        # The job service binds "localhost": if only one of 127.0.0.1 / ::1 was free it serves
        # on the other one alone, and clients could reach whoever holds the first.
        if not _port_conflict(service.log_tail()):
            return service
        service.stop(timeout=2)
        error = PortableServiceError(f"{name}: port {port} was taken. Log {log_path}")
    assert error is not None
    raise error


def _prepare_child(sig: signal.Signals, parent_pid: int) -> None:
    """``preexec_fn`` of the services: make ``sig`` work and deliver it if the parent dies.

    SIGINT is reset to its default disposition: a process started in the background by a
    non-interactive shell (``pytest ... &``, some CI runners) ignores SIGINT, children inherit
    that, and Python then installs no KeyboardInterrupt handler, so the worker pool would
    ignore its stop signal.

    On Linux the service also gets ``sig`` if the test process dies, e.g. killed with SIGKILL,
    where fixture teardown cannot run. The kernel sends it when the *thread* that started the
    child exits, so start the services from a thread that lives as long as they should
    (pytest fixtures: the main thread).

    Args:
        sig: Signal to receive when the parent dies.
        parent_pid: The test process, to catch it dying before ``prctl`` took effect.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def _port_conflict(log: str) -> bool:
    """Tells whether a service log shows that its port (or part of it) was already taken."""
    return "Failed to bind" in log or "Address already in use" in log


def start_job_service(
    log_dir: Path,
    *,
    honor_sdk_worker_parallelism: bool = True,
    timeout: float = STARTUP_TIMEOUT_S,
) -> ServiceProcess:
    """Starts the local Beam job service.

    Args:
        log_dir: Directory for ``job_service.log`` and the artifact staging directory.
        honor_sdk_worker_parallelism: Start it through this module's launcher, which makes each
            job use ``--sdk_worker_parallelism`` SDK workers; if False, run the stock
            ``local_job_service_main`` (always one SDK worker per job).
        timeout: Startup timeout in seconds.

    Returns:
        The running job service; ``address`` is the ``--job_endpoint``.
    """
    if honor_sdk_worker_parallelism:
        check_beam_privates()  # here, so the test fails with the message, not a dead service
    module = (
        _THIS_MODULE
        if honor_sdk_worker_parallelism
        else "apache_beam.runners.portability.local_job_service_main"
    )
    staging_dir = log_dir / "job_service_staging"

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", module, f"--port={port}", f"--staging_dir={staging_dir}"]

    return _start_service(
        "Beam job service",
        command,
        _probe_job_service,
        log_dir / "job_service.log",
        stop_signal=signal.SIGTERM,  # Its handler calls sys.exit(0): clean gRPC shutdown.
        timeout=timeout,
    )


def start_worker_pool(log_dir: Path, *, timeout: float = STARTUP_TIMEOUT_S,
                      env: dict[str, str] | None = None,
                      cwd: Path | None = None) -> ServiceProcess:
    """Starts the EXTERNAL Python SDK worker pool (one SDK worker process per request).

    Args:
        log_dir: Directory for ``worker_pool.log`` (also the SDK workers' stderr).
        timeout: Startup timeout in seconds.
        env: The pool's (and its workers') environment; default ``subprocess_env()``,
            which puts the repo root on ``PYTHONPATH``.
        cwd: The pool's working directory; default the repo root.

    Returns:
        The running pool; ``address`` is the ``--environment_config``.
    """

    def command(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "apache_beam.runners.worker.worker_pool_main",
            f"--service_port={port}",
        ]

    return _start_service(
        "Beam SDK worker pool",
        command,
        _probe_worker_pool,
        log_dir / "worker_pool.log",
        # SIGINT -> KeyboardInterrupt -> server.stop() and its atexit hook stops its SDK
        # workers; SIGTERM would kill it without running atexit.
        stop_signal=signal.SIGINT,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


@dataclasses.dataclass(frozen=True)
class PortableServices:
    """Addresses of the running job service and worker pool.

    Attributes:
        job_endpoint: ``localhost:PORT`` of the job service (``--job_endpoint``).
        worker_pool: ``localhost:PORT`` of the worker pool (``--environment_config``).
        log_dir: Directory holding ``job_service.log`` and ``worker_pool.log``.
        sdk_worker_parallelism: SDK worker processes each job gets.
        startup_seconds: Wall time it took to start both services.
    """

    job_endpoint: str
    worker_pool: str
    log_dir: Path
    sdk_worker_parallelism: int
    startup_seconds: float

    def options(self, extra: Sequence[str] = ()) -> list[str]:
        """Returns the pipeline flags for these services.

        Args:
            extra: More flags, appended last.

        Returns:
            The flag list, see ``portable_pipeline_options``.
        """
        return portable_pipeline_options(
            self.job_endpoint,
            self.worker_pool,
            sdk_worker_parallelism=self.sdk_worker_parallelism,
            extra=extra,
        )

    def pipeline_options(self, extra: Sequence[str] = ()) -> PipelineOptions:
        """Returns ``PipelineOptions(self.options(extra))``.

        Args:
            extra: More flags, appended last.

        Returns:
            The pipeline options.
        """
        return PipelineOptions(self.options(extra))


@contextlib.contextmanager
def portable_services(
    log_dir: Path,
    *,
    honor_sdk_worker_parallelism: bool = True,
    sdk_worker_parallelism: int = DEFAULT_SDK_WORKER_PARALLELISM,
    timeout: float = STARTUP_TIMEOUT_S,
) -> Iterator[PortableServices]:
    """Runs a job service and a worker pool for the duration of the ``with`` block.

    Args:
        log_dir: Directory for the services' logs and staging files (created if missing).
        honor_sdk_worker_parallelism: See ``start_job_service``. If False the services still
            work, but every job runs on a single SDK worker process.
        sdk_worker_parallelism: SDK worker processes per job.
        timeout: Startup timeout per service in seconds.

    Yields:
        The services' addresses and flag builder.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        # Stopped in reverse order: the job service first, so it requests no new workers.
        pool = start_worker_pool(log_dir, timeout=timeout)
        stack.callback(pool.stop)
        job_service = start_job_service(
            log_dir, honor_sdk_worker_parallelism=honor_sdk_worker_parallelism, timeout=timeout
        )
        stack.callback(job_service.stop)
        yield PortableServices(
            job_endpoint=job_service.address,
            worker_pool=pool.address,
            log_dir=log_dir,
            sdk_worker_parallelism=sdk_worker_parallelism if honor_sdk_worker_parallelism else 1,
            startup_seconds=time.monotonic() - started,
        )


@pytest.fixture(scope="session")
def portable_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PortableServices]:
    """A local job service and EXTERNAL worker pool for the whole test session.

    Logs are in ``<pytest basetemp>/portable-services*/``.

    Yields:
        The services; ``portable_runner.options()`` gives the pipeline flags.
    """
    with portable_services(tmp_path_factory.mktemp("portable-services")) as services:
        yield services


BEAM_WRITTEN_AGAINST = "2.77"
"""The apache-beam version whose private ``BeamJob._invoke_runner`` the launcher replaces."""

PATCHED_PRIVATE = "apache_beam.runners.portability.local_job_service.BeamJob._invoke_runner"
"""The Beam private the launcher replaces (``run_job_service``)."""


class BeamPrivateChangedError(RuntimeError):
    """The Beam internals ``run_job_service`` relies on are not what it was written for."""


def beam_private_problems(beam_job: type, fn_api_runner: type) -> list[str]:
    """What differs, in ``beam_job`` and ``fn_api_runner``, from the Beam the patch expects.

    The replacement ``_invoke_runner_with_sdk_worker_parallelism`` is a copy of Beam 2.77's
    ``BeamJob._invoke_runner`` (a method of ``self`` alone that builds an ``FnApiRunner``
    with ``provision_info`` and returns ``run_via_runner_api(pipeline_proto, options)``),
    plus one line setting the private ``FnApiRunner._num_workers``. Each of those is checked:
    the method is a plain function taking only ``self``; the job sets ``_provision_info``,
    ``_pipeline_proto`` and ``_job_id`` and has ``set_state`` and ``pipeline_options``;
    ``FnApiRunner(provision_info=...)`` works, sets an int ``_num_workers`` and has
    ``run_via_runner_api``.

    Args:
        beam_job: ``local_job_service.BeamJob`` (a stand-in in tests).
        fn_api_runner: ``fn_runner.FnApiRunner`` (a stand-in in tests).

    Returns:
        One line per difference; empty when the patch fits.
    """
    import inspect

    problems = []
    original = inspect.getattr_static(beam_job, "_invoke_runner", None)
    if original is None:
        problems.append(f"{beam_job.__name__}._invoke_runner no longer exists")
    elif not inspect.isfunction(original):
        problems.append(f"{beam_job.__name__}._invoke_runner is a {type(original).__name__}, "
                        "not a plain method")
    else:
        parameters = list(inspect.signature(original).parameters)
        if parameters != ["self"]:
            problems.append(f"{beam_job.__name__}._invoke_runner takes "
                            f"({', '.join(parameters)}), not (self)")
    sources = []
    for klass in beam_job.__mro__:
        init = vars(klass).get("__init__")
        if inspect.isfunction(init):
            with contextlib.suppress(OSError, TypeError):
                sources.append(inspect.getsource(init))
    for attribute in ("_provision_info", "_pipeline_proto", "_job_id"):
        if not any(f"self.{attribute} =" in source for source in sources):
            problems.append(f"{beam_job.__name__} no longer sets self.{attribute}")
    for method in ("set_state", "pipeline_options"):
        if not callable(getattr(beam_job, method, None)):
            problems.append(f"{beam_job.__name__}.{method} is gone")
    if "provision_info" not in inspect.signature(fn_api_runner.__init__).parameters:
        problems.append(f"{fn_api_runner.__name__}() no longer takes provision_info")
    else:
        try:
            workers = getattr(fn_api_runner(provision_info=None), "_num_workers", None)
        except Exception as e:  # noqa: BLE001 - reported with the rest
            problems.append(f"{fn_api_runner.__name__}(provision_info=None) raised "
                            f"{type(e).__name__}: {e}")
        else:
            if not isinstance(workers, int):
                problems.append(f"{fn_api_runner.__name__} no longer keeps an int _num_workers "
                                f"(found {workers!r})")
    if not callable(getattr(fn_api_runner, "run_via_runner_api", None)):
        problems.append(f"{fn_api_runner.__name__}.run_via_runner_api is gone")
    return problems


def check_beam_privates(beam_job: type | None = None, fn_api_runner: type | None = None
                        ) -> None:
    """Fails, saying which Beam private changed and what to do, if the patch no longer fits.

    Called where the patch is applied (``run_job_service``) and before the job service is
    started with it (``start_job_service``), so a Beam upgrade that changes these internals
    fails the portable tests at once with this message instead of breaking them silently
    (a job service that runs one SDK worker, or dies while starting).

    Args:
        beam_job: Defaults to Beam's ``local_job_service.BeamJob``.
        fn_api_runner: Defaults to Beam's ``fn_runner.FnApiRunner``.

    Raises:
        BeamPrivateChangedError: see ``beam_private_problems``.
    """
    import apache_beam

    if beam_job is None:
        from apache_beam.runners.portability import local_job_service

        beam_job = local_job_service.BeamJob
    if fn_api_runner is None:
        from apache_beam.runners.portability.fn_api_runner import fn_runner

        fn_api_runner = fn_runner.FnApiRunner
    problems = beam_private_problems(beam_job, fn_api_runner)
    if problems:
        raise BeamPrivateChangedError(
            f"tests/support/portable.py replaces the Beam private {PATCHED_PRIVATE} "
            f"(written against apache-beam {BEAM_WRITTEN_AGAINST}; installed: "
            f"{apache_beam.__version__}), and it changed: {'; '.join(problems)}. Read the "
            "installed BeamJob._invoke_runner and update "
            "_invoke_runner_with_sdk_worker_parallelism (and BEAM_WRITTEN_AGAINST) to match; "
            "meanwhile portable_services(honor_sdk_worker_parallelism=False) runs the stock "
            "job service (one SDK worker per job).")


def _invoke_runner_with_sdk_worker_parallelism(self: BeamJob) -> RunnerResult:
    """Replacement for ``BeamJob._invoke_runner`` that honours ``--sdk_worker_parallelism``."""
    from apache_beam.options.pipeline_options import PortableOptions
    from apache_beam.portability.api import beam_job_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    self.set_state(beam_job_api_pb2.JobState.RUNNING)
    options = self.pipeline_options()
    # The flag has no type=int; 0 means "runner's choice".
    parallelism = int(options.view_as(PortableOptions).sdk_worker_parallelism or 0)
    runner = fn_runner.FnApiRunner(provision_info=self._provision_info)
    runner._num_workers = parallelism if parallelism > 0 else os.cpu_count() or 1
    _LOGGER.info("Running job %s on %d SDK workers", self._job_id, runner._num_workers)
    return runner.run_via_runner_api(self._pipeline_proto, options)


def run_job_service(argv: Sequence[str] | None = None) -> None:
    """Runs ``local_job_service_main`` with ``--sdk_worker_parallelism`` honoured.

    This is ``python -m apache_beam.runners.portability.local_job_service_main`` (same flags,
    SIGTERM handling and logging) with ``BeamJob._invoke_runner`` replaced, so that the job's
    ``FnApiRunner`` starts ``--sdk_worker_parallelism`` SDK workers instead of one.

    Args:
        argv: Flags for ``local_job_service_main``; defaults to ``sys.argv[1:]``.
    """
    from apache_beam.runners.portability import local_job_service, local_job_service_main

    check_beam_privates(local_job_service.BeamJob)
    local_job_service.BeamJob._invoke_runner = _invoke_runner_with_sdk_worker_parallelism
    import beam_infer

    beam_infer.patch_local_runner_metrics()  # jobs' metrics stay readable in long runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.basicConfig()
    logging.getLogger().setLevel(logging.INFO)
    local_job_service_main.run(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    run_job_service()
