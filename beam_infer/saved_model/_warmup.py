"""Warm-up: replaying ``assets.extra/tf_serving_warmup_requests`` on every model load.

The file is TensorFlow Serving's: a TFRecord of serialized ``PredictionLog``s, at most
1000 records. Each record's request is fed to the signature it names (default
``serving_default``) before the model serves its first real batch, so the first batch
does not pay for graph tracing and lazy initialisation. Predict logs feed their
``request.inputs`` tensors; classify, regress and multi-inference logs feed their
Examples, serialized, to the signature's one string input. A record that fails fails the
load, as in TF Serving; the message names the record index and signature.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil
from tensorflow_serving.apis import prediction_log_pb2

from beam_infer._config import DEFAULT_SIGNATURE, DEFAULT_TAGS
from beam_infer._errors import ConfigurationError, InputError, ModelLoadError
from beam_infer._messages import first_line
from beam_infer._signatures import PREDICT, Signature
from beam_infer._tensors import batch_tensors
from beam_infer.saved_model._files import read_signatures

WARMUP_FILE = posixpath.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000

PredictionLog = prediction_log_pb2.PredictionLog


def read_warmup_records(local_model_dir: str) -> list[PredictionLog]:
    """The warm-up PredictionLogs of a local SavedModel directory (none if no file).

    Raises:
        ModelLoadError: the file is unreadable or holds more than 1000 records.
    """
    path = os.path.join(local_model_dir, *WARMUP_FILE.split("/"))
    if not os.path.exists(path):
        return []
    records = []
    try:
        for index, raw in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
            if index >= MAX_RECORDS:
                raise ModelLoadError(
                    f"warm-up file {path!r} holds more than {MAX_RECORDS} records, TF "
                    f"Serving's limit. Keep at most {MAX_RECORDS} representative requests."
                )
            records.append(PredictionLog.FromString(raw))
    except (tf.errors.OpError, ValueError) as e:
        raise ModelLoadError(
            f"warm-up file {path!r} is not a TFRecord of serialized PredictionLogs: "
            f"{type(e).__name__}: {first_line(e)}. Rewrite it with "
            "beam_infer.write_warmup_requests."
        ) from e
    return records


def replay(root: object, records: Sequence[PredictionLog], model_path: str) -> int:
    """Feeds every record's request to its signature of the loaded ``root``.

    Args:
        root: The object ``tf.saved_model.load`` returned.
        records: PredictionLogs from ``read_warmup_records``.
        model_path: Named in errors.

    Returns:
        The number of records replayed.

    Raises:
        ModelLoadError: a record failed; the message says which, on which signature, why.
    """
    signatures = root.signatures  # type: ignore[attr-defined]
    for index, record in enumerate(records):
        kind = record.WhichOneof("log_type") or "empty"
        name = DEFAULT_SIGNATURE
        try:
            calls = list(_calls(record, kind))
            for name, feeds in calls:
                if name not in signatures:
                    raise KeyError(f"no signature {name!r}; available: "
                                   f"{', '.join(sorted(signatures))}")
                function = signatures[name]
                if feeds is None:  # Examples: the signature's one input
                    examples = _examples(record, kind)
                    alias = _only_input(function, name)
                    feeds = {alias: tf.constant(examples, dtype=tf.string)}
                function(**feeds)
        except Exception as e:
            raise ModelLoadError(
                f"warm-up record {index} ({kind}, signature {name!r}) of {model_path!r} "
                f"failed: {type(e).__name__}: {first_line(e)}. Fix or regenerate "
                f"{WARMUP_FILE} (beam_infer.write_warmup_requests writes one from sample "
                "inputs); the model was not put into service."
            ) from e
    return len(records)


def _calls(record: PredictionLog, kind: str) -> Iterable[tuple[str, dict | None]]:
    if kind == "predict_log":
        request = record.predict_log.request
        yield (request.model_spec.signature_name or DEFAULT_SIGNATURE,
               {alias: tf.constant(tf.make_ndarray(tensor))
                for alias, tensor in request.inputs.items()})
    elif kind in ("classify_log", "regress_log"):
        request = getattr(record, kind).request
        yield request.model_spec.signature_name or DEFAULT_SIGNATURE, None
    elif kind == "multi_inference_log":
        for task in record.multi_inference_log.request.tasks:
            yield task.model_spec.signature_name or DEFAULT_SIGNATURE, None
    else:
        raise ValueError(
            f"unsupported warm-up log type {kind!r}; use predict_log, classify_log, "
            "regress_log or multi_inference_log")


def _examples(record: PredictionLog, kind: str) -> list[bytes]:
    model_input = getattr(record, kind).request.input
    if model_input.WhichOneof("kind") == "example_list_with_context":
        raise ValueError("example_list_with_context is not supported; use example_list")
    return [e.SerializeToString() for e in model_input.example_list.examples]


def _only_input(function, name: str) -> str:
    inputs = function.structured_input_signature[1]
    if len(inputs) != 1:
        raise ValueError(f"signature {name!r} takes {len(inputs)} inputs; Examples need one")
    return next(iter(inputs))


def write_warmup_requests(
    model_path: str,
    inputs: Iterable[Any] | Mapping[str, Any] | np.ndarray,
    *,
    signature_name: str = DEFAULT_SIGNATURE,
) -> str:
    """Writes ``assets.extra/tf_serving_warmup_requests`` into a SavedModel directory.

    One PredictionLog per input, in TF Serving's format, shaped for the signature: a
    ``predict_log`` (the input's tensors in ``request.inputs``, batch dimension 1) or a
    ``classify_log`` / ``regress_log`` (the Example in ``request.input``). Works on any
    Beam filesystem.

    Args:
        model_path: A SavedModel directory (one version folder, not a base path).
        inputs: 1 to 1000 sample inputs, as ``RunInference`` takes them. For a signature
            fed serialized examples: ``tf.train.Example``s or their bytes. For a
            tensor-input signature: elements (a dict keyed by input alias, or for one
            input the value itself), or stacked arrays with one request per row along
            axis 0 (a dict of arrays by alias, or one ``np.ndarray`` for one input).
            Values are cast as ``RunInference`` casts them.
        signature_name: The signature the requests are for.

    Returns:
        The path of the file written.

    Raises:
        ConfigurationError: the path, signature or inputs do not fit; says how to fix it.

    Example:
        >>> bi.write_warmup_requests("/models/five/1", [make_example(1.0)])
        '/models/five/1/assets.extra/tf_serving_warmup_requests'
        >>> bi.write_warmup_requests("/models/dense/1", np.zeros((4, 784), np.float32))
        '/models/dense/1/assets.extra/tf_serving_warmup_requests'
    """
    available = read_signatures(model_path, DEFAULT_TAGS)
    signature = available.get(signature_name)
    if signature is None:
        raise ConfigurationError(
            f"signature {signature_name!r} not found in {model_path}; available: "
            f"{', '.join(available) or 'none'}. Pass one of them as signature_name=..."
        )
    if not isinstance(inputs, Mapping | np.ndarray | tf.Tensor):
        inputs = list(inputs)
    examples = len(signature.inputs) == 1 and signature.inputs[0].dtype == tf.string \
        and not _raw_text(inputs)
    if examples:
        records = _example_records(signature, inputs)
    elif signature.method_name != PREDICT or not signature.inputs:
        raise ConfigurationError(
            f"signature {signature_name!r} of {model_path} is a {signature.method_name} "
            f"signature taking {', '.join(t.describe() for t in signature.inputs) or 'nothing'}; "
            "warm-up requests for it are written from tf.train.Examples, which need one "
            "string input."
        )
    else:
        records = _tensor_records(signature, inputs, model_path)
    target = posixpath.join(model_path.rstrip("/"), WARMUP_FILE)
    with FileSystems.create(target) as f:
        for record in records:
            _TFRecordUtil.write_record(f, record.SerializeToString())
    return target


def _raw_text(inputs: Any) -> bool:
    """Samples of raw text (``str`` values) for a one-string-input predict signature."""
    if isinstance(inputs, np.ndarray):
        return inputs.dtype.kind == "U"
    if isinstance(inputs, Mapping | tf.Tensor):
        return True
    return any(isinstance(item, str | Mapping | np.ndarray | tf.Tensor) for item in inputs)


def _count_check(count: int) -> None:
    if not 1 <= count <= MAX_RECORDS:
        raise ConfigurationError(
            f"write_warmup_requests needs 1 to {MAX_RECORDS} sample inputs; got "
            f"{count}. Pass a few representative inputs."
        )


def _example_records(signature: Signature, inputs: Iterable[Any]) -> list[PredictionLog]:
    samples = list(inputs)
    _count_check(len(samples))
    serialized = []
    for index, sample in enumerate(samples):
        if isinstance(sample, bytes):
            serialized.append(sample)
        elif isinstance(sample, tf.train.Example | tf.train.SequenceExample):
            serialized.append(sample.SerializeToString())
        else:
            raise ConfigurationError(
                f"signature {signature.name!r} takes serialized examples, so warm-up "
                f"samples must be tf.train.Example or bytes; sample {index} is "
                f"{type(sample).__name__}."
            )
    return [_record(signature.method_name, signature.name, signature.inputs[0].alias, s)
            for s in serialized]


def _tensor_records(signature: Signature, inputs: Any, model_path: str
                    ) -> list[PredictionLog]:
    if isinstance(inputs, Mapping):  # stacked arrays by alias
        rows = _rows_of_stacked(inputs, signature)
    elif isinstance(inputs, np.ndarray | tf.Tensor) and len(signature.inputs) == 1:
        rows = [np.asarray(row) for row in np.asarray(inputs)]
    else:
        rows = list(inputs)
    _count_check(len(rows))
    records = []
    for index, element in enumerate(rows):
        try:
            batch = batch_tensors([element], signature, pad=False)
        except InputError as e:
            raise ConfigurationError(
                f"warm-up sample {index} does not fit signature {signature.name!r} of "
                f"{model_path}: {e}") from e
        log = PredictionLog()
        request = log.predict_log.request
        request.model_spec.signature_name = signature.name
        for alias, array in batch.feeds.items():
            request.inputs[alias].CopyFrom(tf.make_tensor_proto(array))
        records.append(log)
    return records


def _rows_of_stacked(arrays: Mapping[str, Any], signature: Signature) -> list[dict[str, Any]]:
    columns = {alias: np.asarray(value) for alias, value in arrays.items()}
    sizes = {alias: (a.shape[0] if a.ndim else None) for alias, a in columns.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ConfigurationError(
            f"write_warmup_requests got stacked arrays for signature {signature.name!r} "
            f"whose first dimensions differ or are missing: {sizes}. Give every input "
            "one row per request along axis 0."
        )
    count = next(iter(sizes.values()))
    if len(signature.inputs) == 1 and set(columns) == {signature.inputs[0].alias}:
        return [columns[signature.inputs[0].alias][i] for i in range(count)]
    return [{alias: column[i] for alias, column in columns.items()} for i in range(count)]


def _record(method_name: str, signature_name: str, alias: str, serialized: bytes
            ) -> PredictionLog:
    log = PredictionLog()
    if method_name == PREDICT:
        request = log.predict_log.request
        request.model_spec.signature_name = signature_name
        request.inputs[alias].CopyFrom(tf.make_tensor_proto([serialized], dtype=tf.string))
        return log
    kind = "classify_log" if method_name == tf.saved_model.CLASSIFY_METHOD_NAME \
        else "regress_log"
    request = getattr(log, kind).request
    request.model_spec.signature_name = signature_name
    request.input.example_list.examples.add().ParseFromString(serialized)
    return log

