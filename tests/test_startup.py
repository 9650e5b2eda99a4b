"""The first ``import beam_infer``: dependencies imported with the collector paused, then frozen.

The in-process tests pretend TensorFlow is not imported yet (the test process has imported
it) to check the collector's state around the block; one fresh process checks what a
user's first import leaves behind.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest

from beam_infer import _startup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def tensorflow_not_imported(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow")
    assert gc.isenabled()
    yield
    gc.enable()


def test_the_first_import_runs_with_the_collector_paused_and_freezes_what_it_made(
        tensorflow_not_imported):
    frozen = gc.get_freeze_count()
    with _startup.dependencies_imported():
        assert not gc.isenabled()
        made = [[] for _ in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen + len(made)


def test_a_failing_import_restores_the_collector_and_freezes_nothing(tensorflow_not_imported):
    frozen = gc.get_freeze_count()
    with pytest.raises(ImportError), _startup.dependencies_imported():
        raise ImportError("no module named 'tensorflow'")
    assert gc.isenabled()
    # Nothing newly frozen; frozen objects that other threads free meanwhile leave the
    # count, so it may go down.
    assert gc.get_freeze_count() <= frozen


def test_a_collector_the_program_turned_off_stays_off(tensorflow_not_imported):
    gc.disable()
    with _startup.dependencies_imported():
        pass
    assert not gc.isenabled()


def test_nothing_changes_once_tensorflow_is_imported():
    frozen = gc.get_freeze_count()
    with _startup.dependencies_imported():
        assert gc.isenabled()
    assert gc.get_freeze_count() <= frozen  # as above: frees may lower it, nothing is added


@pytest.mark.e2e
def test_a_fresh_import_freezes_its_dependencies_and_leaves_the_endpoint_clients_out():
    code = ("import gc, sys, beam_infer as bi; "
            "print(gc.isenabled(), gc.get_freeze_count() > 100_000, "
            "'beam_infer.remote' in sys.modules, "
            "bi.EndpointSpec.__module__, 'beam_infer.remote' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True,
                          env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.stdout.split() == ["True", "True", "False", "beam_infer.remote._spec", "True"]
