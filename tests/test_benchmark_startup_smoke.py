"""The start-up benchmark runs end to end at smoke size and prints its tables.

Speed is not asserted (one run of each, on a shared machine); what is asserted is that
every variant ran in its own process and that every phase was stamped, so the stamps the
child writes (imports, the model load of either library, the first and last scored
element) still fit the libraries they wrap.
"""

from __future__ import annotations

from benchmarks import startup


def _cells(report: str, title: str) -> dict[str, list[str]]:
    section = report.split(f"## {title}")[1].split("\n\n")[0]
    return {cells[0]: cells[1:] for cells in (
        [c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()[3:])}


def test_smoke_run_stamps_every_phase_of_both_libraries_and_times_the_keyed_job(capsys):
    report = startup.main(["--smoke"])
    assert report in capsys.readouterr().out
    table = _cells(report, "y = 5x, 40 keyed serialized Examples from a TFRecord file")
    assert [name.strip("*").split(" (`")[0] for name in table] == [
        name for name, _, _ in (*startup.PHASES, *startup.TOTALS)]
    for name, (ours, theirs, _) in table.items():
        assert float(ours) >= 0 and float(theirs) >= 0, name
    total = table["**total**"]
    assert float(total[0]) > float(table["**to first scored element**"][0]) > 0
    assert table["warm-up"][:2] == ["0.00", "0.00"]  # the model has no warm-up requests
    keyed = _cells(report, "`python -m pipelines.keyed` (the bundled questions, the same model)")
    assert list(keyed) == ["to first scored element", "total"]
    assert float(keyed["total"][0]) > float(keyed["to first scored element"][0]) > 0
