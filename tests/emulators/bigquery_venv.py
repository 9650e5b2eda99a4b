"""The Python 3.13 side venv that runs local-bigquery, built once per user and cached.

local-bigquery needs Python >= 3.13. Left alone, its DuckDB downloads six extensions from
extensions.duckdb.org on the first request. ``local_bigquery.txt`` pins every package, DuckDB
1.5.5 and its extension wheels included, and everything comes from PyPI. ``ensure_venv`` builds
the venv under ``~/.cache/beam_infer/`` (or ``$XDG_CACHE_HOME``), in a directory named by a hash
of that file, the extension step and the interpreter, so an edit rebuilds it and reruns cost
nothing. The extension files are linked to where DuckDB looks (``$HOME/.duckdb``, with HOME
set for the emulator only). The first build took 30-44 s on this 2-core machine
(``BUILD_TIMEOUT_S`` bounds it). A file lock makes concurrent sessions wait for one build.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

REQUIREMENTS = Path(__file__).with_name("local_bigquery.txt")
PYTHON313_ENV = "BEAM_INFER_PYTHON313"
"""Names a Python 3.13 interpreter to use before looking anywhere else."""
PYENV_PYTHON313 = Path("/root/.pyenv/versions/3.13.0/bin/python3.13")
BUILD_TIMEOUT_S = 300.0
"""Bound on building the venv, and on waiting for another session that is building it."""
_LOG_TAIL_CHARS = 4000
_BUILT_MARKER = "beam_infer_built.json"

# Run by the venv's Python with HOME set to the DuckDB home: links the extension files of the
# wheels into DuckDB's extension directory, then loads each with downloads turned off.
_INSTALL_EXTENSIONS = r"""
import glob, os, pathlib, sys
import duckdb
version = duckdb.__version__
platform = duckdb.sql("PRAGMA platform").fetchone()[0]
target = pathlib.Path(os.environ["HOME"], ".duckdb", "extensions", f"v{version}", platform)
target.mkdir(parents=True, exist_ok=True)
pattern = f"{sys.prefix}/lib/python*/site-packages/duckdb_extension_*/extensions/v{version}/*"
names = []
for path in sorted(glob.glob(pattern)):
    link = target / pathlib.Path(path).name
    link.unlink(missing_ok=True)
    link.symlink_to(path)
    names.append(link.name.split(".")[0])
con = duckdb.connect(config={"autoinstall_known_extensions": False})
for name in names:
    con.load_extension(name)
print(f"DuckDB {version} {platform}: loaded {', '.join(names)} from {target}")
"""


class EmulatorError(RuntimeError):
    """The emulator's venv could not be built, or a server did not start."""


class Python313NotFoundError(EmulatorError):
    """No Python 3.13 interpreter was found; the message says where it looked."""


@dataclasses.dataclass(frozen=True)
class Venv:
    """The side venv that runs local-bigquery.

    Attributes:
        path: The venv.
        duckdb_home: HOME for the emulator; DuckDB finds its extensions under it.
        built_s: Seconds this process spent building it; None when it was reused.
    """

    path: Path
    duckdb_home: Path
    built_s: float | None



def find_python313() -> str:
    """The first Python 3.13 that runs and has ``venv``.

    Looks at ``$BEAM_INFER_PYTHON313``, ``/root/.pyenv/versions/3.13.0``, the other pyenv
    3.13 versions, then ``python3.13`` on PATH.

    Raises:
        Python313NotFoundError: none works; the message lists each place and why it failed.
    """
    candidates = []
    if os.environ.get(PYTHON313_ENV):
        candidates.append(os.environ[PYTHON313_ENV])
    candidates.append(str(PYENV_PYTHON313))
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates += sorted(str(p) for p in pyenv_root.glob("versions/3.13*/bin/python3.13"))
    candidates.append(shutil.which("python3.13") or "python3.13 on PATH")
    looked = []
    for python in dict.fromkeys(candidates):
        problem = _python313_problem(python)
        if problem is None:
            return python
        looked.append(f"{python} ({problem})")
    raise Python313NotFoundError(
        "local-bigquery needs Python 3.13 and none was found; looked at "
        f"{'; '.join(looked)}. Install one (e.g. `pyenv install 3.13.0`) or set "
        f"{PYTHON313_ENV}=/path/to/python3.13."
    )


def _python313_problem(python: str) -> str | None:
    if not os.path.isfile(python):
        return "absent"
    check = "import sys, venv, ensurepip; print(sys.version_info[:2] == (3, 13))"
    try:
        done = subprocess.run([python, "-c", check], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"does not run: {e}"
    if done.stdout.strip() != "True":
        return f"not a Python 3.13 with venv: {(done.stderr or done.stdout).strip()[-300:]}"
    return None


def cache_dir() -> Path:
    """Per-user cache of built emulator venvs."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "beam_infer"


def venv_path(python: str) -> Path:
    """Where the venv for ``python`` and the current recipe (``local_bigquery.txt``) lives."""
    recipe = REQUIREMENTS.read_bytes() + _INSTALL_EXTENSIONS.encode()
    key = hashlib.sha256(recipe + os.path.realpath(python).encode())
    return cache_dir() / f"local-bigquery-{key.hexdigest()[:16]}"


def ensure_venv(python: str) -> Venv:
    """Builds the venv unless a finished one is cached; waits for a concurrent build.

    Raises:
        EmulatorError: a build step failed or ran past ``BUILD_TIMEOUT_S``; the message
            has the end of the build log.
    """
    path = venv_path(python)
    path.parent.mkdir(parents=True, exist_ok=True)
    waited_until = time.monotonic() + BUILD_TIMEOUT_S
    with open(f"{path}.lock", "w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > waited_until:
                    raise EmulatorError(
                        f"another process has been building {path} for over "
                        f"{BUILD_TIMEOUT_S:.0f} s (lock {path}.lock held)") from None
                time.sleep(0.5)
        home = path / "duckdb-home"
        if (path / _BUILT_MARKER).exists():
            return Venv(path, home, None)
        shutil.rmtree(path, ignore_errors=True)  # a build that died half way
        started = time.monotonic()
        deadline = started + BUILD_TIMEOUT_S
        log = path.with_name(path.name + ".build.log")
        log.write_text("")
        venv_python = str(path / "bin" / "python")
        _run_logged("creating the venv", [python, "-m", "venv", str(path)], log, deadline)
        # Exact pins and wheels only: nothing to resolve and nothing to compile.
        _run_logged("installing local_bigquery.txt",
                    [venv_python, "-m", "pip", "install", "--no-deps", "--only-binary=:all:",
                     "--no-input", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
                    log, deadline)
        home.mkdir()
        _run_logged("installing the DuckDB extensions", [venv_python, "-c", _INSTALL_EXTENSIONS],
                    log, deadline, env={**os.environ, "HOME": str(home)})
        built_s = time.monotonic() - started
        (path / _BUILT_MARKER).write_text(json.dumps(
            {"python": python, "requirements": str(REQUIREMENTS), "build_s": round(built_s, 1)}))
        return Venv(path, home, built_s)


def _run_logged(step: str, argv: Sequence[str], log: Path, deadline: float,
                env: dict[str, str] | None = None) -> None:
    with log.open("a") as out:
        out.write(f"$ {shlex.join(argv)[:300]}\n")
        out.flush()
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, env=env, check=False,
                                  timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            done = None
    if done is None or done.returncode != 0:
        what = (f"ran past the {BUILD_TIMEOUT_S:.0f} s bound" if done is None
                else f"failed with exit code {done.returncode}")
        raise EmulatorError(
            f"building the local-bigquery venv: {step} {what}. The next run starts the build "
            f"again. Log {log}:\n{log.read_text()[-_LOG_TAIL_CHARS:]}")
