"""Loading from any Beam filesystem, once per worker process, with load metrics."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter

import beam_infer as bi
from beam_infer._loading import LoadedModel, local_copy
from tests import model_zoo
from tests.beam_helpers import run_collect
from tests.remote_fs import remote


def _files(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, names in os.walk(root) for f in names)


def test_remote_model_is_copied_once_and_scored(zoo, tmp_path):
    source = str(tmp_path / "bucket" / "five")
    shutil.copytree(zoo.five, source)
    path = remote(source)
    digest = hashlib.sha256(path.encode()).hexdigest()[:16]
    target = os.path.join(tempfile.gettempdir(), "beam_infer_models", digest)
    shutil.rmtree(target, ignore_errors=True)

    assert local_copy(path) == target
    assert _files(target) == _files(source)
    os.remove(os.path.join(source, "saved_model.pb"))  # the copy is reused, not re-read
    assert local_copy(path) == target
    shutil.copy(os.path.join(zoo.five, "saved_model.pb"), source)

    def build(p):
        return {"logs": p | beam.Create(model_zoo.make_examples([2.0]))
                | bi.RunInference(bi.ModelSpec(model_path=path))}

    outputs, _ = run_collect(build, str(tmp_path / "out"))
    (log,) = outputs["logs"]
    assert log.predict_log.response.outputs["output_0"].float_val[0] == 10.0


def test_corrupt_model_gives_a_load_error_that_names_the_path(zoo, tmp_path):
    broken = str(tmp_path / "broken")
    shutil.copytree(zoo.five, broken)
    for name in os.listdir(os.path.join(broken, "variables")):
        with open(os.path.join(broken, "variables", name), "wb") as f:
            f.write(b"garbage")
    with pytest.raises(bi.ModelLoadError, match=rf"tf.saved_model.load failed for "
                                                rf"'{broken}' \(tags \['serve'\]\)"):
        LoadedModel(broken, ["serve"], ["serving_default"])


def test_metrics_report_inferences_batches_and_one_load(zoo, tmp_path):
    examples = model_zoo.make_examples(range(50))
    spec = bi.ModelSpec(model_path=zoo.five, batching=bi.BatchConfig(max_batch_size=8))

    def build(p):
        return {"logs": p | beam.Create(examples) | bi.RunInference(spec)}

    _, result = run_collect(build, str(tmp_path))
    metrics = result.metrics().query(MetricsFilter().with_namespace("beam_infer"))
    counters = {m.key.metric.name: m.committed for m in metrics["counters"]}
    distributions = {m.key.metric.name: m.committed for m in metrics["distributions"]}
    assert counters["num_inferences"] == 50
    assert distributions["inference_request_batch_size"].max <= 8
    assert distributions["inference_request_batch_size"].sum == 50
    assert distributions["inference_batch_latency_micro_secs"].count >= 7
    assert distributions["load_model_latency_milli_secs"].count == 1
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(zoo.five) for f in fs)
    assert distributions["saved_model_byte_size"].max == size
