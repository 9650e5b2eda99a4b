"""Turning elements into the named tensors a tensor-input signature is fed.

An element is a ``dict`` keyed by input alias, or, for a one-input signature, the value
itself (``np.ndarray``, scalar, list, ``str``/``bytes`` or ``tf.Tensor``). A batch is the
elements stacked along a new first axis, one numpy array per alias.

Dtypes, as Keras ``predict`` and TF Serving's REST API take them: a value is cast to the
signature's dtype when nothing is lost (a safe numpy cast, or a cast whose result equals
the value), and also within a kind when every value fits: float64 to float32 while finite
values stay finite (numpy's default float64 rows feed float32 models), int64 to int32
while every value is in range. Python floats (values without a numpy dtype) go to any
float dtype the way ``tf.constant(value, dtype)`` takes them. With
``ModelSpec(strict_input_casts=True)`` only lossless casts are made. Every refusal names
the value that does not fit and the option. Strings become bytes (``str`` is UTF-8
encoded); strings and numbers are never converted into each other.

Shapes: each element must have the signature's shape without its batch dimension.
Dimensions the signature leaves variable (``?``) must agree within a batch, or are padded
to the batch's largest with ``ModelSpec(pad_variable_length_inputs=True)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from beam_infer._errors import InputError
from beam_infer._messages import type_name
from beam_infer._signatures import Signature, TensorInfo

_PAD_HINT = ("Set ModelSpec(pad_variable_length_inputs=True) to pad each batch to its "
             "largest element (zeros, empty strings), as TF Serving's "
             "pad_variable_length_inputs does.")


@dataclasses.dataclass(frozen=True)
class TensorBatch:
    """A batch ready for the signature, and the elements' own rows for the request log.

    Attributes:
        feeds: One array per input alias, the batch along the first axis.
        rows: Per alias, each element's array before padding; the same rows as ``feeds``
            when nothing was padded.
    """

    feeds: dict[str, np.ndarray | tf.Tensor]
    rows: dict[str, Sequence[np.ndarray]]

    def __len__(self) -> int:
        """The batch's element count (retry and timeout messages name it)."""
        return len(next(iter(self.rows.values())))


def is_tensor_element(element: object) -> bool:
    """True for the element kinds a one-string-input predict signature takes as raw strings."""
    return isinstance(element, str | np.ndarray | np.generic | Mapping | tf.Tensor | list)


def batch_tensors(batch: Sequence[Any], signature: Signature, *, pad: bool,
                  strict: bool = False) -> TensorBatch:
    """Stacks ``batch`` into one array per input of ``signature``.

    Args:
        batch: The elements (see the module docstring).
        signature: The signature fed; its inputs give aliases, dtypes and shapes.
        pad: Pad variable-length dimensions to the batch's largest element.
        strict: Cast only losslessly (``ModelSpec.strict_input_casts``).

    Raises:
        InputError: a key is missing or unknown, a dtype cannot be cast losslessly, or a
            shape does not fit; the message names the input and what to change.
    """
    inputs = signature.inputs
    if len(inputs) == 1:
        alias = inputs[0].alias
        columns = {alias: [_single(e, alias, signature) for e in batch]}
    else:
        columns = {info.alias: [] for info in inputs}
        for element in batch:
            check_keys(element, signature)
            for alias, column in columns.items():
                column.append(element[alias])
    feeds, rows = {}, {}
    for info in inputs:
        feeds[info.alias], rows[info.alias] = _stack(columns[info.alias], info, signature,
                                                     pad, strict)
    return TensorBatch(feeds=feeds, rows=rows)


def stacked_tensors(batch: Mapping[str, Any], signature: Signature, *,
                    strict: bool = False) -> TensorBatch:
    """A batch given already stacked: one array (or ``tf.Tensor``) per alias, axis 0 the batch.

    Casts as ``batch_tensors`` does; nothing is padded (a stacked array is rectangular).
    A ``tf.Tensor`` of the input's dtype is fed as it is; ``rows`` hold numpy arrays.

    Raises:
        InputError: a key is missing or unknown, a dtype cannot be cast losslessly, or an
            array's shape is not the signature's.
    """
    check_keys(batch, signature)
    feeds, rows = {}, {}
    for info in signature.inputs:
        value = batch[info.alias]
        array = as_array(value, info, signature, strict=strict)
        expected = info.shape
        if expected is not None and (array.ndim != len(expected)
                                     or not _fits(expected[1:], array.shape[1:])):
            raise InputError(
                f"input {info.alias!r} of signature {signature.name!r} takes batches of "
                f"shape {_shape_text(expected)} ({info.describe()}); got a stacked batch of shape "
                f"{list(array.shape)}. Stack elements of one example's shape along a new "
                "first axis (np.stack), or pass a list of elements."
            )
        rows[info.alias] = array
        # A tensor of the input's own dtype (a tf.data batch) is fed as it is: turning
        # the numpy copy back into a tensor would copy the batch once more.
        exact = isinstance(value, tf.Tensor) and value.dtype == info.dtype != tf.string
        feeds[info.alias] = value if exact else array
    return TensorBatch(feeds=feeds, rows=rows)


def _single(element: Any, alias: str, signature: Signature) -> Any:
    if isinstance(element, Mapping):
        check_keys(element, signature)
        return element[alias]
    return element


def check_keys(element: Any, signature: Signature) -> None:
    expected = [info.alias for info in signature.inputs]
    if not isinstance(element, Mapping):
        raise InputError(
            f"signature {signature.name!r} takes {len(expected)} inputs "
            f"({', '.join(expected)}), so each element must be a dict keyed by those "
            f"aliases; got {type_name(element)}."
        )
    if element.keys() != set(expected):
        missing = sorted(set(expected) - element.keys())
        extra = sorted(map(str, element.keys() - set(expected)))
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + \
                   ([f"unknown {', '.join(extra)}"] if extra else [])
        raise InputError(
            f"signature {signature.name!r} takes inputs {', '.join(expected)}; an element "
            f"has keys {', '.join(sorted(map(str, element.keys()))) or 'none'} "
            f"({'; '.join(problems)}). Key each element by the signature's input aliases."
        )


def _stack(values: list[Any], info: TensorInfo, signature: Signature, pad: bool,
           strict: bool = False) -> tuple[np.ndarray, Sequence[np.ndarray]]:
    first = values[0]
    if (isinstance(first, np.ndarray) and first.dtype != object
            and all(type(v) is np.ndarray and v.shape == first.shape for v in values)):
        stacked = np.stack(values)  # the common case: same-shape arrays, one copy
        stacked = _cast(stacked, info, signature, literal=False, strict=strict)
        check_row_shape(stacked.shape[1:], info, signature, 0)
        return stacked, stacked
    arrays = [as_array(v, info, signature, strict=strict) for v in values]
    shapes = {a.shape for a in arrays}
    for index, array in enumerate(arrays):
        check_row_shape(array.shape, info, signature, index)
    if len(shapes) > 1:
        target = tuple(max(s) for s in zip(*shapes, strict=True))
        if not pad:
            a, b = sorted(shapes)[:2]
            raise InputError(
                f"input {info.alias!r} of signature {signature.name!r} got elements of shapes "
                f"{list(a)} and {list(b)} in one batch; the signature takes "
                f"{info.describe()}, whose variable dimensions must agree within a batch. "
                f"{_PAD_HINT}"
            )
        fill = b"" if info.dtype == tf.string else 0
        padded = np.full((len(arrays), *target), fill, dtype=arrays[0].dtype)
        for i, array in enumerate(arrays):
            padded[(i, *(slice(0, d) for d in array.shape))] = array
        return padded, arrays
    stacked = np.stack(arrays)
    return stacked, stacked


def as_array(value: Any, info: TensorInfo, signature: Signature, *, strict: bool = False
              ) -> np.ndarray:
    if isinstance(value, tf.Tensor):
        value = value.numpy()
    literal = not isinstance(value, np.ndarray | np.generic)
    array = np.asarray(value)
    return _cast(array, info, signature, literal=literal, strict=strict)


def _cast(array: np.ndarray, info: TensorInfo, signature: Signature, *, literal: bool,
          strict: bool = False) -> np.ndarray:
    if info.dtype == tf.string:
        return _as_bytes(array, info, signature)
    expected = np.dtype(info.dtype.as_numpy_dtype)
    if array.dtype == expected:
        return array
    if array.dtype.kind in "OSU":
        raise InputError(
            f"input {info.alias!r} of signature {signature.name!r} takes "
            f"{info.dtype.name}, but got {array.dtype.name} values; strings and objects are "
            f"not converted to numbers. Parse them into {info.dtype.name} values first."
        )
    if np.can_cast(array.dtype, expected, casting="safe") or (
            literal and array.dtype.kind == "f" and expected.kind == "f"):
        return array.astype(expected)
    with np.errstate(all="ignore"):
        cast = array.astype(expected)
        back = cast.astype(array.dtype)
    if np.array_equal(back, array, equal_nan=array.dtype.kind in "fc"):
        return cast
    if not strict:
        why = _within_kind_misfit(array, cast, expected)
        if why is None:
            return cast
        raise InputError(_dtype_message(info, signature, array.dtype, why))
    bad = array.ravel()[np.flatnonzero(back.ravel() != array.ravel())]
    example = bad[0].item() if bad.size else array.ravel()[0].item()
    raise InputError(_dtype_message(
        info, signature, array.dtype,
        f"{expected.name} cannot hold {example!r} exactly; ModelSpec(strict_input_casts=True) "
        "makes only lossless casts (the default, False, also casts within a kind when every "
        "value fits)"))


def _within_kind_misfit(array: np.ndarray, cast: np.ndarray, expected: np.dtype) -> str | None:
    """None when the cast stays within a kind and every value fits, else why not.

    Floats to a narrower float fit while finite values stay finite (the rounding is what
    Keras ``predict`` and TF Serving's REST API do); integers fit while every value is
    in the target's range; integers and booleans fit a float while they stay finite.
    Casts across kinds (a float to an integer, a number to bool) are made only when no
    value changes, which was checked before.
    """
    source = array.dtype
    policy = ("casts within a kind are made only when every value fits "
              "(ModelSpec(strict_input_casts=False), the default)")
    if array.size == 0:
        return None
    if source.kind == "f" and expected.kind == "f":
        overflow = np.isfinite(array) & ~np.isfinite(cast)
        if overflow.any():
            value = array[overflow].ravel()[0].item()
            return f"{value!r} is outside {expected.name}'s range; {policy}"
        return None
    if source.kind in "iu" and expected.kind in "iu":
        limits = np.iinfo(expected)
        low, high = array.min(), array.max()
        if low < limits.min or high > limits.max:
            value = (low if low < limits.min else high).item()
            return (f"{value!r} is outside {expected.name}'s range [{limits.min}, "
                    f"{limits.max}]; {policy}")
        return None
    if source.kind in "iub" and expected.kind == "f":
        if np.isfinite(cast).all():
            return None
        return f"a value is outside {expected.name}'s range; {policy}"
    bad = array.ravel()[np.flatnonzero(cast.astype(source).ravel() != array.ravel())]
    example = bad[0].item() if bad.size else array.ravel()[0].item()
    return (f"{expected.name} cannot hold {example!r} exactly; a cast across kinds "
            f"({source.name} to {expected.name}) is made only when no value changes")


def _dtype_message(info: TensorInfo, signature: Signature, received: np.dtype,
                   why: str) -> str:
    expected = info.dtype.name
    return (
        f"input {info.alias!r} of signature {signature.name!r} takes {expected}, but got "
        f"{received.name} values and {why}. Pass {expected} values "
        f"(e.g. np.asarray(value, dtype=np.{expected})) if rounding is what you want."
    )


def _as_bytes(array: np.ndarray, info: TensorInfo, signature: Signature) -> np.ndarray:
    if array.dtype.kind == "U":
        return np.char.encode(array, "utf-8").astype(object)
    if array.dtype.kind == "S":
        return array.astype(object)
    if array.dtype == object:
        if all(isinstance(v, bytes) for v in array.flat):
            return array
        if all(isinstance(v, bytes | str) for v in array.flat):
            return np.array([v.encode() if isinstance(v, str) else v for v in array.flat],
                            dtype=object).reshape(array.shape)
    raise InputError(
        f"input {info.alias!r} of signature {signature.name!r} takes strings, but got "
        f"{array.dtype.name} values; only str and bytes go into a string input. Convert "
        "the values to text first (e.g. str(value))."
    )


def check_row_shape(shape: tuple[int, ...], info: TensorInfo, signature: Signature,
                    index: int | None) -> None:
    """Refuses an element whose shape does not fit the input's (its batch dim aside).

    ``index``: the element's place in its batch, named in the message; None for an
    element checked alone.
    """
    if info.shape is None:
        return
    expected = info.shape[1:]
    if len(shape) == len(expected) and _fits(expected, shape):
        return
    raise InputError(
        f"input {info.alias!r} of signature {signature.name!r} takes elements of shape "
        f"{_shape_text(expected)} (the signature's {info.describe()} without its batch dimension); "
        f"{'the element' if index is None else f'element {index} of the batch'} has shape "
        f"{list(shape)}. Give each element the "
        "shape of one example, without a batch dimension."
    )


def _fits(expected: Sequence[int | None], shape: Sequence[int]) -> bool:
    """Same rank assumed: every known dimension of ``expected`` matches ``shape``'s."""
    return all(e is None or e == d for e, d in zip(expected, shape, strict=True))


def _shape_text(shape: Sequence[int | None]) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def num_bytes(batch: Sequence[Any]) -> int:
    """The bytes of a batch's tensor values, without converting anything."""
    return sum(value_bytes(v) for e in batch
               for v in (e.values() if isinstance(e, Mapping) else (e,)))


def value_bytes(value: Any) -> int:
    """The bytes of one array, tensor or string value, without copying it."""
    if isinstance(value, np.ndarray | np.generic):
        return int(value.nbytes)
    if isinstance(value, bytes | str):
        return len(value)
    if isinstance(value, tf.Tensor) and value.dtype == tf.string:
        # The lengths only (4 bytes a string), summed by numpy: one eager op, not two
        # (tf.reduce_sum took 3x as long for 1024 strings, most of it op dispatch).
        return int(tf.strings.length(value).numpy().sum(dtype=np.int64))
    if isinstance(value, tf.Tensor):
        return int(value.shape.num_elements() or 0) * value.dtype.size
    return int(np.asarray(value).nbytes)
