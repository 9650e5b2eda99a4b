"""Turning PredictionLogs into plain rows: ``{key, input, output, model_version}``.

A PredictionLog is the exact TF Serving record; most sinks (JSON lines, CSV, BigQuery,
Parquet) and most people want a flat row instead. ``prediction_log_to_row`` is the plain
function (testable without a pipeline); ``PredictionLogToRows`` is the composable step.

Row layout, the same for every API the log was written with:

* ``key``: the element's key as text (``bytes`` decoded as UTF-8), or None if unkeyed.
* ``input``: the Example's features, ``{feature: [values]}``; bytes values are decoded as
  UTF-8 text (base64 with a ``b64:`` prefix when they are not text). A predict input that
  is not a ``tf.train.Example`` is given as ``{alias: text}`` instead.
* ``output``: predict: ``{alias: value}`` with each output's batch row as (nested) lists;
  classify: ``{"classes": [...], "scores": [...]}``; regress: ``{"outputs": [value]}``;
  multi-inference: ``{signature_name: <classify or regress dict>}``.
* ``model_version``: the log's ``model_spec.version`` when set, else the version given
  to the transform, else None.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

import apache_beam as beam
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from beam_infer._errors import InputError
from beam_infer._messages import type_name

PredictionLog = prediction_log_pb2.PredictionLog
Row = dict[str, Any]
ROW_FIELDS = ("key", "input", "output", "model_version")


def prediction_log_to_row(log: PredictionLog, *, key: Any = None,
                          model_version: str | None = None) -> Row:
    """One plain row for one PredictionLog.

    Args:
        log: A ``tensorflow.serving.PredictionLog`` (predict, classify, regress or
            multi-inference).
        key: The element's key, if it had one; bytes are decoded as UTF-8.
        model_version: Used when the log itself names no version.

    Returns:
        ``{"key", "input", "output", "model_version"}`` as the module docstring says.

    Raises:
        InputError: ``log`` is not a PredictionLog, or holds no inference.

    Example:
        >>> prediction_log_to_row(log, key=b"first_question")["output"]
        {'output_0': [525.0]}
    """
    if not isinstance(log, PredictionLog):
        raise InputError(
            f"PredictionLogToRows takes PredictionLog or (key, PredictionLog) elements; got "
            f"{type_name(log)}. Apply it right after "
            "beam_infer.RunInference."
        )
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        request, response = log.predict_log.request, log.predict_log.response
        inputs = _predict_inputs(request.inputs)
        outputs = {alias: _tensor_row(tensor) for alias, tensor in sorted(response.outputs.items())}
    elif kind == "classify_log":
        request, response = log.classify_log.request, log.classify_log.response
        inputs = _first_example(request.input)
        outputs = _classification(response.result)
    elif kind == "regress_log":
        request, response = log.regress_log.request, log.regress_log.response
        inputs = _first_example(request.input)
        outputs = _regression(response.result)
    elif kind == "multi_inference_log":
        request, response = log.multi_inference_log.request, log.multi_inference_log.response
        inputs = _first_example(request.input)
        outputs = {
            result.model_spec.signature_name: (
                _classification(result.classification_result)
                if result.HasField("classification_result")
                else _regression(result.regression_result))
            for result in response.results
        }
    else:
        raise InputError(
            f"the PredictionLog holds {kind or 'no inference'}; PredictionLogToRows reads "
            "predict, classify, regress and multi-inference logs."
        )
    version = _version(request) or (None if model_version is None else str(model_version))
    return {"key": _key_text(key), "input": inputs, "output": outputs,
            "model_version": version}


@beam.typehints.with_output_types(Row)
class PredictionLogToRows(beam.PTransform):
    """``PredictionLog`` or ``(key, PredictionLog)`` → a plain ``dict`` row.

    ==================================  ==========================================
    input element                       output element
    ==================================  ==========================================
    ``PredictionLog``                   ``{"key": None, "input", "output", ...}``
    ``(key, PredictionLog)``            ``{"key": "<key as text>", ...}``
    ==================================  ==========================================

    Args:
        model_version: Written to rows whose log names no version (beam_infer and
            tfx-bsl logs carry none), e.g. the version directory that was served.

    Example:
        >>> rows = (keyed_examples
        ...         | bi.RunInference(spec)
        ...         | bi.PredictionLogToRows(model_version="1"))
        >>> rows | beam.Map(json.dumps) | beam.io.WriteToText("gs://bucket/rows")
    """

    def __init__(self, *, model_version: str | None = None):
        super().__init__()
        self._model_version = model_version

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | "ToRows" >> beam.Map(_element_to_row, self._model_version)


def _element_to_row(element: PredictionLog | tuple[Any, PredictionLog],
                    model_version: str | None) -> Row:
    if isinstance(element, tuple) and len(element) == 2:
        return prediction_log_to_row(element[1], key=element[0], model_version=model_version)
    return prediction_log_to_row(element, model_version=model_version)


def _version(request: Any) -> str | None:
    if "model_spec" in request.DESCRIPTOR.fields_by_name:
        specs = [request.model_spec]
    else:  # a MultiInferenceRequest names the model once per task
        specs = [task.model_spec for task in request.tasks]
    versions = [str(s.version.value) for s in specs if s.HasField("version")]
    return versions[0] if versions else None


def _key_text(key: Any) -> Any:
    if isinstance(key, bytes):
        return key.decode("utf-8", errors="backslashreplace")
    return key


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "b64:" + base64.b64encode(value).decode("ascii")


def _features(example: tf.train.Example) -> dict[str, list[Any]]:
    row = {}
    for name, feature in sorted(example.features.feature.items()):
        kind = feature.WhichOneof("kind")
        if kind == "bytes_list":
            row[name] = [_text(v) for v in feature.bytes_list.value]
        elif kind == "float_list":
            row[name] = list(feature.float_list.value)
        elif kind == "int64_list":
            row[name] = list(feature.int64_list.value)
        else:
            row[name] = []
    return row


def _first_example(request_input: Any) -> dict[str, list[Any]]:
    examples = request_input.example_list.examples
    return _features(examples[0]) if examples else {}


def _predict_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for alias, tensor in sorted(inputs.items()):
        if len(tensor.string_val) == 1:
            serialized = tensor.string_val[0]
            example = _parse_example(serialized)
            if example is not None:
                row.update(_features(example))
                continue
            row[alias] = _text(serialized)
        else:
            row[alias] = _tensor_row(tensor)
    return row


def _parse_example(serialized: bytes) -> tf.train.Example | None:
    """The Example ``serialized`` holds, or None for other payloads.

    Protobuf parsing is lenient, so a SequenceExample or random bytes may parse as an
    Example; it only counts when it re-serializes to the same bytes and has features.
    """
    try:
        example = tf.train.Example.FromString(serialized)
    except Exception:  # noqa: BLE001 - any parse failure means "not an Example"
        return None
    if not example.features.feature or example.SerializeToString() != serialized:
        return None
    return example


def _tensor_row(tensor: Any) -> Any:
    array = tf.make_ndarray(tensor)
    value = array[0] if array.ndim and array.shape[0] == 1 else array
    return _plain(value.tolist() if hasattr(value, "tolist") else value)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return _text(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _classification(result: Any) -> dict[str, list[Any]]:
    classes = result.classifications[0].classes if result.classifications else []
    return {"classes": [c.label for c in classes], "scores": [c.score for c in classes]}


def _regression(result: Any) -> dict[str, list[float]]:
    return {"outputs": [r.value for r in _take_first(result.regressions)]}


def _take_first(items: Iterable[Any]) -> list[Any]:
    return list(items)[:1]
