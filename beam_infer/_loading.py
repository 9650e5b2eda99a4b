"""Loading a SavedModel on a worker: copy it to local disk if remote, then one TF2 load.

``LoadedModel`` is what ``SavedModelHandler.load_model`` returns and what Beam keeps in
its shared handle (one per worker process, or one per machine when shared across
processes). It exposes only methods, so Beam's cross-process proxy can forward calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from apache_beam.io.filesystems import FileSystems

from beam_infer import _warmup
from beam_infer._errors import ModelLoadError

_LOG = logging.getLogger(__name__)
_COPY_LOCK = threading.Lock()


def is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) in (None, "file")


def local_copy(model_path: str) -> str:
    """A local directory holding the SavedModel at ``model_path``.

    Local paths are used in place. Remote ones (``gs://``, ``s3://``, ...) are copied
    once per machine into the temp directory, under a name derived from the path, and
    reused by later loads; the copy is written aside and renamed so a half-copied model
    is never loaded.
    """
    if is_local(model_path):
        return model_path.removeprefix("file://")
    digest = hashlib.sha256(model_path.encode()).hexdigest()[:16]
    target = os.path.join(tempfile.gettempdir(), "beam_infer_models", digest)
    with _COPY_LOCK:
        if os.path.isdir(target):
            return target
        os.makedirs(os.path.dirname(target), exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f"{digest}-", dir=os.path.dirname(target))
        try:
            _copy_tree(model_path, staging)
            os.rename(staging, target)
        except OSError as e:
            shutil.rmtree(staging, ignore_errors=True)
            if os.path.isdir(target):  # another process won the race
                return target
            raise ModelLoadError(
                f"could not copy the model from {model_path!r} to local disk at {target!r}: "
                f"{e}. Check that workers can read the path and have disk space."
            ) from e
    return target


def _copy_tree(source: str, destination: str) -> None:
    prefix = source.rstrip("/") + "/"
    matches = FileSystems.match([prefix + "**"])[0].metadata_list
    if not matches:
        raise OSError(f"nothing found under {source!r}")
    for metadata in matches:
        relative = metadata.path[len(prefix):]
        if not relative or metadata.path.endswith("/"):
            continue
        local = os.path.join(destination, *relative.split("/"))
        os.makedirs(os.path.dirname(local), exist_ok=True)
        with FileSystems.open(metadata.path) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


class LoadedModel:
    """A SavedModel loaded with ``tf.saved_model.load``, warmed up, and its signatures.

    Loading replays the model's ``assets.extra/tf_serving_warmup_requests`` (see
    ``_warmup``) before the object is returned, so no batch reaches a cold model.

    Args:
        model_path: Where the model lives (as configured; may be remote).
        tags: The MetaGraph tag set to load.
        signature_names: The signatures that will be called.
        device: A ``tf.device`` name (e.g. ``"/GPU:1"``) to load and run on; None leaves
            placement to TensorFlow.

    Raises:
        ModelLoadError: the copy, the load or the warm-up failed; the message says which
            and why.
    """

    def __init__(self, model_path: str, tags: Sequence[str], signature_names: Sequence[str],
                 device: str | None = None):
        self.model_path = model_path
        self.device = device
        local = local_copy(model_path)
        if not os.path.isdir(local):
            raise ModelLoadError(
                f"model path {model_path!r} no longer exists on this worker; it held a "
                "SavedModel when the pipeline was built. Restore it, or point "
                "ModelSpec(model_path=...) at a path that stays in place while the job runs."
            )
        try:
            self._load(local, tags, signature_names)
        except ModelLoadError:
            if not is_local(model_path):  # a copy taken mid-upload must not be reused
                shutil.rmtree(local, ignore_errors=True)
            raise
        self._size_bytes = _directory_size(local)
        self._size_reported = False
        _LOG.info("Loaded %s (tags %s) from %s", model_path, list(tags), local)

    def _load(self, local: str, tags: Sequence[str], signature_names: Sequence[str]) -> None:
        model_path = self.model_path
        try:
            with self._placement():
                self._root = tf.saved_model.load(local, tags=list(tags))
        except Exception as e:
            raise ModelLoadError(
                f"tf.saved_model.load failed for {model_path!r} (tags {list(tags)}): "
                f"{type(e).__name__}: {_first_line(e)}. Check that the directory is a "
                "complete SavedModel (saved_model.pb plus variables/) written by a "
                f"TensorFlow no newer than {tf.__version__}, and that custom ops it uses "
                "are imported on the workers."
            ) from e
        missing = [n for n in signature_names if n not in self._root.signatures]
        if missing:
            raise ModelLoadError(
                f"signatures {missing} of {model_path!r} were not restored by "
                f"tf.saved_model.load; restored: {sorted(self._root.signatures)}."
            )
        self._functions = {name: self._root.signatures[name] for name in signature_names}
        with self._placement():
            self.warmup_records = _warmup.replay(
                self._root, _warmup.read_warmup_records(local), model_path)

    def run(self, signature_name: str, feeds: Mapping[str, np.ndarray | tf.Tensor]
            ) -> dict[str, np.ndarray]:
        """Calls one signature on a batch and returns its outputs as numpy arrays."""
        # Variables live where they were loaded; run there too, not on TF's default GPU.
        with self._placement():
            outputs = self._functions[signature_name](**feeds)
        return {alias: tensor.numpy() for alias, tensor in outputs.items()}

    def _placement(self) -> contextlib.AbstractContextManager:
        return tf.device(self.device) if self.device else contextlib.nullcontext()

    def take_size_report(self) -> int | None:
        """The SavedModel's size on disk the first time it is asked for, then None.

        Load-time metrics cannot be reported from Beam's ``setup``; the handler reports
        this from the first batch instead, once per load.
        """
        if self._size_reported:
            return None
        self._size_reported = True
        return self._size_bytes


def _directory_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(path) for name in names)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
