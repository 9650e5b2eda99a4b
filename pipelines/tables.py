"""Reading tables of features (CSV, JSON lines, Parquet, TFRecord) and making Examples.

Shared by the jobs: a row is a ``dict`` of column name to value, and ``row_to_example``
turns it into the ``tf.train.Example`` a model's parsing signature reads, feature by
column name (``example_to_row`` goes the other way). ``match_files`` and
``parquet_footers`` look at the input while the pipeline is built: which files there are,
and for Parquet the columns and row count from the files' footers.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import tensorflow as tf
from apache_beam.io.filesystems import FileSystems

FORMATS = ("csv", "jsonl", "parquet", "tfrecord")
FEATURE_TYPES = ("float", "int", "bytes")
_EXTENSIONS = {
    ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet", ".tfrecord": "tfrecord", ".tfrecords": "tfrecord",
}
_INT = re.compile(r"^[+-]?\d+$")


def detect_format(path: str, given: str | None = None) -> str:
    """The table format: ``given`` if set, else from the file extension.

    Raises:
        ValueError: the format is unknown or cannot be told from the extension.
    """
    if given:
        if given not in FORMATS:
            raise ValueError(f"unknown format {given!r}; use one of {', '.join(FORMATS)}.")
        return given
    name = path.lower().removesuffix(".gz")
    for extension, fmt in _EXTENSIONS.items():
        if name.endswith(extension) or name.endswith(extension + "*"):
            return fmt
    raise ValueError(
        f"cannot tell the format of {path!r} from its extension; name the file "
        f"{', '.join(_EXTENSIONS)} or pass the format ({', '.join(FORMATS)}) explicitly."
    )


def parse_feature_types(text: str | None) -> dict[str, str]:
    """``"x:float,id:int"`` → ``{"x": "float", "id": "int"}``.

    Raises:
        ValueError: an entry is not ``column:type`` with a known type.
    """
    types: dict[str, str] = {}
    for entry in filter(None, (e.strip() for e in (text or "").split(","))):
        column, _, kind = entry.partition(":")
        if not column or kind not in FEATURE_TYPES:
            raise ValueError(
                f"feature type {entry!r} is not column:type with type one of "
                f"{', '.join(FEATURE_TYPES)}; e.g. --feature_types=x:float,id:int."
            )
        types[column] = kind
    return types


def match_files(pattern: str) -> list[str]:
    """The paths matching ``pattern`` on any Beam filesystem, sorted; [] for none."""
    try:
        result = FileSystems.match([pattern])[0]
    except Exception:  # noqa: BLE001 - Beam raises when nothing matches on some filesystems
        return []
    return sorted(m.path for m in result.metadata_list)


def parquet_footers(paths: Sequence[str], *, max_files: int = 1000
                    ) -> tuple[list[str], int | None]:
    """The first file's column names and the row count of all ``paths`` (None if more than
    ``max_files``: reading every footer would take too long), from the footers only."""
    import pyarrow.parquet as pq

    columns: list[str] = []
    rows = 0
    for index, path in enumerate(paths[:max_files]):
        with FileSystems.open(path) as f:
            parquet = pq.ParquetFile(f)
            if index == 0:
                columns = list(parquet.schema_arrow.names)
            rows += parquet.metadata.num_rows
    return columns, rows if len(paths) <= max_files else None


def csv_header(pattern: str) -> list[str]:
    """The column names on the first line of the first file matching ``pattern``."""
    matches = match_files(pattern)
    if not matches:
        raise ValueError(f"no file matches {pattern!r}; check the input path.")
    first = matches[0]
    with FileSystems.open(first) as f:
        line = f.readline().decode("utf-8").strip()
    header = next(csv.reader([line]), [])
    if not header:
        raise ValueError(f"{first!r} has no header line; CSV input needs column names first.")
    return header


def parse_csv_line(line: str, header: Sequence[str], typed: bool = True) -> dict[str, Any]:
    """One CSV line as a row; with ``typed`` numbers become int or float and empty cells
    None, else every cell stays text (for readers that know each column's type)."""
    cells = next(csv.reader(io.StringIO(line)), [])
    if len(cells) != len(header):
        raise ValueError(
            f"CSV line has {len(cells)} cells but the header has {len(header)} columns "
            f"({', '.join(header)}): {line!r}"
        )
    convert = _cell if typed else str
    return {name: convert(cell) for name, cell in zip(header, cells, strict=True)}


def _cell(text: str) -> Any:
    if text == "":
        return None
    if _INT.match(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


class ReadRows(beam.PTransform):
    """Reads a CSV, JSON lines or Parquet file pattern as ``dict`` rows.

    Args:
        pattern: A file pattern on any Beam filesystem.
        fmt: ``"csv"``, ``"jsonl"`` or ``"parquet"``.
        typed: CSV only: numbers become int or float (else every cell stays text).

    Example:
        >>> rows = p | ReadRows("gs://bucket/in/*.csv", fmt="csv")
    """

    def __init__(self, pattern: str, *, fmt: str, typed: bool = True):
        super().__init__()
        if fmt not in ("csv", "jsonl", "parquet"):
            raise ValueError(f"ReadRows reads csv, jsonl or parquet; got {fmt!r}.")
        self._pattern = pattern
        self._fmt = fmt
        self._typed = typed
        # Read while the pipeline is built: a missing file or header fails here.
        self._header = csv_header(pattern) if fmt == "csv" else None

    def expand(self, pcoll: beam.pvalue.PBegin) -> beam.PCollection:
        if self._fmt == "parquet":
            return pcoll | "ReadParquet" >> beam.io.ReadFromParquet(self._pattern)
        if self._fmt == "jsonl":
            return (pcoll
                    | "ReadLines" >> beam.io.ReadFromText(self._pattern)
                    | "ParseJson" >> beam.Map(json.loads))
        return (pcoll
                | "ReadLines" >> beam.io.ReadFromText(self._pattern, skip_header_lines=1)
                | "ParseCsv" >> beam.Map(parse_csv_line, self._header, self._typed))


def example_to_row(serialized: bytes) -> dict[str, list[Any]]:
    """A serialized ``tf.train.Example`` as a row: each feature's value list by name.

    Raises:
        ValueError: the bytes are not a ``tf.train.Example``.

    Example:
        >>> example_to_row(row_to_example({"x": 1.5}).SerializeToString())
        {'x': [1.5]}
    """
    try:
        example = tf.train.Example.FromString(serialized)
    except Exception as e:  # protobuf's DecodeError differs between its implementations
        raise ValueError(
            f"a record of {len(serialized)} bytes is not a serialized tf.train.Example "
            f"({type(e).__name__}); the TFRecord input must hold tf.train.Examples.") from e
    row: dict[str, list[Any]] = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        row[name] = list(getattr(feature, kind).value) if kind else []
    return row


def row_to_example(row: Mapping[str, Any], *, exclude: Iterable[str] = (),
                   feature_types: Mapping[str, str] | None = None) -> tf.train.Example:
    """A ``tf.train.Example`` with one feature per column of ``row``.

    Types follow the values (numbers → ``float_list``, bools → ``int64_list``,
    str/bytes → ``bytes_list``; lists by their items) unless ``feature_types`` names
    the column's type (``"int"`` for int64 features such as ids). None values are left
    out, as a missing feature.

    Args:
        row: Column name → value.
        exclude: Columns that are not features (e.g. the key).
        feature_types: ``{column: "float" | "int" | "bytes"}`` overrides.

    Raises:
        ValueError: a value cannot be stored as the feature type.

    Example:
        >>> row_to_example({"x": 105.0}).features.feature["x"].float_list.value
        [105.0]
    """
    skip = set(exclude)
    types = feature_types or {}
    features = {}
    for name, value in row.items():
        if name in skip or value is None:
            continue
        values = list(value) if isinstance(value, list | tuple) else [value]
        try:
            features[name] = _feature(values, types.get(name))
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"column {name!r} holds {value!r}, which cannot be a "
                f"{types.get(name) or 'tf.train.Example'} feature: {e}. Fix the data or "
                "set the column's type with feature_types (--feature_types=name:float)."
            ) from e
    return tf.train.Example(features=tf.train.Features(feature=features))


def _feature(values: list[Any], kind: str | None) -> tf.train.Feature:
    if kind is None:
        kind = _kind_of(values)
    if kind == "float":
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
    if kind == "int":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
    return tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values]))


def _kind_of(values: list[Any]) -> str:
    # Numbers default to float: a CSV "2" or a JSON 2 is usually a float feature, and a
    # model that parses int64 says so through feature_types.
    if values and all(isinstance(v, bool) for v in values):
        return "int"
    if values and all(isinstance(v, int | float) for v in values):
        return "float"
    return "bytes"
