"""TensorFlow's CPU thread pools in a worker process: ``ModelSpec.intra_op_threads`` and
``inter_op_threads``.

TensorFlow sizes both pools to every core of the machine by default, in each process. A
machine that runs several SDK processes (DirectRunner's ``--direct_num_workers``,
Dataflow's one process per vCPU) then runs that many pools of that many threads, and the
processes' model calls take each other's cores. TF Serving's
``--tensorflow_intra_op_parallelism`` and ``--tensorflow_inter_op_parallelism`` set
them; these do the same for the process that loads the model.

TensorFlow takes the settings only before it runs its first operation in the process, and
they hold for every model the process loads. So they are applied when a model is loaded,
before it is read; if TensorFlow already started in that process with other values (an
in-process runner whose process ran TensorFlow before, or an earlier model with other
settings), the running values stay, and a warning says which and how to set them
(``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS`` in the worker's environment
are read when TensorFlow starts).
"""

from __future__ import annotations

import logging

import tensorflow as tf

_LOG = logging.getLogger(__name__)

_POOLS = {
    "intra_op_threads": (tf.config.threading.get_intra_op_parallelism_threads,
                         tf.config.threading.set_intra_op_parallelism_threads,
                         "TF_NUM_INTRAOP_THREADS"),
    "inter_op_threads": (tf.config.threading.get_inter_op_parallelism_threads,
                         tf.config.threading.set_inter_op_parallelism_threads,
                         "TF_NUM_INTEROP_THREADS"),
}
_warned: set[tuple[str, int]] = set()


def apply(intra_op_threads: int | None, inter_op_threads: int | None) -> dict[str, int]:
    """Sizes this process's TensorFlow thread pools; None leaves a pool as it is.

    Returns:
        The settings that now hold, by field name (0: TensorFlow's default, every core).
    """
    held = {}
    for name, wanted in (("intra_op_threads", intra_op_threads),
                         ("inter_op_threads", inter_op_threads)):
        get, set_, variable = _POOLS[name]
        if wanted is not None and get() != wanted:
            try:
                set_(wanted)
            except RuntimeError:  # TensorFlow already started in this process
                if (name, wanted) not in _warned:
                    _warned.add((name, wanted))
                    _LOG.warning(
                        "ModelSpec.%s=%d was not applied: TensorFlow already started in "
                        "this process with %s, which holds for the whole process. Set %s=%d "
                        "in the worker's environment, or load the model in a process that "
                        "has not run TensorFlow yet (a worker of its own).",
                        name, wanted, _describe(get()), variable, wanted)
        held[name] = get()
    return held


def _describe(value: int) -> str:
    return "TensorFlow's default (every core)" if value == 0 else f"{value} threads"
