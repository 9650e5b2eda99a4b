"""What passes between the handler's three stages: ``EncodedBatch`` and ``ModelResults``.

``encode`` turns elements into what the model is fed, ``call_model`` feeds an
``EncodedBatch`` to the servable and returns ``ModelResults``, ``build_outputs`` turns
those into one output per element. The wrappers (``_isolation``, ``_retries``,
``_batches``) pass these values between the stages without looking inside them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from beam_infer._backend import Event, ModelVersion
from beam_infer._signatures import Feed, Signature


@dataclasses.dataclass(frozen=True)
class EncodedBatch:
    """One model call's input.

    Attributes:
        feed: ``EXAMPLES``: serialized examples, fed as one string tensor to the one
            input of every called signature; ``TENSORS``: named tensors for the first
            signature.
        items: Per element: its serialized example, or (``TENSORS``) the element itself,
            stacked when the model is called. None for a batch that came stacked.
        stacked: A batch that came stacked (``on_batches``): a ``TensorBatch``, or a 1-D
            object array or string ``tf.Tensor`` of serialized examples.
        size: How many elements.
    """

    feed: Feed
    items: Sequence[Any] | None = None
    stacked: Any = None
    size: int = 0

    @classmethod
    def of_items(cls, feed: Feed, items: Sequence[Any]) -> EncodedBatch:
        return cls(feed=feed, items=items, size=len(items))

    @classmethod
    def of_stacked(cls, feed: Feed, stacked: Any, size: int) -> EncodedBatch:
        return cls(feed=feed, stacked=stacked, size=size)

    def __len__(self) -> int:
        return self.size

    def examples(self) -> Sequence[Any]:
        """The serialized examples, one per element, as PredictionLogs echo them."""
        if self.items is not None:
            return self.items
        stacked = self.stacked
        return stacked.numpy() if hasattr(stacked, "numpy") else stacked


@dataclasses.dataclass(frozen=True)
class ModelResults:
    """What ``call_model`` returns.

    Attributes:
        outputs: Each called signature with its outputs (numpy, the batch first).
        rows: For tensor inputs, each input's per-element arrays before padding (what
            predict logs echo); None for serialized examples.
        version: The model version that answered (``version`` None for a plain
            SavedModel directory, whose logs carry no model name or version).
        loads: Events on this worker since the previous call (model loads, remote
            requests; see ``_backend.Event``), to be turned into metrics in the thread
            that runs the bundle (Beam drops metrics updated from other threads).
    """

    outputs: list[tuple[Signature, dict[str, np.ndarray]]]
    rows: dict[str, Sequence[np.ndarray]] | None = None
    version: ModelVersion | None = None
    loads: tuple[Event, ...] = ()

    def lean_outputs(self) -> dict[str, np.ndarray]:
        """The batched outputs by alias, or ``"<signature>/<alias>"`` when several
        signatures answered (multi-inference)."""
        if len(self.outputs) == 1:
            return self.outputs[0][1]
        return {f"{s.name}/{alias}": value for s, values in self.outputs
                for alias, value in values.items()}

    def row(self, position: int) -> ModelResults:
        """Element ``position``'s share (outputs must have the batch first)."""
        rows = None if self.rows is None else {
            alias: [values[position]] for alias, values in self.rows.items()}
        return dataclasses.replace(
            self, rows=rows,
            outputs=[(signature, {alias: value[position:position + 1]
                                  for alias, value in outputs.items()})
                     for signature, outputs in self.outputs])

    def has_batch_first(self, size: int) -> bool:
        """Whether every output has ``size`` rows along axis 0."""
        return all(getattr(value, "ndim", 0) >= 1 and value.shape[0] == size
                   for _, outputs in self.outputs for value in outputs.values())
