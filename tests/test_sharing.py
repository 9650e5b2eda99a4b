"""One model copy per machine, shared by SDK processes through Beam's proxy."""

from __future__ import annotations

import apache_beam as beam

import beam_infer as bi
from tests import model_zoo
from tests.beam_helpers import run_collect


def test_model_shared_across_processes_scores_through_the_proxy(zoo, tmp_path):
    spec = bi.ModelSpec(model_path=zoo.tf1, signature_names=("classify", "regress"),
                        share_across_processes=True, model_copies=1)

    def build(p):
        return {"logs": p | beam.Create([("k", e) for e in model_zoo.make_examples([1.0, 2.0])])
                | bi.RunInference(spec)}

    outputs, _ = run_collect(build, str(tmp_path))
    values = sorted(log.multi_inference_log.response.results[1].regression_result
                    .regressions[0].value for _, log in outputs["logs"])
    assert values == [5.0, 10.0]
