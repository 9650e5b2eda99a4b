"""The handler benchmark runs at smoke size and prints every row. Speed is not asserted
(figures at this size are noise); that every row was measured is."""

from __future__ import annotations

import re

from benchmarks import handler


def test_smoke_run_prints_every_row_with_a_measured_time_and_ratio(capsys):
    handler.main(["--smoke"])
    out = capsys.readouterr().out
    rows = {m[1]: (float(m[2]), float(m[3]))
            for m in re.finditer(r"^\| (.+?) \| ([\d.]+) \| ([\d.]+)x \|$", out, re.M)}
    labels = ["the signature called directly (baseline)",
              "Beam's engine only: KeyedModelHandler, a handler that scores nothing",
              *(f"beam_infer {kind}, {keys} keys: run_inference + get_num_bytes"
                for keys in ("declared", "undeclared") for kind in ("PredictionLog", "lean")),
              "stage: split keys (KeyedBatch.split)", "stage: encode",
              "stage: model call (servable)", "stage: build PredictionLogs",
              "stage: get_num_bytes of the values"]
    assert list(rows) == labels
    assert all(us > 0 for us, _ in rows.values())
    assert rows[labels[0]][1] == 1.0  # the baseline's own ratio
