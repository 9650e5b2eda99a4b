"""Quiet start-up for the command line: the ``beam-infer`` command and the jobs.

TensorFlow prints C++ start-up lines (CUDA probing, CPU features, absl's "All log
messages before absl::InitializeLog()") when it is imported, Beam logs a false warning
at every model load when torch is missing ("Resource module is not available ..."), and
several libraries emit Python warnings. A command-line user needs none of that, so the
``beam-infer`` command and the jobs (``pipelines``) call ``quiet_startup`` unless
``--verbose`` is given; their entry points also import TensorFlow with its C++ start-up
lines hidden (``beam_infer_cli.quiet_tensorflow_import``). A failing step is reported
once, by the command's closing error line, so Beam's own ERROR log of it (with its
traceback) is kept for ``--verbose``.

Importing ``beam_infer`` never calls this: a program that uses the library keeps its own
logging exactly as it configured it.
"""

from __future__ import annotations

import logging
import os
import warnings

_QUIET_MESSAGES = (
    # apache-beam 2.77 logs this at every model load when torch is not installed: its
    # memory probe is off; nothing is wrong.
    "Resource module is not available",
)


class _DropKnownNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_QUIET_MESSAGES)


def quiet_startup(verbose: bool) -> None:
    """Quiets TensorFlow's and Beam's start-up noise; does nothing when ``verbose``.

    ``TF_CPP_MIN_LOG_LEVEL`` only works when set before TensorFlow is imported, so the
    entry points set it first; here it is set for subprocesses too (an explicit value is
    kept). Through Python: the root logger at WARNING without Beam's false memory-probe
    warning; TensorFlow, absl and Keras below ERROR; Beam's runners' logs of a failing
    bundle (the error the command reports in one line) off; and warnings from these
    libraries ignored.
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    if not any(isinstance(f, _DropKnownNoise) for f in root.filters):
        root.addFilter(_DropKnownNoise())
    for name in ("tensorflow", "absl", "h5py", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in ("apache_beam.runners.common", "apache_beam.runners.direct",
                 "apache_beam.runners.portability.fn_api_runner",
                 "apache_beam.runners.worker.sdk_worker"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    for module in ("tensorflow", "keras", "tf_keras", "apache_beam", "tfx_bsl", "google"):
        warnings.filterwarnings("ignore", module=module)
