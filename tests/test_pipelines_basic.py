"""pipelines.basic end to end: it builds its own model and input and prints the answers."""

from __future__ import annotations

from pipelines import basic


def test_basic_job_runs_on_embedded_defaults(tmp_path, capsys):
    basic.run([f"--work_dir={tmp_path}"])
    lines = sorted((tmp_path / "output").read_text().splitlines())
    assert lines == [
        "input is [[1000.0]] output is [5000.0]",
        "input is [[1013.0]] output is [5065.0]",
        "input is [[105.0]] output is [525.0]",
        "input is [[108.0]] output is [540.0]",
    ]
    assert "input is [[105.0]] output is [525.0]" in capsys.readouterr().out
