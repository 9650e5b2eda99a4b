"""The throughput benchmark runs end to end at smoke size and prints its tables.

Speed is not asserted here (figures at this size are noise); what is asserted is that
every variant ran and that each worker process loaded the model once.
"""

from __future__ import annotations

import os
import re

from benchmarks import throughput


def _rows(report: str, title: str) -> dict[str, list[str]]:
    section = report.split(f"## {title}")[1].split("\n\n")[0]
    rows = {}
    for line in section.splitlines()[3:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = re.sub(r" \(\d.*x one worker\)$", "", cells[0])
        rows[re.sub(r", overlap \d+%$", "", name)] = cells[1:]
    return rows


def test_smoke_run_prints_every_variant_and_one_load_per_worker(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    report = throughput.main(["--smoke", "--work_dir", str(tmp_path)])
    assert report in capsys.readouterr().out
    five = _rows(report, "y = 5x, keyed serialized Examples, n=300")
    assert list(five) == [
        "direct loop (the limit)", "read and key only (runner floor)",
        "Beam RunInference, a handler that scores nothing (engine only)",
        "tfx-bsl RunInference",
        "Beam RunInference + tfx-bsl CreateModelHandler", "beam_infer PredictionLog",
        "beam_infer lean (PredictionResult)"]
    five_tf_data = _rows(report, "y = 5x, keyed serialized Examples read by tf.data "
                         "(bi.ReadTFRecordBatches, one element per record), n=300")
    assert list(five_tf_data) == list(five)
    examples = _rows(report, "MLP 784-512-512-10, serialized Examples, n=200")
    reading = "direct loop reading the files (tf.data, no Beam)"
    assert list(examples) == [
        *list(five)[:1], "read only (runner floor)", reading, *list(five)[3:],
        "read batches only (bi.ReadTFRecordBatches)",
        "read batches only (ReadFromTFRecord + BatchElements)",
        "read batches only (TFXIO BeamSource)",
        "beam_infer on_batches PredictionLog (bi.ReadTFRecordBatches)",
        "beam_infer on_batches PredictionLog (ReadFromTFRecord + BatchElements)",
        "beam_infer on_batches PredictionLog (TFXIO BeamSource)",
        "beam_infer on_batches lean (bi.ReadTFRecordBatches)"]
    dense = _rows(report, "MLP 784-512-512-10, dense float32 arrays, n=200")
    shared = f"intra_op_threads={max(1, (os.cpu_count() or 2) // 2)}"  # each worker's share
    assert list(dense) == [
        "direct loop (the limit)", "read only (runner floor)", reading,
        "beam_infer PredictionLog", "beam_infer lean (PredictionResult)",
        "read batches only (bi.ReadTFRecordBatches)",
        "beam_infer on_batches lean (bi.ReadTFRecordBatches)",
        "read only, 2 workers (TF imported)", f"beam_infer lean, 2 workers, {shared}",
        f"beam_infer on_batches lean (bi.ReadTFRecordBatches), 2 workers, {shared}"]
    loads = {(title, name): cells[5]
             for title, table in (("five", five), ("five_tf_data", five_tf_data),
                                  ("examples", examples), ("dense", dense))
             for name, cells in table.items() if name.startswith("beam_infer")}
    assert set(loads.values()) <= {"1", "2"}
    assert [key for key, count in loads.items() if count == "2"] == [
        ("dense", f"beam_infer lean, 2 workers, {shared}"),
        ("dense", f"beam_infer on_batches lean (bi.ReadTFRecordBatches), 2 workers, {shared}")]
    # Every pipeline counted all 200 elements (the benchmark checks), batched ones too.
    assert all(float(cells[0].replace(",", "")) > 0 for table in (examples, dense)
               for cells in table.values())
    assert float(dense[f"beam_infer lean, 2 workers, {shared}"][6].replace(",", "")) > 0  # RSS MB
    assert "batch size 64" in report


def test_repeats_are_made_in_rounds_and_each_row_keeps_its_best(tmp_path):
    calls = []
    rates = {"a": iter([3.0, 5.0, 4.0]), "b": iter([float("nan"), 2.0, 1.0])}

    def run(name):
        def once():
            calls.append(name)
            return throughput.Row(name, next(rates[name]))
        return once

    bench = throughput.Bench(str(tmp_path), repeat=3)
    rows = bench.best_of_rounds([run("a"), run("b")])
    assert calls == ["a", "b"] * 3  # every row once per round, not its repeats together
    assert [(r.name, r.rate) for r in rows] == [("a", 5.0), ("b", 2.0)]
