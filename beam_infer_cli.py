"""Command-line start-up: the ``beam-infer`` console script, and a quiet TensorFlow import.

A module of its own, outside the ``beam_infer`` package, because importing anything in
that package imports TensorFlow, and TensorFlow 2.21 prints its C++ start-up lines (absl's
"All log messages before absl::InitializeLog() is called are written to STDERR", the CUDA
probe, CPU features; twice, once per native library) while it is imported, whatever
``TF_CPP_MIN_LOG_LEVEL`` says. ``quiet_tensorflow_import`` imports it, by importing
``beam_infer`` (whose first import of TensorFlow and Beam is the faster one, see
``beam_infer/_startup.py``), with the process's standard error pointed at /dev/null, and
sets ``TF_CPP_MIN_LOG_LEVEL=2`` for what comes after. The jobs (``pipelines/__init__.py``)
use it too. ``--verbose`` skips it.

Nothing here runs when a program imports ``beam_infer``: the library changes no logging.
"""

from __future__ import annotations

import importlib
import os
import sys

VERBOSE_FLAG = "--verbose"


def quiet_tensorflow_import(argv: list[str] | None = None) -> None:
    """Imports beam_infer, and TensorFlow with it, without TensorFlow's start-up lines.

    Does nothing when TensorFlow is already imported or ``--verbose`` is in ``argv``; an
    explicit ``TF_CPP_MIN_LOG_LEVEL`` is kept. A failing import raises as usual (its
    Python error is not hidden; only what native code printed meanwhile is).
    """
    args = sys.argv[1:] if argv is None else argv
    if VERBOSE_FLAG in args or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real file descriptor 2 (an embedding host)
        importlib.import_module("beam_infer")
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        # beam_infer before anything else: its first import of TensorFlow and Beam is the
        # faster one (beam_infer/_startup.py).
        importlib.import_module("beam_infer")
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe logs here, once
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main() -> int:
    """Runs ``beam-infer`` with ``sys.argv``; returns the exit code."""
    quiet_tensorflow_import()
    from beam_infer import _cli

    return _cli.main()


if __name__ == "__main__":
    sys.exit(main())
