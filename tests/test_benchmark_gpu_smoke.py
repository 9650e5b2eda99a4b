"""The GPU benchmark runs end to end at smoke size (on the CPU here) and writes its tables.

Speed is not asserted (figures at this size are noise); what is asserted is that every row
ran, every element was scored (the benchmark raises when a pipeline lost one) and that
each model was loaded once per process. A full run's rows are checked from its plan
without running it.
"""

from __future__ import annotations

import json
import logging
import os
import re

import pytest
import tensorflow as tf

from benchmarks import gpu

pytestmark = pytest.mark.e2e  # the benchmarks' smoke tests are e2e (CONTRIBUTING.md)


@pytest.fixture
def environment():
    """``gpu.main`` sets variables its worker processes inherit and quiets logging."""
    saved, level = dict(os.environ), logging.getLogger().level
    yield
    os.environ.clear()
    os.environ.update(saved)
    logging.getLogger().setLevel(level)


def _rows(report: str, title: str) -> list[list[str]]:
    section = report.split(f"## {title}")[1].split("\n\n")[0]
    return [[c.strip() for c in line.strip("|").split("|")]
            for line in section.splitlines()[3:]]


def _name(cells: list[str]) -> str:
    return re.sub(r", overlap \d+%| \(\d.*x one worker\)", "", cells[0])


def test_smoke_run_prints_and_writes_every_row(tmp_path, capsys, environment):
    out = tmp_path / "out"
    report = gpu.main(["--smoke", "--out", str(out), "--work_dir", str(tmp_path / "work")])
    assert report in capsys.readouterr().out
    assert "incomplete" not in report
    direct, resident = gpu.DIRECT, gpu.RESIDENT
    mlp = _rows(report, "MLP 784-512-512-10, dense float32 rows, n=256")
    assert [(_name(r), r[1]) for r in mlp] == [
        (direct, "16"), (direct, "32"), (resident, "32"),
        ("beam_infer PredictionLog", "32"), ("beam_infer on_batches PredictionLog", "32"),
        ("beam_infer lean (PredictionResult)", "32"), ("beam_infer on_batches lean", "32"),
        ("beam_infer on_batches lean, 2 workers, share_across_processes", "32")]
    examples = _rows(report, "MLP 784-512-512-10, serialized Examples, n=256")
    assert [(_name(r), r[1]) for r in examples] == [
        (direct, "16"), (direct, "32"), ("beam_infer PredictionLog", "32"),
        ("beam_infer on_batches lean", "32")]
    conv = _rows(report, "conv net 16x16x3 uint8, 4 conv layers 4-8, 0.00 GFLOPs per image, "
                         "n=128")
    assert [(_name(r), r[1]) for r in conv] == [
        (direct, "16"), (direct, "32"), (resident, "32"), ("beam_infer PredictionLog", "32"),
        ("beam_infer on_batches lean", "32")]
    for rows in (mlp, examples, conv):
        assert all(float(r[2].replace(",", "")) > 0 for r in rows)
        # One load per pipeline: the shared model is loaded once for both workers.
        assert {r[4] for r in rows if r[0].startswith("beam_infer")} == {"1"}
    memory = _rows(report, "GPU memory per model copy")
    assert [r[0] for r in memory] == ["MLP 784-512-512-10", "conv net 16x16x3 uint8"]
    assert memory[0][1] == "669,706"  # 784*512 + 512 + 512*512 + 512 + 512*10 + 10
    assert memory[0][6].startswith("1 / ")  # one shared copy
    if not tf.config.list_physical_devices("GPU"):
        assert "no GPU found by TensorFlow" in report
    assert (out / "gpu.md").read_text().strip() == report.strip()
    written = json.loads((out / "gpu.json").read_text())
    assert [t["title"] for t in written["tables"]] == [
        t.split("\n")[0].removeprefix("## ") for t in report.split("\n\n")[:3]]
    assert written["error"] is None and written["meta"]["smoke"] is True


def test_a_full_run_plans_every_row_at_every_batch_size():
    args = gpu.parse([])
    dense = gpu.Workload("mlp", "", "", "dense", None, None, "x", (784,))
    examples = gpu.Workload("mlp_examples", "", "", "", None, None, "examples")
    lean = [(name, b) for name in ("beam_infer lean (PredictionResult)",
                                   "beam_infer on_batches lean") for b in (256, 1024, 4096)]
    assert [(v.name, v.batch) for v in gpu.plan(dense, args)] == [
        ("read only (runner floor)", 1024), ("read batches only (bi.ReadTFRecordBatches)", 1024),
        ("beam_infer PredictionLog", 1024), ("beam_infer on_batches PredictionLog", 1024),
        *lean, ("beam_infer on_batches lean, 2 workers, a copy each", 1024),
        ("beam_infer on_batches lean, 2 workers, share_across_processes", 1024)]
    assert [v.workers for v in gpu.plan(dense, args)][-2:] == [2, 2]
    assert [v.name for v in gpu.plan(examples, args)] == [
        "read only (runner floor)", "beam_infer PredictionLog", "beam_infer on_batches lean"]


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="a GPU is visible")
def test_a_full_run_without_a_gpu_stops_and_says_why(capsys, environment):
    with pytest.raises(SystemExit) as stopped:
        gpu.main([])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "no GPU found: tf.config.list_physical_devices('GPU') is empty" in err
    assert "--smoke or --allow_cpu" in err
