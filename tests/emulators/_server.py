"""Starting and stopping an emulator process on a free loopback port, every wait bounded."""

from __future__ import annotations

import contextlib
import pathlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence

import pytest

HOST = "127.0.0.1"


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def answers(url: str, timeout_secs: float = 1.0) -> bool:
    """Whether an HTTP server answers ``url`` (any status counts)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_secs):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def running(name: str, command: Callable[[int], Sequence[str]], ready_url: Callable[[int], str],
            log_dir: pathlib.Path, *, start_timeout_secs: float, attempts: int = 3
            ) -> Iterator[int]:
    """Runs ``command(port)`` until the context exits; yields the port once it answers.

    A start that dies (say another process took the port between picking and binding)
    is retried on a new port, ``attempts`` times at most.

    Raises:
        pytest.fail: the server did not answer within ``start_timeout_secs``.
    """
    log = log_dir / f"{name}.log"
    for attempt in range(1, attempts + 1):
        port = free_port()
        with open(log, "ab") as out:
            process = subprocess.Popen(list(command(port)), stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + start_timeout_secs
            while process.poll() is None and time.monotonic() < deadline:
                if answers(ready_url(port)):
                    break
                time.sleep(0.1)
            else:
                if process.poll() is not None and attempt < attempts:
                    continue
                what = (f"exited with code {process.poll()} before it answered"
                         if process.poll() is not None else
                         f"did not answer within {start_timeout_secs:.0f} s")
                pytest.fail(
                    f"{name} {what} ({ready_url(port)}; {attempt} start(s)); command: "
                    f"{' '.join(command(port))}; log {log}:\n{_tail(log)}", pytrace=False)
            yield port
            return
        finally:
            _stop(process)


def _stop(process: subprocess.Popen, timeout_secs: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_secs)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_secs)


def _tail(path: pathlib.Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
