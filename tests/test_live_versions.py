"""A worker's served model follows its base path: swap, failed versions, half-written ones."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

import beam_infer as bi
from tests.support import model_zoo
from tests.support.publishing import publish
from tests.support.remote_fs import remote

POLL = 0.3
MANUAL = 600.0  # tests that call refresh() themselves keep batches from starting one


def _answer(model, value: float = 1.0):
    serialized = np.array([model_zoo.make_examples([value])[0].SerializeToString()],
                          dtype=object)
    (outputs,), version, events = model.call([("serving_default", {"examples": serialized})])
    return (version.version, float(outputs["output_0"][0, 0]),
            [(e.version, e.ok, e.swap, e.warmup_records) for e in events])


def _wait_poll():
    time.sleep(POLL + 0.05)


def test_new_version_loads_in_the_background_after_one_poll_interval(base):
    model = bi.SavedModelHandler(
        bi.ModelSpec(model_path=base, poll_interval_secs=POLL)).load_model()
    assert _answer(model) == (1, 5.0, [(1, True, False, 1)])
    publish(base, 2)
    assert _answer(model) == (1, 5.0, [])  # the interval has not passed yet
    _wait_poll()
    answers = []
    deadline = time.monotonic() + 20
    while not answers or answers[-1][0] != 2:
        assert time.monotonic() < deadline, answers
        answers.append(_answer(model))
        time.sleep(0.02)
    # Batches kept being answered by v1 while v2 loaded, then v2 took over.
    assert answers[0][:2] == (1, 5.0)
    assert all(a[:2] == (1, 5.0) for a in answers[:-1])
    assert answers[-1] == (2, 10.0, [(2, True, True, 1)])


def test_corrupt_version_keeps_the_current_one_and_is_not_retried(base):
    model = bi.SavedModelHandler(
        bi.ModelSpec(model_path=base, poll_interval_secs=MANUAL)).load_model()
    _answer(model)
    publish(base, 3, corrupt=True)
    assert model.refresh()
    assert _answer(model) == (1, 5.0, [(3, False, False, 0)])
    assert model.refresh()
    assert _answer(model) == (1, 5.0, [])  # same files: no second attempt


def test_repaired_version_on_a_remote_filesystem_is_retried_from_fresh_bytes(base):
    model = bi.SavedModelHandler(
        bi.ModelSpec(model_path=remote(base), poll_interval_secs=MANUAL)).load_model()
    _answer(model)
    target = publish(base, 2, corrupt=True)
    assert model.refresh()
    assert _answer(model) == (1, 5.0, [(2, False, False, 0)])
    time.sleep(0.01)  # a later modification time
    shutil.copy(os.path.join(os.path.dirname(base), "good-2"),
                os.path.join(target, "variables", "variables.data-00000-of-00001"))
    assert model.refresh()
    assert _answer(model) == (2, 10.0, [(2, True, True, 1)])


def test_half_written_version_waits_until_complete(base):
    model = bi.SavedModelHandler(
        bi.ModelSpec(model_path=base, poll_interval_secs=MANUAL)).load_model()
    _answer(model)
    target = publish(base, 2, drop=("variables/variables.index",))
    assert model.refresh()
    assert _answer(model) == (1, 5.0, [])  # ignored, not a failure
    shutil.move(os.path.join(os.path.dirname(base), "held-2", "variables", "variables.index"),
                os.path.join(target, "variables", "variables.index"))
    assert model.refresh()
    assert _answer(model) == (2, 10.0, [(2, True, True, 1)])


def test_first_load_falls_back_to_an_older_allowed_version(base):
    publish(base, 2, corrupt=True)
    spec = bi.ModelSpec(model_path=base, poll_interval_secs=MANUAL,
                        version_policy=bi.VersionPolicy.latest(2))
    model = bi.SavedModelHandler(spec).load_model()
    assert _answer(model) == (1, 5.0, [(2, False, False, 0), (1, True, False, 1)])


def test_worker_starting_after_a_broken_newest_version_serves_the_one_before(base):
    publish(base, 2, corrupt=True)
    model = bi.SavedModelHandler(
        bi.ModelSpec(model_path=base, poll_interval_secs=MANUAL)).load_model()
    assert _answer(model) == (1, 5.0, [(2, False, False, 0), (1, True, False, 1)])
    assert model.refresh()
    assert _answer(model) == (1, 5.0, [])  # v2 unchanged: not retried


def test_without_polling_the_build_time_version_serves_the_whole_job(base):
    handler = bi.SavedModelHandler(bi.ModelSpec(model_path=base))
    model = handler.load_model()
    publish(base, 2)
    time.sleep(0.1)
    assert _answer(model)[:2] == (1, 5.0)


def test_loads_are_reported_by_the_first_call_that_answers_not_lost_with_a_failed_one(base):
    model = bi.SavedModelHandler(
        bi.ModelSpec(model_path=base, poll_interval_secs=MANUAL)).load_model()
    _answer(model)
    publish(base, 2)
    assert model.refresh()
    garbage = np.array([b"not an example"], dtype=object)
    with pytest.raises(Exception, match="parse"):
        model.call([("serving_default", {"examples": garbage})])
    assert _answer(model) == (2, 10.0, [(2, True, True, 1)])
    assert _answer(model) == (2, 10.0, [])


def test_a_swap_is_reported_by_a_bundle_whose_every_call_failed(base, monkeypatch):
    from beam_infer import _metrics
    from beam_infer._isolation import IsolatingHandler
    from beam_infer._keys import Keys
    from beam_infer._retries import ModelCaller

    handler = bi.SavedModelHandler(bi.ModelSpec(model_path=base, poll_interval_secs=MANUAL))
    model = handler.load_model()
    isolating = IsolatingHandler(handler, keys=Keys.NONE,
                                 caller=ModelCaller(handler, bi.RetryConfig(max_attempts=1)),
                                 validator=None, dead_letters=True)
    _answer(model)
    publish(base, 2)
    assert model.refresh()
    reported = []
    monkeypatch.setattr(_metrics, "report_load", reported.append)  # the metric updates
    letters = isolating.run_inference([b"not an example", b"nor this"], model)
    assert all(isinstance(letter, bi.DeadLetter) for letter in letters)
    assert [(e.version, e.swap) for e in reported] == [(2, True)]
