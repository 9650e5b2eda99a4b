"""Keys: ``(key, value)`` elements pass their key through scoring, decided in one place.

Whether elements carry keys is decided once, from the PCollection's declared element
type (``Keys.of_type``), when the transform is built: declared pairs, declared examples,
or undeclared (then a 2-tuple is a pair, element by element, as tfx-bsl does). Batches
are split into keys and values here and outputs joined back here, so no other module
looks at tuples.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from apache_beam.typehints import typehints

from beam_infer._encoding import ExampleLike


class Keys(enum.Enum):
    """Whether the elements of a PCollection are ``(key, value)`` pairs."""

    NONE = "none"  # declared examples: a tuple is a value like any other
    ALL = "all"  # declared Tuple[K, V]: an element that is not a pair is refused
    PER_ELEMENT = "per_element"  # undeclared: a 2-tuple is a pair, anything else a value

    @classmethod
    def of_type(cls, element_type: Any) -> Keys:
        """From a PCollection's element type: a declared pair, a declared example, or not known."""
        tuple_types = getattr(element_type, "tuple_types", None)
        if tuple_types is not None and len(tuple_types) == 2:
            return cls.ALL
        known = (*ExampleLike.__args__, str, dict, list, np.ndarray,  # type: ignore[attr-defined]
                 tf.Tensor)
        if isinstance(element_type, type) and issubclass(element_type, known):
            return cls.NONE
        # List[X] and Dict[K, V] (batches as on_batches() takes them): never a pair.
        if isinstance(element_type, typehints.ListConstraint | typehints.DictConstraint):
            return cls.NONE
        return cls.PER_ELEMENT

    def split(self, element: Any) -> tuple[bool, Any, Any]:
        """``(fits, key, value)`` for one element; ``fits`` False: ``ALL`` and not a pair."""
        if self is Keys.NONE:
            return True, None, element
        if _is_pair(element):
            return True, element[0], element[1]
        return self is Keys.PER_ELEMENT, None, element


def _is_pair(element: Any) -> bool:
    return isinstance(element, tuple) and len(element) == 2


@dataclasses.dataclass
class KeyedBatch:
    """One batch split into keys and values, to join each output to its key.

    Attributes:
        has_key: Per element, whether it came as a pair; None when no element could.
        keys: Per element, its key (None without one).
        values: Per element, what is fed to the model.
    """

    has_key: list[bool] | None
    keys: list[Any]
    values: list[Any]

    @classmethod
    def split(cls, batch: Sequence[Any], keys: Keys) -> KeyedBatch:
        if keys is Keys.NONE:
            return cls(None, [None] * len(batch), list(batch))
        types = set(map(type, batch))
        if not any(issubclass(t, tuple) for t in types):  # no pairs at all: found in C
            return cls([False] * len(batch), [None] * len(batch), list(batch))
        if types == {tuple}:  # the common case, all pairs: unpacked with no call per element
            try:
                key_list = [key for key, _ in batch]
            except ValueError:  # a tuple of another length: decided element by element
                pass
            else:
                # Not zip(*batch): its iterator per element costs the garbage collector
                # more than the unpacking (3x as long in a worker holding TensorFlow).
                return cls([True] * len(batch), key_list, [value for _, value in batch])
        has_key = [_is_pair(e) for e in batch]
        return cls(has_key, [e[0] if k else None for e, k in zip(batch, has_key, strict=True)],
                   [e[1] if k else e for e, k in zip(batch, has_key, strict=True)])

    def not_pairs(self) -> list[int]:
        """The elements that came without a key."""
        if self.has_key is None:
            return list(range(len(self.values)))
        if all(self.has_key):  # the common case, found in C
            return []
        return [i for i, k in enumerate(self.has_key) if not k]

    def join(self, i: int, output: Any) -> Any:
        """Element ``i``'s output, paired with its key if it came with one."""
        return (self.keys[i], output) if self.has_key is not None and self.has_key[i] \
            else output

    def join_all(self, outputs: Sequence[Any]) -> list[Any] | None:
        """Every element's output in one pass, when all or none came as pairs; else None."""
        if self.has_key is None or not any(self.has_key):
            return list(outputs)
        if all(self.has_key):
            return list(zip(self.keys, outputs, strict=True))
        return None
