"""Loading a SavedModel on a worker: copy it to local disk if remote, then one TF2 load.

``LoadedModel`` is one loaded SavedModel version: ``ServingModel`` (``_serving``, the
servable ``SavedModelBackend.load`` returns and Beam keeps in its shared handle) holds
one per version it serves. Remote models are copied by ``_model_cache``, which decides what
may be served from local disk. Loading runs the SavedModel's graph (restore and
initialisation ops, then its warm-up requests): a model can read and write files and use
the network while it loads, so load only models you trust.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from beam_infer._config import ModelCache
from beam_infer._errors import ModelLoadError
from beam_infer._messages import first_line, path_gone
from beam_infer.saved_model import _model_cache, _warmup

_LOG = logging.getLogger(__name__)


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
        cache: Where a remote model is copied to (see ``ModelCache``).

    Raises:
        ModelLoadError: the copy, the load or the warm-up failed; the message says which
            and why.
    """

    def __init__(self, model_path: str, tags: Sequence[str], signature_names: Sequence[str],
                 device: str | None = None, cache: ModelCache | None = None):
        self.model_path = model_path
        self.device = device
        try:
            with _model_cache.local_copy(model_path, cache) as local:
                if not os.path.isdir(local):
                    raise ModelLoadError(path_gone(model_path))
                self._load(local, tags, signature_names)
                self._size_bytes = _directory_size(local)
        except ModelLoadError:
            _model_cache.forget(model_path, cache)  # a copy taken mid-upload is not reused
            raise
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
                f"{type(e).__name__}: {first_line(e)}. Check that the directory is a "
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

