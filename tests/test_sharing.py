"""One model copy per machine, shared by SDK processes through Beam's proxy."""

from __future__ import annotations

import apache_beam as beam
import tensorflow as tf

import beam_infer as bi
from tests.support import model_zoo
from tests.support.beam_helpers import run_collect


def test_model_shared_across_processes_scores_through_the_proxy(zoo, tmp_path):
    spec = bi.ModelSpec(model_path=zoo.tf1, signature_names=("classify", "regress"),
                        share_across_processes=True, model_copies=1)

    def build(p):
        examples = model_zoo.make_examples([1.0, 2.0])
        return {"logs": p | beam.Create([("k", e) for e in examples]) | bi.RunInference(spec),
                "batches": p | "Batches" >> beam.Create([examples])
                | "OnBatches" >> bi.RunInference(spec).on_batches(),
                # A string tensor, as bi.ReadTFRecordBatches gives, crosses the proxy too.
                "lean": p | "Records" >> beam.Create(
                    [tf.constant([e.SerializeToString() for e in examples])])
                | "OnRecords" >> bi.RunInference(spec, output=bi.Output.RESULT).on_batches()}

    outputs, _ = run_collect(build, str(tmp_path))
    values = sorted(log.multi_inference_log.response.results[1].regression_result
                    .regressions[0].value for _, log in outputs["logs"])
    assert values == [5.0, 10.0]
    (batch,) = outputs["batches"]
    assert sorted(log.SerializeToString() for log in batch) == sorted(
        log.SerializeToString() for _, log in outputs["logs"])
    (result,) = outputs["lean"]
    assert result.inference["regress/outputs"].ravel().tolist() == [5.0, 10.0]
