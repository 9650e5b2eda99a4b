"""Models a user's ``load_override_fn`` loads, served like beam_infer's own.

tfx-bsl's transforms take ``load_override_fn(model_path, tags) -> model`` so a pipeline can
load the model its own way (e.g. one copy shared through ``apache_beam.utils.shared``).
beam_infer takes the same argument. The function runs on the worker instead of
beam_infer's copy-and-load; the signatures were read from the path when the pipeline was
built, and the model it returns must serve them. Two kinds are taken:

* what ``tf.saved_model.load`` returns: an object whose ``signatures`` map holds the
  planned signatures, called with keyword tensors by input alias;
* a ``tf.compat.v1.Session`` whose graph has the SavedModel loaded (what tfx-bsl's own
  loader returns, and what its users' override functions return): called with
  ``Session.run``, feeding and fetching the SignatureDef's tensor names.

Warm-up requests, version polling and GPU placement are the loader's business, not
beam_infer's: the model is used as returned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from beam_infer._backend import ModelVersion
from beam_infer._errors import ModelLoadError
from beam_infer._messages import type_name

LoadOverrideFn = Callable[[str, Sequence[str]], Any]

# Per signature name: (input alias -> tensor name, output alias -> tensor name).
TensorNames = dict[str, tuple[dict[str, str], dict[str, str]]]


def tensor_names(meta_graph: meta_graph_pb2.MetaGraphDef, signature_names: Sequence[str]
                 ) -> TensorNames:
    """The graph tensor names behind each signature's aliases."""
    names: TensorNames = {}
    for name in signature_names:
        signature = meta_graph.signature_def[name]
        names[name] = ({alias: info.name for alias, info in signature.inputs.items()},
                       {alias: info.name for alias, info in signature.outputs.items()})
    return names


class OverriddenModel:
    """The model ``load_override_fn`` returned, with ``ServingModel``'s call interface.

    Args:
        loaded: What the function returned.
        version: The version the pipeline was built with (recorded in logs as usual).
        names: The signatures' tensor names, for a ``tf.compat.v1.Session``.
        model_path: Named in errors.

    Raises:
        ModelLoadError: ``loaded`` is neither kind, or lacks a planned signature.
    """

    def __init__(self, loaded: Any, version: ModelVersion, names: TensorNames,
                 model_path: str):
        self._version = version
        self._names = names
        self._session = loaded if isinstance(loaded, tf.compat.v1.Session) else None
        self._functions: dict[str, Any] = {}
        if self._session is not None:
            return
        signatures = getattr(loaded, "signatures", None)
        if not isinstance(signatures, Mapping):
            raise ModelLoadError(
                f"load_override_fn returned {type_name(loaded)} for {model_path!r}; it must "
                "return what tf.saved_model.load(path, tags) returns (an object with "
                ".signatures) or a tf.compat.v1.Session with the SavedModel loaded, as "
                "tfx-bsl's loader does."
            )
        missing = sorted(set(names) - set(signatures))
        if missing:
            raise ModelLoadError(
                f"the model load_override_fn returned for {model_path!r} lacks signatures "
                f"{missing}; it has {sorted(signatures)}. Return a model with the "
                "signatures of the SavedModel the pipeline was built with."
            )
        self._functions = {name: signatures[name] for name in names}

    def call(self, calls: Sequence[tuple[str, Mapping[str, Any]]]
             ) -> tuple[list[dict[str, np.ndarray]], ModelVersion, list[Any]]:
        """Runs ``(signature name, feeds)`` calls; see ``ServingModel.call``."""
        return [self._run(name, feeds) for name, feeds in calls], self._version, []

    def _run(self, name: str, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if self._session is None:
            outputs = self._functions[name](**{alias: tf.convert_to_tensor(value)
                                               for alias, value in feeds.items()})
            return {alias: tensor.numpy() for alias, tensor in outputs.items()}
        inputs, outputs = self._names[name]
        feed_dict = {inputs[alias]: _numpy(value) for alias, value in feeds.items()}
        return self._session.run(dict(outputs), feed_dict=feed_dict)

    def take_load_events(self) -> list[Any]:
        """Loads are the function's own: none are reported."""
        return []

    def version(self) -> int | None:
        return self._version.version


def _numpy(value: Any) -> Any:
    return value.numpy() if isinstance(value, tf.Tensor) else value
