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
        "direct loop (the limit)", "read and key only (runner floor)", "tfx-bsl RunInference",
        "Beam RunInference + tfx-bsl CreateModelHandler", "beam_infer PredictionLog",
        "beam_infer lean (PredictionResult)"]
    examples = _rows(report, "MLP 784-512-512-10, serialized Examples, n=200")
    assert list(examples) == [*list(five)[:1], "read only (runner floor)", *list(five)[2:]]
    dense = _rows(report, "MLP 784-512-512-10, dense float32 arrays, n=200")
    assert list(dense) == [
        "direct loop (the limit)", "read only (runner floor)", "beam_infer PredictionLog",
        "beam_infer lean (PredictionResult)", "read only, 2 workers (TF imported)",
        "beam_infer lean, 2 workers"]
    loads = {name: cells[4] for table in (five, examples, dense)
             for name, cells in table.items() if name.startswith("beam_infer")}
    assert loads == {"beam_infer PredictionLog": "1", "beam_infer lean (PredictionResult)": "1",
                     "beam_infer lean, 2 workers": "2"}
    assert float(dense["beam_infer lean, 2 workers"][5].replace(",", "")) > 0  # peak RSS MB
    assert "batch size 64" in report
