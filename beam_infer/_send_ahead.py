"""Send-ahead: a batch's requests go out while the worker finishes the batch before it.

Beam's RunInference scores one batch at a time in the bundle's thread: it waits for the
model's answer, then Beam builds and emits the outputs and gathers the next batch. With
a model behind an endpoint that wait is the network's and the server's time, and the
server idles while the worker does its own per-element work. Send-ahead overlaps the two:

    BatchElements → SendAhead → RunInference (a held batch per call, outputs per element)

``SendAheadFn`` keeps two batches back (``HELD_BATCHES``): for each batch it starts the
batch's requests (``servable.send_ahead``, with the calls the handler would make, from
``planned_calls``) and emits the oldest batch it holds, whose answers are by then in or
on their way; the last ones go at the end of the bundle, each in its own window.
``AheadHandler`` scores each held batch with the usual handler (isolation, retries, dead
letters, outputs unchanged) under ``servable.expecting(flight)``, so the first model
call with the same calls takes the flight's answers instead of sending them again.
Elements refused before the model, and isolation, make other calls; the flight's
answered rows then wait in the servable's row cache for them, so no row is scored twice.

Pre-batched input (``on_batches()``) holds input batches back the same way, with
``BatchesHandler`` as the handler. Used for backends whose servables offer it
(``Backend.sends_ahead``: endpoints). The
servable both steps use is the one Beam's shared handle loaded for ``RunInference``,
registered per process under the transform's id when it loads (``_SERVABLES``).
"""

from __future__ import annotations

import collections
import threading
import uuid
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference import base
from apache_beam.utils.windowed_value import WindowedValue

from beam_infer._forwarding import ForwardingHandler

# Batches held back, their requests sent: with one, the server idled whenever the worker
# took longer than the server over a batch (and the worker waited in the other case);
# with two, a batch's requests queue behind the previous one's, so the server always has
# the next batch (a gRPC y = 5x benchmark: the worker waited 30% of its time with one).
HELD_BATCHES = 2
# Per process: transform id -> the servable its RunInference loaded (while it lives).
_SERVABLES: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()


class Held:
    """A batch and the flight of requests sent ahead for it.

    Pickled (a runner that does not fuse the two steps, Beam's size sampling), it keeps
    only the batch: the flight belongs to this process, and the batch is scored as usual.
    """

    __slots__ = ("batch", "flight")

    def __init__(self, batch: Sequence[Any], flight: Any = None):
        self.batch = batch
        self.flight = flight

    def __reduce__(self):
        return Held, (self.batch,)

    def __len__(self) -> int:
        return len(self.batch)


class SendAheadFn(beam.DoFn):
    """Starts each batch's requests and emits the oldest batch held (see the module doc)."""

    def __init__(self, handler: AheadHandler):
        super().__init__()
        self._handler = handler

    def start_bundle(self) -> None:
        self._held: collections.deque[WindowedValue] = collections.deque()

    def process(self, batch, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam):
        self._held.append(WindowedValue(Held(batch, self._handler.send_ahead(batch)),
                                        timestamp, (window,)))
        if len(self._held) > HELD_BATCHES:
            yield self._held.popleft()

    def finish_bundle(self):
        held, self._held = self._held, collections.deque()
        yield from held


class AheadHandler(ForwardingHandler):
    """Scores one ``Held`` batch per call with ``inner``; one list of outputs per batch.

    Args:
        inner: The handler Beam's RunInference would run per element (isolation, keys).
    """

    def __init__(self, inner: base.ModelHandler):
        super().__init__(inner)
        self._id = uuid.uuid4().hex

    def load_model(self) -> Any:
        servable = self._inner.load_model()
        with _LOCK:
            _SERVABLES[self._id] = servable
        return servable

    def send_ahead(self, batch: Sequence[Any]) -> Any:
        """The flight of ``batch``'s requests, or None (not loaded yet, or the calls
        cannot be built here: the batch is then scored, and fails, as usual)."""
        servable = _SERVABLES.get(self._id)
        if servable is None or not batch:
            return None
        # The one guard for planning and sending: scoring the batch meets the same error
        # and reports it as usual (isolation, dead letters, or stopping the pipeline).
        try:
            calls = self._inner.planned_calls(batch)
            return servable.send_ahead(calls) if calls is not None else None
        except Exception:  # noqa: BLE001 - see above
            return None

    def run_inference(self, batch: Held, model: Any,
                      inference_args: Mapping[str, Any] | None = None) -> list[Any]:
        # Batching is skipped: Beam hands over each Held as it came, and emits each output.
        with model.expecting(batch.flight):
            return list(self._inner.run_inference(batch.batch, model, inference_args))

    def get_num_bytes(self, batch: Held) -> int:
        return self._inner.get_num_bytes(batch.batch)

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": 1}

    def should_skip_batching(self) -> bool:
        return True


def per_element(pcoll: beam.PCollection, handler: base.ModelHandler,
                output_type: Any) -> beam.PCollection:
    """``pcoll`` scored per element by ``handler`` with send-ahead: the steps ``Batch``,
    ``SendAhead`` and ``Infer`` (Beam's RunInference, its own batching skipped)."""
    ahead = AheadHandler(handler)
    return (pcoll
            | "Batch" >> beam.BatchElements(**handler.batch_elements_kwargs())
            | "SendAhead" >> beam.ParDo(SendAheadFn(ahead))
            | "Infer" >> base.RunInference(ahead).with_output_types(output_type))


def batched(batches: beam.PCollection, handler: base.ModelHandler,
            output_type: Any) -> beam.PCollection:
    """Pre-batched elements (each one ``_batches.Batch``) scored by ``handler`` (a
    ``BatchesHandler``) with send-ahead: the steps ``SendAhead`` and ``Infer``."""
    ahead = AheadHandler(handler)
    return (batches
            | "SendAhead" >> beam.ParDo(SendAheadFn(ahead))
            | "Infer" >> base.RunInference(ahead).with_output_types(output_type))
