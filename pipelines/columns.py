"""Mapping a table's columns onto a SavedModel signature's inputs, row by row.

``RowMapping.for_plan`` reads the plan of the signature a job calls
(``bi.SavedModelHandler(spec).plan``) and decides, when the pipeline is built, how a row
(``dict`` of column name to value) becomes what the model is fed:

* serialized-Example signatures (every classify/regress signature, and a predict signature
  whose only input is a string): the row's columns become the Example's features by name
  (``tables.row_to_example``); ``--input_map feature=column`` takes a feature from a
  column of another name.
* tensor signatures (any other predict signature: Keras 3 ``model.export()``, several
  inputs): each input alias reads the column named after it, or the column
  ``--input_map alias=column`` names. A value is a number, a string, or (nested) lists of
  them for inputs of higher rank, as JSON lines, Parquet list columns and BigQuery
  REPEATED columns hold them; a scalar also fills an input of shape ``[1]``. CSV cells are
  text, parsed as the input's dtype (a cell for an input of higher rank holds a JSON
  list, e.g. ``"[1.0, 2.0]"``). Rows read from a TFRecord of Examples give each feature
  as its value list, reshaped to the input's shape.
* a predict signature with one string input whose alias ``--input_map`` names is fed that
  column's raw text instead of serialized Examples.

Values are cast only when nothing is lost (``2`` feeds a float input, ``2.5`` does not feed
an int one). A row that does not fit raises ``RowError``, whose message names the column,
the type of the value it holds and what the signature expects, e.g.::

    column 'x' holds a str ('oops'); input 'x' of signature 'serving_default' expects a
    list of 2 float32 values (x: float32[?,2]). ...
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

import beam_infer as bi
from pipelines import tables

_PREVIEW_CHARS = 40
_TRUE = {"true", "1"}
_FALSE = {"false", "0"}


class RowError(ValueError):
    """A row cannot be fed to the signature; the message says which column and why."""


def parse_input_map(entries: Iterable[str]) -> dict[str, str]:
    """``["x=features", "count=n"]`` (or ``"x=features,count=n"`` items) → ``{alias: column}``.

    Raises:
        ValueError: an entry is not ``alias=column``, or names an alias twice.
    """
    mapping: dict[str, str] = {}
    for entry in (e.strip() for item in entries for e in item.split(",")):
        if not entry:
            continue
        alias, sep, column = (part.strip() for part in entry.partition("="))
        if not sep or not alias or not column:
            raise ValueError(
                f"--input_map entry {entry!r} is not alias=column; e.g. --input_map x=features "
                "feeds the column 'features' to the signature input 'x'.")
        if alias in mapping and mapping[alias] != column:
            raise ValueError(
                f"--input_map maps input {alias!r} twice ({mapping[alias]!r} and {column!r}); "
                "map each input once.")
        mapping[alias] = column
    return mapping


@dataclasses.dataclass(frozen=True)
class ColumnInput:
    """One signature input and the column that feeds it.

    Attributes:
        shape: The shape of one row's value (the signature's without its batch
            dimension); None for an input of unknown rank.
    """

    alias: str
    column: str
    dtype: tf.dtypes.DType
    shape: tuple[int | None, ...] | None
    signature: str
    described: str  # the signature's view, e.g. "x: float32[?,2]"

    def expects(self) -> str:
        """What one row's value must be, e.g. ``a list of 2 float32 values``."""
        kind = self.dtype.name
        if self.shape is None:
            return f"{kind} values of any shape"
        if not self.shape:
            return f"one {kind} value"
        if len(self.shape) == 1:
            count = "" if self.shape[0] is None else f"{self.shape[0]} "
            return f"a list of {count}{kind} values"
        return f"{kind} values of shape {_shape_text(self.shape)} as nested lists"


@dataclasses.dataclass(frozen=True)
class RowMapping:
    """How rows become model inputs for one signature plan; see the module docstring.

    Build it with ``RowMapping.for_plan``; ``to_model_input`` converts one row.
    """

    feed: str  # "examples", "tensors" or "text"
    signature: str
    inputs: tuple[ColumnInput, ...] = ()
    features: Mapping[str, str] = dataclasses.field(default_factory=dict)  # feature → column
    key_column: str | None = None
    feature_types: Mapping[str, str] = dataclasses.field(default_factory=dict)
    text_cells: bool = False  # CSV: every cell is text, parsed as the input's dtype

    @classmethod
    def for_plan(cls, plan: Any, *, input_map: Mapping[str, str], key_column: str | None,
                 feature_types: Mapping[str, str], text_cells: bool,
                 model_path: str) -> RowMapping:
        """The mapping for ``plan`` (a ``SavedModelHandler.plan``).

        Raises:
            ValueError: ``input_map`` names an input the signature lacks, or
                ``feature_types`` is given for a signature that takes tensors.
        """
        signature = plan.signatures[0]
        aliases = [t.alias for t in signature.inputs]
        raw_text = (plan.feed is bi.Feed.EXAMPLES and plan.operation is bi.Operation.PREDICT
                    and len(signature.inputs) == 1 and aliases[0] in input_map)
        if plan.feed is bi.Feed.EXAMPLES and not raw_text:
            return cls(feed="examples", signature=signature.name,
                       features={feature: column for feature, column in input_map.items()},
                       key_column=key_column, feature_types=dict(feature_types))
        unknown = sorted(set(input_map) - set(aliases))
        if unknown:
            raise ValueError(
                f"--input_map names input {', '.join(repr(a) for a in unknown)}, which "
                f"signature {signature.name!r} of {model_path} does not have; its inputs: "
                f"{', '.join(t.describe() for t in signature.inputs)}. Map those aliases "
                "(--input_map ALIAS=COLUMN).")
        if feature_types:
            raise ValueError(
                f"--feature_types applies to signatures that parse tf.train.Examples; "
                f"signature {signature.name!r} of {model_path} takes tensors "
                f"({', '.join(t.describe() for t in signature.inputs)}), whose dtypes the "
                "signature sets. Drop --feature_types.")
        inputs = tuple(
            ColumnInput(alias=t.alias, column=input_map.get(t.alias, t.alias), dtype=t.dtype,
                        shape=None if t.shape is None else tuple(t.shape[1:]),
                        signature=signature.name, described=t.describe())
            for t in signature.inputs)
        return cls(feed="text" if raw_text else "tensors", signature=signature.name,
                   inputs=inputs, key_column=key_column, text_cells=text_cells)

    @property
    def columns(self) -> list[str]:
        """The columns a tensor signature reads (none are required for Examples)."""
        return [i.column for i in self.inputs]

    def check_columns(self, available: Sequence[str], source: str) -> None:
        """Fails the build when a column the signature needs is not among ``available``.

        Raises:
            ValueError: names the missing columns, the columns found and ``--input_map``.
        """
        wanted = [c for c in ([self.key_column] if self.key_column else []) + self.columns]
        missing = [c for c in dict.fromkeys(wanted) if c not in available]
        if not missing:
            return
        readers = {i.column: i for i in self.inputs}
        reasons = [f"{c!r} (the key column)" if c == self.key_column and c not in readers
                   else f"{c!r} (for input {readers[c].described})" for c in missing]
        raise ValueError(
            f"{source} has no column {', '.join(reasons)}; its columns: "
            f"{', '.join(available) or 'none'}. Name columns after the signature's input "
            "aliases, or map them with --input_map ALIAS=COLUMN (and --key_column=COLUMN).")

    def describe(self) -> dict[str, Any]:
        """The mapping as plain data, for the run's manifest."""
        if self.feed == "examples":
            return {"feed": "examples", "features": dict(self.features) or "by column name"}
        return {"feed": self.feed,
                "inputs": [{"alias": i.alias, "column": i.column, "expects": i.described}
                           for i in self.inputs]}

    def key_of(self, row: Mapping[str, Any]) -> Any:
        """The row's key; raises ``RowError`` when the key column is missing or empty."""
        key = row.get(self.key_column)
        if key is None or key == "":
            raise RowError(
                f"key column {self.key_column!r} is missing or empty in this row; every row "
                "needs a key. Fill the column, or pass another with --key_column=COLUMN.")
        return key

    def to_model_input(self, row: Mapping[str, Any], *, from_example: bool = False) -> Any:
        """One row as the model is fed it: a ``tf.train.Example`` or ``{alias: ndarray}``.

        Args:
            row: Column name → value.
            from_example: The row holds a parsed Example's features (value lists).

        Raises:
            RowError: see the module docstring.
        """
        if self.feed == "examples":
            exclude = [self.key_column] if self.key_column else []
            renamed = dict(row)
            for feature, column in self.features.items():
                if column in renamed:
                    renamed[feature] = renamed.pop(column)
            try:
                return tables.row_to_example(renamed, exclude=exclude,
                                             feature_types=self.feature_types)
            except ValueError as e:
                raise RowError(str(e)) from e
        return {i.alias: to_array(row.get(i.column), i, text_cell=self.text_cells,
                                  from_example=from_example, present=i.column in row)
                for i in self.inputs}


def to_array(value: Any, info: ColumnInput, *, text_cell: bool = False,
             from_example: bool = False, present: bool = True) -> np.ndarray:
    """One column value as the array ``info`` takes, cast without loss.

    Raises:
        RowError: the value is missing, of the wrong kind or shape, or does not fit the
            dtype exactly.
    """
    original = value
    if value is None or (text_cell and value == "" and info.dtype != tf.string):
        why = "is empty" if present else "is missing"
        raise RowError(
            f"column {info.column!r} {why} in this row; input {info.alias!r} of signature "
            f"{info.signature!r} expects {info.expects()} ({info.described}). Fill the "
            f"column, or map another with --input_map {info.alias}=COLUMN.")
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if text_cell and isinstance(value, str):
        value = _parse_text(value, info)
    shape, leaves = _structure(value, info, original)
    if from_example and isinstance(value, list) and info.shape is not None:
        value, shape = _reshape_feature(value, shape, info, original)
    elif not shape and info.shape and all(d in (1, None) for d in info.shape):
        value = np.reshape(np.asarray(value, dtype=object), [1] * len(info.shape)).tolist()
        shape = (1,) * len(info.shape)
    _check_shape(shape, info, original)
    return _cast(value, leaves, info, original)


def _parse_text(text: str, info: ColumnInput) -> Any:
    if info.shape:  # higher rank: the cell holds a JSON list
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise RowError(
                f"column {info.column!r} holds the text {_preview(text)}, which is not a JSON "
                f"list; input {info.alias!r} of signature {info.signature!r} expects "
                f"{info.expects()} ({info.described}), written in a CSV cell as JSON, e.g. "
                f"\"[1.0, 2.0]\".") from e
    if info.dtype == tf.string:
        return text
    try:
        if info.dtype.is_bool:
            lowered = text.strip().lower()
            if lowered in _TRUE | _FALSE:
                return lowered in _TRUE
            raise ValueError(text)
        return int(text) if info.dtype.is_integer else float(text)
    except ValueError as e:
        raise RowError(
            f"column {info.column!r} holds the text {_preview(text)}, which is not a "
            f"{info.dtype.name} number; input {info.alias!r} of signature {info.signature!r} "
            f"expects {info.expects()} ({info.described}). Fix the cell, or map another "
            f"column with --input_map {info.alias}=COLUMN.") from e


def _structure(value: Any, info: ColumnInput, original: Any) -> tuple[tuple[int, ...], set]:
    """The nested-list shape of ``value`` and the Python types of its leaves."""
    if not isinstance(value, list | tuple):
        return (), {type(value)}
    if not value:
        return (0,), set()
    shapes, leaves = set(), set()
    for item in value:
        shape, kinds = _structure(item, info, original)
        shapes.add(shape)
        leaves |= kinds
    if len(shapes) > 1:
        raise RowError(
            f"column {info.column!r} holds {_kind(original)} whose items differ in length "
            f"(a ragged list); input {info.alias!r} of signature {info.signature!r} expects "
            f"{info.expects()} ({info.described}). Give every inner list the same length.")
    return (len(value), *shapes.pop()), leaves


def _reshape_feature(value: list, shape: tuple[int, ...], info: ColumnInput, original: Any
                     ) -> tuple[Any, tuple[int, ...]]:
    # An Example feature is a flat value list; parse_example reshapes it the same way.
    assert info.shape is not None
    if not info.shape and shape == (1,):
        return value[0], ()
    if len(info.shape) > 1 and len(shape) == 1 and None not in info.shape \
            and shape[0] == math.prod(info.shape):
        return np.reshape(np.asarray(value, dtype=object), info.shape).tolist(), info.shape
    return value, shape


def _check_shape(shape: tuple[int, ...], info: ColumnInput, original: Any) -> None:
    expected = info.shape
    if expected is None:
        return
    if len(shape) == len(expected) and all(e is None or e == d
                                            for e, d in zip(expected, shape, strict=True)):
        return
    got = "one value" if not shape else f"shape {_shape_text(shape)}"
    raise RowError(
        f"column {info.column!r} holds {_kind(original)} ({got}); input {info.alias!r} of "
        f"signature {info.signature!r} expects {info.expects()} ({info.described}). "
        f"Write the column as {info.expects()}, or map another with "
        f"--input_map {info.alias}=COLUMN.")


def _cast(value: Any, leaves: set, info: ColumnInput, original: Any) -> np.ndarray:
    dtype = info.dtype
    if dtype == tf.string:
        if not leaves <= {str, bytes}:
            _wrong_kind(info, original, "text (str)")
        objects = np.asarray(value, dtype=object)
        encoded = np.empty(objects.shape, dtype=object)
        encoded.reshape(-1)[:] = [v.encode("utf-8") if isinstance(v, str) else v
                                  for v in objects.reshape(-1)]
        return encoded
    if dtype.is_bool:
        if not leaves <= {bool}:
            _wrong_kind(info, original, "true/false values")
        return np.asarray(value, dtype=np.bool_)
    if bool in leaves or not leaves <= {int, float}:
        _wrong_kind(info, original, "numbers")
    target = np.dtype(dtype.as_numpy_dtype)
    if float in leaves:
        source = np.asarray(value, dtype=np.float64)
        if target.kind == "f":
            return source.astype(target)  # Python floats go to float32 as tf.constant takes them
    else:
        try:
            source = np.asarray(value, dtype=np.int64)
        except OverflowError:
            flat = np.asarray(value, dtype=object).reshape(-1).tolist()
            _inexact(info, original, next(v for v in flat if abs(v) >= 2 ** 63))
    with np.errstate(all="ignore"):
        cast = source.astype(target)
        back = cast.astype(source.dtype)
    if not np.array_equal(back, source):
        pairs = zip(source.reshape(-1).tolist(), back.reshape(-1).tolist(), strict=True)
        _inexact(info, original, next(v for v, b in pairs if v != b))
    return cast


def _inexact(info: ColumnInput, original: Any, bad: Any) -> None:
    raise RowError(
        f"column {info.column!r} holds {_kind(original)}; input {info.alias!r} of signature "
        f"{info.signature!r} takes {info.dtype.name} ({info.described}), which cannot hold "
        f"{bad!r} exactly. Only lossless casts are made: write {info.dtype.name} values, or "
        "round them before scoring.")


def _wrong_kind(info: ColumnInput, original: Any, wanted: str) -> None:
    raise RowError(
        f"column {info.column!r} holds {_kind(original)}; input {info.alias!r} of signature "
        f"{info.signature!r} expects {info.expects()} ({info.described}), so the column must "
        f"hold {wanted}. Fix the data, or map another column with "
        f"--input_map {info.alias}=COLUMN.")


def _kind(value: Any) -> str:
    """``a str ('oops')``, ``a list of 2 float``, ``a list of lists``: what a column holds."""
    if isinstance(value, np.ndarray):
        return f"a numpy array of {value.dtype.name} {list(value.shape)}"
    if isinstance(value, list | tuple):
        if not value:
            return "an empty list"
        kinds = sorted({type(v).__name__ for v in value})
        inner = "lists" if kinds in (["list"], ["tuple"]) else " and ".join(kinds)
        return f"a list of {len(value)} {inner}"
    return f"a {type(value).__name__} ({_preview(value)})"


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _PREVIEW_CHARS else text[:_PREVIEW_CHARS - 3] + "..."


def _shape_text(shape: Sequence[int | None]) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"
