"""The tutorial notebook runs top to bottom and prints the seed's answers."""

from __future__ import annotations

import ast
import pathlib

import nbformat
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "beam_infer_tutorial.ipynb"


def _stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def test_tutorial_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    # The kernel (and the `beam_infer inspect` subprocess it starts) import the repo.
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [_stream_text(c) for c in notebook.cells if c.cell_type == "code"]
    everything = "\n".join(outputs)
    assert "signature_def['serving_default']:" in everything
    assert "beam_infer RunInference: predict" in everything
    assert "input is [[1013.0]] output is [5065.0]" in everything  # basic
    assert "key is first_question input is [105.0] output is 525.0" in everything  # keyed
    assert "model is x10 key is fourth_question input is [1013.0] output is 10130.0" \
        in everything  # branching
    assert ("key is second_question original input is 108.0 input is [540.0] output is "
            "5400.0") in everything  # cascade
    assert ast.literal_eval(outputs[-1].splitlines()[0]) == {
        "key": "first_question", "input": {"x": [105.0]}, "output": {"output_0": [525.0]},
        "model_version": "1"}  # post-processing, read back from the file
    assert (tmp_path / "work" / "notebook" / "five_model" / "saved_model.pb").exists()
