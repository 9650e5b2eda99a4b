"""The steps of ``pipelines.batch_scoring``: rows in, model inputs, counts, rows out.

Module-level DoFns and functions, so tests and notebooks import them:

* ``ToModelInputFn`` parses each input record (a JSON or CSV line, a Parquet or BigQuery
  row, a serialized Example) and turns it into what the signature is fed
  (``columns.RowMapping``); a record that does not fit goes to the ``failed`` output with
  stage ``convert``, so one bad line never stops the run.
* ``CountScored`` and ``CountDeadLetters`` count what ``RunInference`` scored and failed
  (Beam counters in namespace ``beam_infer``, failures also per stage).
* ``with_lineage`` / ``stamp_log`` put the model's version and fingerprint on every output
  row (PredictionLogs get ``log_metadata.model_spec``; they have no field for a
  fingerprint, which the run's manifest records).

Every input record ends in exactly one of the two counters ``SCORED`` and ``FAILED``;
``READ`` counts them on the way in.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from tensorflow_serving.apis import prediction_log_pb2

import beam_infer as bi
from pipelines import columns, formats, progress, tables

READ = "batch_scoring_read_elements"
SCORED = "batch_scoring_scored_elements"
FAILED = "batch_scoring_failed_elements"
WRITTEN = "batch_scoring_written_rows"  # + "_files" / "_table": rows handed to each sink
FAILED_TAG = "failed"
MAX_ELEMENT_CHARS = 1000
ROW_COLUMNS = (*formats.CSV_COLUMNS, "model_fingerprint")
PARQUET_SCHEMA = pa.schema([(name, pa.string()) for name in ROW_COLUMNS])
BIGQUERY_SCHEMA = formats.BIGQUERY_SCHEMA + ",model_fingerprint:STRING"


def failed_counter(stage: str) -> str:
    """The counter of failures at ``stage``, e.g. ``batch_scoring_failed_elements_convert``."""
    return f"{FAILED}_{stage}"


@dataclasses.dataclass(frozen=True)
class Lineage:
    """Which model scored the rows, as every output row records it."""

    name: str | None
    version: str | None
    fingerprint: str
    signature: str
    tags: tuple[str, ...]


def failure_record(element: Any, key: Any, stage: str, error: str) -> dict[str, Any]:
    """One ``--failed_output`` line: the element as text (cut to 1,000 characters), its
    key, the stage and the error."""
    if isinstance(element, bytes):
        text = "b64:" + base64.b64encode(element).decode("ascii")
    elif isinstance(element, str):
        text = element
    else:
        text = repr(element)
    return {"key": _text(key), "element": text[:MAX_ELEMENT_CHARS], "stage": stage,
            "error": error}


def _text(key: Any) -> Any:
    if isinstance(key, bytes):
        return key.decode("utf-8", errors="backslashreplace")
    return key if key is None or isinstance(key, int | float | str) else str(key)


class ToModelInputFn(beam.DoFn):
    """Input record → model input, or ``(key, model input)`` with a key column.

    Args:
        mapping: How rows become model inputs.
        parse: ``"json"`` or ``"csv"`` for text lines, None for rows and Example records.
        header: The CSV header (``parse="csv"``).
        typed_cells: CSV numbers become int/float (Example signatures) or stay text.
        run_id: The run, for in-process progress counts.

    Records that cannot be converted go to ``FAILED_TAG`` as a ``failure_record`` with
    stage ``convert``. Blank text lines are skipped and not counted.
    """

    def __init__(self, mapping: columns.RowMapping, *, parse: str | None,
                 header: Sequence[str] = (), typed_cells: bool = True, run_id: str = ""):
        self._mapping = mapping
        self._parse = parse
        self._header = list(header)
        self._typed = typed_cells
        self._run_id = run_id
        self._read = Metrics.counter(bi.METRICS_NAMESPACE, READ)
        self._failed = Metrics.counter(bi.METRICS_NAMESPACE, FAILED)
        self._convert = Metrics.counter(bi.METRICS_NAMESPACE, failed_counter("convert"))

    def process(self, element: Any) -> Iterator[Any]:
        if isinstance(element, str) and not element.strip():
            return
        self._read.inc()
        key = None
        try:
            if isinstance(element, bytes) and self._mapping.feed == "examples":
                yield element  # a serialized Example from a TFRecord: as it is
                return
            row, from_example = self._row(element)
            if self._mapping.key_column is not None:
                key = self._mapping.key_of(row)
            value = self._mapping.to_model_input(row, from_example=from_example)
        except ValueError as e:  # RowError, and lines that do not parse
            self._failed.inc()
            self._convert.inc()
            progress.count_done(self._run_id)
            yield beam.pvalue.TaggedOutput(FAILED_TAG,
                                           failure_record(element, key, "convert", str(e)))
            return
        yield value if self._mapping.key_column is None else (key, value)

    def _row(self, element: Any) -> tuple[Mapping[str, Any], bool]:
        if isinstance(element, bytes):
            return tables.example_to_row(element), True
        if self._parse == "csv":
            return tables.parse_csv_line(element, self._header, self._typed), False
        if self._parse == "json":
            try:
                row = json.loads(element)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"the line is not JSON ({e.msg} at character {e.pos}); JSON lines input "
                    "needs one JSON object per line.") from e
        else:
            row = element
        if not isinstance(row, Mapping):
            raise ValueError(
                f"the record is a {type(row).__name__}, not an object of columns; each line "
                "or row must map column names to values, e.g. {\"id\": \"a\", \"x\": [1.0]}.")
        return row, False


class CountScored(beam.DoFn):
    """Counts each scored element (``SCORED``) and passes it on."""

    def __init__(self, run_id: str = ""):
        self._run_id = run_id
        self._scored = Metrics.counter(bi.METRICS_NAMESPACE, SCORED)

    def process(self, element: Any) -> Iterator[Any]:
        self._scored.inc()
        progress.count_done(self._run_id)
        yield element


class CountDeadLetters(beam.DoFn):
    """Each ``bi.DeadLetter`` of the model step → a ``failure_record``, counted by stage."""

    def __init__(self, run_id: str = ""):
        self._run_id = run_id
        self._failed = Metrics.counter(bi.METRICS_NAMESPACE, FAILED)

    def process(self, letter: bi.DeadLetter) -> Iterator[dict[str, Any]]:
        self._failed.inc()
        Metrics.counter(bi.METRICS_NAMESPACE, failed_counter(letter.stage.value)).inc()
        progress.count_done(self._run_id)
        yield failure_record(letter.element, letter.key, letter.stage.value,
                             f"{letter.error_type}: {letter.message}")


class CountWritten(beam.DoFn):
    """Counts the rows handed to one sink (``WRITTEN_<sink>``) and passes them on."""

    def __init__(self, sink: str):
        self._written = Metrics.counter(bi.METRICS_NAMESPACE, f"{WRITTEN}_{sink}")

    def process(self, element: Any) -> Iterator[Any]:
        self._written.inc()
        yield element


def with_lineage(row: Mapping[str, Any], lineage: Lineage) -> dict[str, Any]:
    """A ``PredictionLogToRows`` row with ``model_fingerprint`` (and ``model_version``
    where the log names none)."""
    return {**row, "model_version": row.get("model_version") or lineage.version,
            "model_fingerprint": lineage.fingerprint}


def flat_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A lineage row for Parquet and BigQuery: input and output as JSON text."""
    return {**formats.to_flat_row(row), "model_fingerprint": row["model_fingerprint"]}


def stamp_log(element: Any, lineage: Lineage) -> prediction_log_pb2.PredictionLog:
    """The PredictionLog (keys dropped: the proto has no key field) with
    ``log_metadata.model_spec`` naming the model, version and signature."""
    log = element[1] if isinstance(element, tuple) else element
    stamped = prediction_log_pb2.PredictionLog()
    stamped.CopyFrom(log)
    spec = stamped.log_metadata.model_spec
    if lineage.name:
        spec.name = lineage.name
    if lineage.version is not None and lineage.version.isdigit():
        spec.version.value = int(lineage.version)
    spec.signature_name = lineage.signature
    stamped.log_metadata.saved_model_tags[:] = list(lineage.tags)
    return stamped


def failure_json(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, default=str)
