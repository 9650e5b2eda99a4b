"""GPU placement decisions as pure functions, and that a CPU-only machine is unaffected."""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import subprocess
import sys

import pytest

import beam_infer as bi
from beam_infer.saved_model import _devices
from pipelines import models

REPO = pathlib.Path(__file__).resolve().parents[1]
TWO_GPUS = ["/physical_device:GPU:0", "/physical_device:GPU:1"]


@pytest.mark.parametrize(("requested", "shared", "gpus", "expected"), [
    (None, True, TWO_GPUS, 2),         # one copy per GPU
    (None, True, TWO_GPUS[:1], 1),
    (None, True, [], 1),               # CPU machine: as before
    (None, False, TWO_GPUS, 1),        # not shared: one model per process
    (3, True, TWO_GPUS, 3),            # an explicit choice wins
    (3, True, [], 3),
])
def test_model_copies_follow_the_visible_gpus(requested, shared, gpus, expected):
    assert _devices.default_model_copies(requested, shared, gpus) == expected


def test_copies_are_pinned_round_robin_to_logical_devices():
    assert _devices.logical_device("/physical_device:GPU:1") == "/GPU:1"
    assert [_devices.device_for_claim(i, TWO_GPUS) for i in range(4)] == [
        "/GPU:0", "/GPU:1", "/GPU:0", "/GPU:1"]
    assert _devices.device_for_claim(0, []) is None


def _claim(directory: str) -> int:
    return _devices.claim_next(directory)


def test_claims_are_unique_across_processes(tmp_path):
    with multiprocessing.get_context("fork").Pool(4) as pool:
        claims = pool.map(_claim, [str(tmp_path)] * 8)
    assert sorted(claims) == list(range(8))
    assert _devices.claim_next(str(tmp_path)) == 8


def test_cpu_only_machine_changes_nothing(zoo):
    assert _devices.visible_gpus() == []
    assert _devices.enable_memory_growth() == []
    with _devices.placement(True) as device:
        assert device is None
    shared = bi.SavedModelHandler(bi.ModelSpec(model_path=zoo.five, share_across_processes=True))
    assert shared.model_copies() == 1
    assert shared.share_model_across_processes()
    pinned = bi.SavedModelHandler(bi.ModelSpec(model_path=zoo.five, share_across_processes=True,
                                               model_copies=2))
    assert pinned.model_copies() == 2
    plain = bi.SavedModelHandler(bi.ModelSpec(model_path=zoo.five))
    assert plain.model_copies() == 1
    assert not plain.share_model_across_processes()
    (log,) = shared.run_inference([models.make_example(2.0)], shared.load_model())
    assert log.predict_log.response.outputs["output_0"].float_val == [10.0]


_PINNING_SCRIPT = """
import sys
import tensorflow as tf
(cpu,) = tf.config.list_physical_devices("CPU")
# Two logical CPUs stand in for two GPUs (only possible before TF initialises).
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
from beam_infer.saved_model import _devices
from beam_infer.saved_model._loading import LoadedModel
from pipelines import models

fake_gpus = ["/physical_device:CPU:0", "/physical_device:CPU:1"]
for _ in range(2):
    with _devices.placement(True, gpus=fake_gpus, counter_dir=sys.argv[2]) as device:
        model = LoadedModel(sys.argv[1], ("serve",), ("serving_default",), device=device)
    out = model.run("serving_default",
                    {"examples": [models.make_example(3.0).SerializeToString()]})
    print(device, model._root.kernel.device, out["output_0"].tolist())
"""


@pytest.mark.pipeline  # processes or a pipeline: kept out of the one-minute unit tier
def test_shared_copies_are_loaded_and_run_on_the_device_they_claim(zoo, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", _PINNING_SCRIPT, zoo.five, str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = done.stdout.splitlines()[-2:]
    assert first.startswith("/CPU:0 ") and first.split()[1].endswith("/device:CPU:0")
    assert second.startswith("/CPU:1 ") and second.split()[1].endswith("/device:CPU:1")
    assert first.endswith("[[15.0]]") and second.endswith("[[15.0]]")


def test_no_pinning_without_sharing(tmp_path):
    with _devices.placement(False, gpus=["/physical_device:CPU:0"],
                            counter_dir=str(tmp_path)) as device:
        assert device is None  # one model per process: TF's own placement
    assert _devices.claim_next(str(tmp_path)) == 0


def test_the_claim_counter_is_never_written_through_a_planted_symlink(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    victim = tmp_path / "victim"
    victim.write_text("precious")
    private = tmp_path / f"beam_infer-{os.getuid()}"
    private.mkdir(mode=0o755)
    (private / "beam_infer_gpu_claims").symlink_to(victim)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        _devices.claim_next()
    assert victim.read_text() == "precious"
    assert private.stat().st_mode & 0o777 == 0o700  # tightened: ours, others locked out


def test_the_claim_counter_lives_in_the_per_user_directory(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    assert [_devices.claim_next() for _ in range(3)] == [0, 1, 2]
    counter = tmp_path / f"beam_infer-{os.getuid()}" / "beam_infer_gpu_claims"
    assert counter.read_text() == "3"
    assert counter.stat().st_mode & 0o777 == 0o600


def test_a_planted_claim_directory_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / f"beam_infer-{os.getuid()}").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(bi.ModelLoadError, match=r"the GPU claim directory .* is a symlink"):
        _devices.claim_next()
    assert list((tmp_path / "elsewhere").iterdir()) == []
