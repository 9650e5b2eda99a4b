"""``ModelSpec.intra_op_threads`` / ``inter_op_threads``: TensorFlow's thread pools in the
process that loads the model.

A worker process of its own (DirectRunner's multi_processing mode) runs TensorFlow with the
pools the spec asks for, read back inside that process next to the model; a process where
TensorFlow already ran keeps its pools, scores all the same and says in a warning which
setting did not apply and how to set it.
"""

from __future__ import annotations

import logging
import os

import apache_beam as beam
import tensorflow as tf

import beam_infer as bi
from tests.support.beam_helpers import run_collect
from tests.support.model_zoo import make_examples

ONE_WORKER = ["--direct_num_workers=1", "--direct_running_mode=multi_processing"]


def _pools_here(log) -> tuple:
    """Where the log was scored: the process, and its TensorFlow pools as they are now."""
    return (os.getpid(), tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
            log.predict_log.response.outputs["output_0"].float_val[0])


def test_a_worker_process_runs_tensorflow_with_the_pools_the_spec_asks(zoo, tmp_path):
    spec = bi.ModelSpec(model_path=zoo.five, intra_op_threads=1, inter_op_threads=2)

    def build(p):
        logs = (p | beam.Create(make_examples([1.0, 2.0, 3.0]))
                | bi.RunInference(spec))
        return {"pools": logs | beam.Map(_pools_here)}

    outputs, _ = run_collect(build, str(tmp_path), ONE_WORKER)
    pools = outputs["pools"]
    assert sorted(p[3] for p in pools) == [5.0, 10.0, 15.0]
    assert {p[0] for p in pools} != {os.getpid()}  # scored in the worker, not here
    assert {p[1:3] for p in pools} == {(1, 2)}


def test_where_tensorflow_already_ran_the_pools_stay_and_a_warning_says_how(zoo, caplog):
    _ = tf.constant(1.0) + 1.0  # TensorFlow has started in this process
    before = (tf.config.threading.get_intra_op_parallelism_threads(),
              tf.config.threading.get_inter_op_parallelism_threads())
    wanted = max(before) + 3
    spec = bi.ModelSpec(model_path=zoo.five, intra_op_threads=wanted)
    handler = bi.SavedModelHandler(spec)
    with caplog.at_level(logging.WARNING):
        model = handler.load_model()
    (log,) = handler.run_inference(make_examples([4.0]), model)
    assert log.predict_log.response.outputs["output_0"].float_val[0] == 20.0
    assert (tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads()) == before
    warnings = [r.getMessage() for r in caplog.records if "intra_op_threads" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert f"ModelSpec.intra_op_threads={wanted} was not applied" in warnings[0]
    assert f"TF_NUM_INTRAOP_THREADS={wanted}" in warnings[0]
