"""GPUs on a worker: memory growth, one shared model copy per GPU, and pinning.

TensorFlow grabs nearly all memory of every visible GPU on first use, so a second model
copy (or a second SDK process) on the same machine fails to allocate. With memory growth
on, each copy takes what it needs. When the model is shared across processes and the
user did not choose ``model_copies``, one copy per visible GPU keeps every GPU busy; each
copy is loaded and called under ``tf.device`` of the GPU it claimed (``LoadedModel``
takes the device ``placement`` yields). With no GPU visible nothing
here changes behaviour.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator, Sequence

import tensorflow as tf

from beam_infer._errors import ModelLoadError
from beam_infer._private_dirs import make_private, open_private_file, user_directory

_LOG = logging.getLogger(__name__)
_COUNTER_FILE = "beam_infer_gpu_claims"


def visible_gpus() -> list[str]:
    """Names of the GPUs this process sees, e.g. ``["/physical_device:GPU:0"]``."""
    return [device.name for device in tf.config.list_physical_devices("GPU")]


def default_model_copies(requested: int | None, share_across_processes: bool,
                         gpus: Sequence[str]) -> int:
    """How many model copies a machine keeps.

    Args:
        requested: ``ModelSpec.model_copies``; an explicit choice always wins.
        share_across_processes: Copies exist only when the model is shared.
        gpus: The visible GPUs (``visible_gpus()`` on the worker).

    Returns:
        ``requested`` if set; else one per GPU when sharing and GPUs are visible; else 1.

    Example:
        >>> default_model_copies(None, True, ["/physical_device:GPU:0", "/physical_device:GPU:1"])
        2
    """
    if requested is not None:
        return requested
    if share_across_processes and gpus:
        return len(gpus)
    return 1


def logical_device(physical_name: str) -> str:
    """``/physical_device:GPU:1`` → ``/GPU:1``, the name ``tf.device`` takes."""
    return "/" + physical_name.rsplit("/", 1)[-1].removeprefix("physical_device:")


def device_for_claim(claim: int, gpus: Sequence[str]) -> str | None:
    """The device the ``claim``-th copy loaded on this machine is pinned to (round robin)."""
    if not gpus:
        return None
    return logical_device(gpus[claim % len(gpus)])


def claim_next(directory: str | None = None) -> int:
    """A machine-wide counter: 0 for the first caller on this machine, then 1, 2, ...

    Shared copies are loaded by different processes that know nothing of each other; a
    locked counter file lets each take a different GPU. It lives in this user's private
    directory (``_private_dirs``) and is opened without following symlinks, so nothing
    planted in the shared temp directory is written through.

    Raises:
        ModelLoadError: the directory cannot be used safely; the message says why.
    """
    if directory is None:
        directory = user_directory()
        problem = make_private(directory)
        if problem:
            raise ModelLoadError(
                f"the GPU claim directory {directory} {problem}; beam_infer keeps it "
                "private to this user. Remove it so beam_infer can create it."
            )
    fd = open_private_file(os.path.join(directory, _COUNTER_FILE))
    with os.fdopen(fd, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0)
            text = f.read(32).strip()
            claim = int(text) if text.isdigit() else 0
            f.seek(0)
            f.truncate()
            f.write(str(claim + 1))
            f.flush()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    return claim


def enable_memory_growth() -> list[str]:
    """Turns memory growth on for every visible GPU; returns the GPUs it applied to.

    TensorFlow only accepts this before the GPUs are initialised; if that already
    happened in this process the setting is left as it is (and logged).
    """
    applied = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
            applied.append(gpu.name)
        except RuntimeError as e:  # GPUs already initialised in this process
            _LOG.warning("could not enable memory growth on %s: %s", gpu.name, e)
    return applied


@contextlib.contextmanager
def placement(share_across_processes: bool, *, gpus: Sequence[str] | None = None,
              counter_dir: str | None = None) -> Iterator[str | None]:
    """Where a model copy is loaded: memory growth on, pinned to a GPU when shared.

    Args:
        share_across_processes: Copies are shared (and so pinned one per GPU).
        gpus: The devices to spread copies over; default ``visible_gpus()``.
        counter_dir: Where the machine-wide claim counter lives; default this user's
            private directory in the temp dir.

    Yields:
        The ``tf.device`` name used (give it to ``LoadedModel`` so calls run there too),
        or None: no GPU, or one model per process, where TF's default placement is right.
    """
    gpus = visible_gpus() if gpus is None else list(gpus)
    if not gpus:
        yield None
        return
    enable_memory_growth()
    yield (device_for_claim(claim_next(counter_dir), gpus)
           if share_across_processes else None)
