"""The remote benchmark runs end to end at smoke size and prints its table. Speed is not
asserted here (figures at this size are noise); every variant must have run."""

from __future__ import annotations

import pytest

from benchmarks import remote

pytestmark = pytest.mark.emulators


def test_smoke_run_prints_every_protocol_and_variant(capsys):
    report = remote.main(["--smoke"])
    assert report in capsys.readouterr().out
    rows = [line for line in report.splitlines() if line.startswith("| TF Serving")]
    assert [tuple(c.strip() for c in row.strip("|").split("|")[:2]) for row in rows] == [
        (protocol, variant) for protocol in ("TF Serving gRPC", "TF Serving REST")
        for variant in ("bi.RunInference PredictionLog", "bi.RunInference lean",
                        "bi.RunInference on_batches PredictionLog",
                        "bi.RunInference on_batches lean")]
    for row in rows:  # elements/s, the direct calls beside them and the ratio
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[2].replace(",", "")) > 0 and float(cells[3].replace(",", "")) > 0
        assert float(cells[4].rstrip("x")) > 0
