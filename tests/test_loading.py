"""Loading from any Beam filesystem, once per worker process, with load metrics."""

from __future__ import annotations

import os
import shutil

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter

import beam_infer as bi
from beam_infer.saved_model._loading import LoadedModel
from tests.support import model_zoo
from tests.support.beam_helpers import run_collect


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
