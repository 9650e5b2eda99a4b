"""``ForwardingHandler``: a Beam ModelHandler that hands everything to the one it wraps.

Each of beam_infer's wrappers (isolation, keyed batches, pre-batched input) changes one or
two of a ModelHandler's methods; this base forwards the rest, so the model is loaded,
shared, batched and named in metrics exactly as the wrapped handler says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from apache_beam.ml.inference import base


class ForwardingHandler(base.ModelHandler):
    """Forwards every ModelHandler method to ``inner``; subclasses override their own.

    Args:
        inner: The handler wrapped.
    """

    def __init__(self, inner: base.ModelHandler):
        super().__init__()
        self._inner = inner

    @property
    def inner(self) -> base.ModelHandler:
        return self._inner

    def load_model(self) -> Any:
        return self._inner.load_model()

    def run_inference(self, batch: Sequence[Any], model: Any,
                      inference_args: Mapping[str, Any] | None = None) -> Any:
        return self._inner.run_inference(batch, model, inference_args)

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        return self._inner.get_num_bytes(batch)

    def planned_calls(self, batch: Sequence[Any]) -> list | None:
        """The model calls scoring ``batch`` makes, when known ahead (see ``_send_ahead``)."""
        return self._inner.planned_calls(batch)

    def get_metrics_namespace(self) -> str:
        return self._inner.get_metrics_namespace()

    def get_resource_hints(self) -> dict:
        return self._inner.get_resource_hints()

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return self._inner.batch_elements_kwargs()

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        self._inner.validate_inference_args(inference_args)

    def update_model_path(self, model_path: str | None = None) -> None:
        self._inner.update_model_path(model_path=model_path)

    def share_model_across_processes(self) -> bool:
        return self._inner.share_model_across_processes()

    def model_copies(self) -> int:
        return self._inner.model_copies()

    def should_skip_batching(self) -> bool:
        return self._inner.should_skip_batching()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._inner!r})"
