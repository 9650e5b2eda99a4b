"""Keyed batches in ``RunInference``: ``(key, [example, ...])`` → ``(key, [log, ...])``.

tfx-bsl's ``RunInference`` takes ``(K, List[Example | SequenceExample | bytes])`` besides
single elements, and so does beam_infer's: the list's examples are scored with the rest
of the Beam batch (one model call for many such elements), then put back into one output
per input element, a list of PredictionLogs in the list's order. This forwards metadata
that belongs to a group of examples (its key) without joining the outputs afterwards.

Only signatures fed serialized examples nest: for a tensor-input signature a list is one
element's value (``[0.1, 0.2]``), and a list of ``str`` is raw text.

With dead letters, an element whose list holds an example that cannot be scored becomes
one ``DeadLetter`` (the element as it came in, the first failure's stage and reason); the
``failed_elements_<stage>`` counters count examples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from apache_beam.typehints import typehints

from beam_infer._dead_letters import DeadLetter
from beam_infer._encoding import ExampleLike
from beam_infer._forwarding import ForwardingHandler, LastBatch
from beam_infer._keys import Keys


def is_keyed_batch(element: Any) -> bool:
    """True for ``(key, list)`` whose items are all examples or bytes (empty lists too)."""
    return (type(element) is tuple and len(element) == 2 and type(element[1]) is list
            and all(isinstance(item, ExampleLike) for item in element[1]))


def is_list_type(value_type: Any) -> bool:
    """True for a declared ``List[...]`` type hint."""
    inner = getattr(value_type, "inner_type", None)
    return inner is not None and value_type == typehints.List[inner]


def may_hold_keyed_batches(element_type: Any, keys: Keys) -> bool:
    """Whether a PCollection of ``element_type`` may hold keyed batches (undeclared: yes)."""
    if keys is Keys.NONE:
        return False
    tuple_types = getattr(element_type, "tuple_types", None)
    if keys is Keys.ALL and tuple_types is not None:
        value_type = tuple_types[1]
        return value_type in (Any, typehints.Any) or is_list_type(value_type) or \
            isinstance(value_type, typehints.UnionConstraint)
    return True


class KeyedBatchesHandler(ForwardingHandler):
    """Flattens keyed batches into the Beam batch, and nests their outputs back.

    Args:
        inner: The handler that scores the flattened batch (an ``IsolatingHandler``).

    Example:
        >>> handler = KeyedBatchesHandler(isolating)
        >>> handler.run_inference([("k", [example, example])], model)
        [('k', [PredictionLog, PredictionLog])]
    """

    def __init__(self, inner: Any):
        super().__init__(inner)
        self._last = LastBatch()  # the flat batch scored last, for get_num_bytes

    def run_inference(self, batch: Sequence[Any], model: Any,
                      inference_args: Mapping[str, Any] | None = None) -> list[Any]:
        flat, groups = _flatten(batch)
        if groups is None:
            results = self._inner.run_inference(batch, model, inference_args)
        else:
            results = _nest(batch, self._inner.run_inference(flat, model, inference_args),
                            groups)
        self._last.keep(batch, flat)  # the same object the inner handler remembers
        return results

    def planned_calls(self, batch: Sequence[Any]) -> list | None:
        return self._inner.planned_calls(_flatten(batch)[0])

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        flat = self._last.take(batch)
        return self._inner.get_num_bytes(_flatten(batch)[0] if flat is None else flat)


def _flatten(batch: Sequence[Any]) -> tuple[Sequence[Any], list[int | None] | None]:
    """The batch with each keyed batch spread into ``(key, item)`` pairs.

    Returns the flat batch and, per input element, how many flat entries it became
    (None: a plain element, one entry); ``groups`` is None when nothing was spread, and
    the flat batch is then ``batch`` itself.
    """
    if not _may_hold_keyed_batch(batch) or not any(is_keyed_batch(e) for e in batch):
        return batch, None
    flat: list[Any] = []
    groups: list[int | None] = []
    for element in batch:
        if is_keyed_batch(element):
            key, items = element
            flat.extend((key, item) for item in items)
            groups.append(len(items))
        else:
            flat.append(element)
            groups.append(None)
    return flat, groups


def _may_hold_keyed_batch(batch: Sequence[Any]) -> bool:
    """False when no element can be a keyed batch, found with no call per element."""
    types = set(map(type, batch))
    if tuple not in types:
        return False
    if types == {tuple}:  # pairs, as keyed input comes: is any value a list?
        try:
            value_types = {type(value) for _, value in batch}
        except ValueError:  # a tuple of another length
            return True
        return list in value_types
    return True


def _nest(batch: Sequence[Any], results: Sequence[Any], groups: list[int | None]
          ) -> list[Any]:
    nested = []
    position = 0
    for element, size in zip(batch, groups, strict=True):
        if size is None:
            nested.append(results[position])
            position += 1
            continue
        own = results[position:position + size]
        position += size
        failed = next((r for r in own if isinstance(r, DeadLetter)), None)
        if failed is not None:
            index = own.index(failed)
            nested.append(DeadLetter(
                element=element, key=element[0], stage=failed.stage,
                error_type=failed.error_type,
                message=f"item {index} of the keyed batch ({size} items): {failed.message}"))
        else:
            nested.append((element[0], [log for _, log in own]))
    return nested
