"""PredictionLogs built straight from batches: wire-built logs equal field-by-field ones."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
import tensorflow as tf

from beam_infer import _prediction_log as bi_logs
from beam_infer._prediction_log import row_tensor_parts, row_tensor_proto


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.int16,
                                   np.int8, np.uint8, np.bool_, np.float16, object])
@pytest.mark.parametrize("shape", [(), (1,), (3,), (2, 2)])
def test_row_tensor_proto_equals_make_tensor_proto(dtype, shape):
    rng = np.random.default_rng(0)
    if dtype is object:
        row = np.array([b"a%d" % i for i in range(int(np.prod(shape)))], dtype=object)
    else:
        row = (rng.random(shape) * 100).astype(dtype)
    row = row.reshape(shape)
    expected = tf.make_tensor_proto(row, dtype=tf.as_dtype(row.dtype).as_datatype_enum,
                                    shape=(1, *row.shape))
    assert row_tensor_proto(row) == expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.uint8,
                                   np.bool_, np.float16, object])
@pytest.mark.parametrize("shape", [(3,), (3, 1), (3, 2, 2), (0,)])
def test_row_tensor_parts_join_to_the_row_protos(dtype, shape):
    rng = np.random.default_rng(0)
    if dtype is object:
        batch = np.array([b"v%d" % i for i in range(int(np.prod(shape)))],
                         dtype=object).reshape(shape)
    else:
        batch = (rng.random(shape) * 100).astype(dtype)
    prefix, payloads = row_tensor_parts(batch)
    assert [prefix + payload for payload in payloads] == [
        row_tensor_proto(np.asarray(r, dtype=batch.dtype)).SerializeToString() for r in batch]


def _field_by_field_predict_log(example: bytes, output: np.ndarray, model: tuple[str, int]
                                ) -> bi_logs.PredictionLog:
    log = bi_logs.PredictionLog()
    request, response = log.predict_log.request, log.predict_log.response
    request.inputs["examples"].CopyFrom(
        tf.make_tensor_proto(np.array([example], dtype=object), shape=(1,)))
    response.outputs["y"].CopyFrom(row_tensor_proto(output))
    for message in (request, response):
        message.model_spec.name, message.model_spec.signature_name = model[0], "serving_default"
        message.model_spec.version.value = model[1]
    return log


@pytest.mark.parametrize("version", [1, 300, 2**40])
@pytest.mark.parametrize("lengths", ["equal", "different"])
@pytest.mark.parametrize("n", [5, 17, 40])  # logs are parsed up to 16 at a time
def test_wire_built_predict_logs_equal_logs_built_field_by_field(version, lengths, n):
    # Equal lengths take the joined-in-C path, different ones the per-element path.
    examples = [b"example-%02d" % i * (1 if lengths == "equal" else i + 1) for i in range(n)]
    outputs = np.arange(2 * n, dtype=np.float32).reshape(n, 2)
    outputs[3] = 0.0  # a row of zero bytes is still a full row
    logs = bi_logs.predict_logs(examples, {"y": outputs}, input_alias="examples",
                                signature_name="serving_default", model=("m", version))
    expected = [_field_by_field_predict_log(e, o, ("m", version))
                for e, o in zip(examples, outputs, strict=True)]
    assert logs == expected
    # Each log is a PredictionLog in its own right: it outlives the batch it was parsed
    # from and changing one leaves the others alone.
    first, second = logs[0], logs[1]
    del logs
    first.predict_log.request.model_spec.name = "changed"
    assert type(first) is bi_logs.PredictionLog
    assert bi_logs.PredictionLog.FromString(first.SerializeToString()) == first
    assert second == expected[1]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_a_kept_predict_log_does_not_keep_its_batch_alive():
    # Logs parsed as views of one batch buffer would each pin the whole batch: keeping
    # one log of each of 40 batches of 1024 x 784 floats would hold ~130 MB.
    rows = np.random.default_rng(0).random((1024, 784), dtype=np.float32)
    outputs = {"y": np.zeros((1024, 10), np.float32)}
    bi_logs.tensor_predict_logs({"x": rows}, outputs, 1024, signature_name="s")
    before = _rss_mb()
    kept = [bi_logs.tensor_predict_logs({"x": rows}, outputs, 1024, signature_name="s")[0]
            for _ in range(40)]
    gc.collect()
    assert _rss_mb() - before < 40, "kept logs hold on to their batches' memory"
    assert sum(log.ByteSize() for log in kept) < 200_000


def test_a_kept_small_log_keeps_at_most_its_chunk():
    # Small logs are parsed 16 at a time into one arena: a kept log may hold its chunk
    # (~25 KB here), never its batch of 1024 (~1.5 MB).
    examples = [b"x" * 100] * 1024
    outputs = {"y": np.zeros((1024, 1), np.float32)}
    bi_logs.predict_logs(examples, outputs, input_alias="examples", signature_name="s")
    before = _rss_mb()
    kept = [bi_logs.predict_logs(examples, outputs, input_alias="examples",
                                 signature_name="s")[0] for _ in range(200)]
    gc.collect()
    assert _rss_mb() - before < 40, "kept logs hold on to their batches' memory"
    assert all(log == kept[0] for log in kept)
