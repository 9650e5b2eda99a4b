"""The dead-letter benchmark runs end to end at smoke size. Speed is not asserted (figures at
this size are noise); the isolation cost it prints is a count, so that is."""

from __future__ import annotations

from benchmarks import dead_letters


def test_smoke_run_prints_every_figure_and_the_isolation_call_count(capsys):
    dead_letters.main(["--smoke"])
    out = capsys.readouterr().out
    for label in ("SavedModelHandler.run_inference", "IsolatingHandler, clean batches",
                  "IsolatingHandler, 1 bad per batch", "Validator.check, bytes",
                  "RunInference ", ".with_dead_letters(), clean input",
                  ".with_dead_letters(), 1% bad input"):
        assert label in out
    # One bad element in the middle of each batch of 256: 1 failed call + log2(256) + 2.
    assert "model calls per batch 11.0 = 1 + 10.0 extra for its bad element" in out
