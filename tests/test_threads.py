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
import pytest
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


# --- the jobs' flags ------------------------------------------------------------------------

def test_every_job_takes_the_thread_flags_into_its_model_spec(tmp_path):
    from pipelines import basic, model_flags, question_rows, streaming

    flags = ["--model_path=/models/five/1", "--intra_op_threads=1", "--inter_op_threads=2"]
    args, _ = basic.parse_args(flags)
    spec = model_flags.model_spec(args, lambda: "unused")
    assert (spec.intra_op_threads, spec.inter_op_threads) == (1, 2)
    args, _ = streaming.parse_args(flags)
    spec = streaming.model_spec(args)
    assert (spec.intra_op_threads, spec.inter_op_threads, spec.poll_interval_secs) == (1, 2, 1.0)
    two = question_rows.add_two_model_parser("branching", "x5", "x10")
    args, _ = two.parse_known_args(["--five_model=/m5", "--ten_model=/m10",
                                    "--intra_op_threads=3", f"--work_dir={tmp_path}"])
    assert [s.intra_op_threads for s in question_rows.two_model_specs(args)] == [3, 3]
    args, _ = basic.parse_args(["--model_path=/models/five/1"])
    assert model_flags.model_spec(args, lambda: "unused").intra_op_threads is None


def test_an_endpoint_refuses_the_thread_flags_saying_why():
    from pipelines import basic, model_flags

    args, _ = basic.parse_args(["--endpoint=grpc://serving:8500/models/five",
                                "--intra_op_threads=1"])
    with pytest.raises(bi.ConfigurationError) as raised:
        model_flags.model_spec(args, lambda: "unused")
    assert str(raised.value) == (
        "--intra_op_threads sizes TensorFlow's threads where a SavedModel is loaded; with an "
        "endpoint the server runs the model and sizes its own. Drop it, or score a SavedModel "
        "with --model_path.")
