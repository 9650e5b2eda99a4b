"""``ForwardingHandler``: a Beam ModelHandler that hands everything to the one it wraps.

Each of beam_infer's wrappers (isolation, keyed batches, pre-batched input) changes one or
two of a ModelHandler's methods; this base forwards the rest, so the model is loaded,
shared, batched and named in metrics exactly as the wrapped handler says. ``LastBatch``
keeps what a wrapper's ``run_inference`` worked out about a batch for the
``get_num_bytes`` call Beam makes next with the same batch.
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


class LastBatch:
    """What ``run_inference`` worked out about its batch, for ``get_num_bytes`` to reuse.

    Beam's RunInference calls ``get_num_bytes(batch)`` right after
    ``run_inference(batch, ...)`` with the same list; splitting it again costs as much as
    the first time (a tenth of the handler's time on a small model). The batch is known
    by identity and let go when taken, so nothing is held past the metric, and nothing is
    pickled with the handler.

    Example:
        >>> last = LastBatch()
        >>> last.keep(batch, values)
        >>> last.take(batch)  # values; None for any other batch, or a second time
    """

    __slots__ = ("_batch", "_value")

    def __init__(self) -> None:
        self._batch: Any = None
        self._value: Any = None

    def keep(self, batch: Sequence[Any], value: Any) -> None:
        self._batch, self._value = batch, value

    def take(self, batch: Sequence[Any]) -> Any:
        """The value kept for this very batch object, or None; forgotten either way."""
        kept, value = self._batch, self._value
        self._batch = self._value = None
        return value if kept is batch else None

    def __reduce__(self) -> tuple:
        return LastBatch, ()
