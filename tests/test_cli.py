"""The beam-infer command, through main(argv) and as a separate process."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import tensorflow as tf

import beam_infer as bi
from beam_infer import _cli
from pipelines import models

REPO = pathlib.Path(__file__).resolve().parents[1]

FIVE_TEXT = """\
MetaGraphDef with tag-set: 'serve' contains the following SignatureDefs:

signature_def['serving_default']:
  The given SavedModel SignatureDef contains the following input(s):
    inputs['examples'] tensor_info:
        dtype: DT_STRING
        shape: (-1)
        name: serving_default_examples:0
  The given SavedModel SignatureDef contains the following output(s):
    outputs['output_0'] tensor_info:
        dtype: DT_FLOAT
        shape: (-1, 1)
        name: StatefulPartitionedCall:0
  Method name is: tensorflow/serving/predict
  beam_infer RunInference: predict
"""


def _run_cli(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "beam_infer", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_inspect_prints_signatures_like_saved_model_cli(zoo, capsys):
    assert _cli.main(["inspect", zoo.five]) == 0
    assert capsys.readouterr().out == FIVE_TEXT


def test_inspect_json_lists_every_signature_and_whether_it_is_servable(zoo, capsys):
    assert _cli.main(["inspect", zoo.tf1, "--json"]) == 0
    description = json.loads(capsys.readouterr().out)
    (meta_graph,) = description["meta_graphs"]
    assert meta_graph["tags"] == ["serve"]
    signatures = {s["name"]: s for s in meta_graph["signatures"]}
    assert sorted(signatures) == ["classify", "classify_scores_only", "dense_predict",
                                  "predict", "regress", "serving_default", "two_inputs"]
    classify = signatures["classify"]
    assert classify["method_name"] == "tensorflow/serving/classify"
    assert classify["inputs"] == [{"alias": "inputs", "dtype": "DT_STRING", "shape": [-1],
                                   "tensor_name": "input_example_tensor:0"}]
    assert [(t["alias"], t["dtype"], t["shape"]) for t in classify["outputs"]] == [
        ("classes", "DT_STRING", [-1, 2]), ("scores", "DT_FLOAT", [-1, 2])]
    assert classify["beam_infer"] == {"servable": True, "operation": "classify",
                                      "feed": "examples"}
    assert signatures["regress"]["beam_infer"] == {"servable": True, "operation": "regress",
                                                   "feed": "examples"}
    assert signatures["dense_predict"]["beam_infer"] == {"servable": True,
                                                         "operation": "predict",
                                                         "feed": "tensors"}


def test_inspect_json_says_why_a_signature_cannot_be_served(tmp_path, capsys):
    module = tf.Module()
    module.constant = tf.function(lambda: {"y": tf.constant([1.0])}, input_signature=[])
    path = str(tmp_path / "no_inputs")
    tf.saved_model.save(module, path, signatures={"serving_default": module.constant})
    assert _cli.main(["inspect", path, "--json"]) == 0
    (meta_graph,) = json.loads(capsys.readouterr().out)["meta_graphs"]
    (signature,) = meta_graph["signatures"]
    assert signature["beam_infer"] == {
        "servable": False,
        "reason": f"signature 'serving_default' in {path} takes no inputs; RunInference feeds "
                  "each element to a signature input. Export a signature with at least one "
                  "input, or pick another with ModelSpec(signature_names=...)."}


def test_inspect_shows_every_tag_set(zoo, capsys):
    assert _cli.main(["inspect", zoo.tf1_gpu_tags]) == 0
    out = capsys.readouterr().out
    assert out.startswith("MetaGraphDef with tag-set: ")
    assert "'gpu'" in out.splitlines()[0] and "'serve'" in out.splitlines()[0]


def test_inspect_of_a_missing_model_says_what_to_point_at(tmp_path, capsys):
    assert _cli.main(["inspect", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err == (
        f"beam-infer inspect: error: model path '{tmp_path / 'nope'}' does not exist: "
        f"SavedModel file does not exist at: {tmp_path / 'nope'}/"
        "{saved_model.pbtxt|saved_model.pb}. Point model_path at a SavedModel directory (the "
        "folder that holds saved_model.pb and variables/).\n")


def test_unknown_flags_are_refused_for_inspect(zoo, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(["inspect", zoo.five, "--bogus"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.e2e  # starts the batch job or a new interpreter
def test_score_runs_the_batch_scoring_job(tmp_path, zoo, capsys):
    source = tmp_path / "in.csv"
    source.write_text("id,x\na,1\nb,2\n")
    assert _cli.main(["score", f"--input={source}", f"--model_path={zoo.five}",
                      "--key_column=id", f"--output={tmp_path}/out",
                      f"--work_dir={tmp_path}"]) == 0
    assert "read 2, scored 2, failed 0" in capsys.readouterr().out
    rows = [json.loads(line) for path in tmp_path.glob("out*")
            for line in path.read_text().splitlines()]
    assert sorted((r["key"], r["output"]["output_0"]) for r in rows) == [
        ("a", [5.0]), ("b", [10.0])]


@pytest.mark.e2e  # starts the batch job or a new interpreter
def test_command_runs_as_a_separate_process(tmp_path, zoo):
    inspected = _run_cli("inspect", zoo.five, "--json", cwd=tmp_path)
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["meta_graphs"][0]["signatures"][0]["name"] \
        == "serving_default"

    source = models.write_examples(str(tmp_path / "in.tfrecord"), [3.0])
    scored = _run_cli("score", f"--input={source}", f"--model_path={zoo.ten}",
                      "--output=out", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert "read 1, scored 1, failed 0" in scored.stdout
    (path,) = tmp_path.glob("out*.jsonl")
    assert json.loads(path.read_text())["output"] == {"output_0": [30.0]}


@pytest.mark.e2e  # starts the batch job or a new interpreter
def test_console_script_is_declared(tmp_path):
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)],
                   cwd=REPO, check=True, capture_output=True, timeout=120)
    (entry_points,) = tmp_path.glob("*.egg-info/entry_points.txt")
    assert "beam-infer = beam_infer_cli:main" in entry_points.read_text()
    # The distribution claims beam_infer (and its entry module) only, never "pipelines".
    (top_level,) = tmp_path.glob("*.egg-info/top_level.txt")
    assert sorted(top_level.read_text().split()) == ["beam_infer", "beam_infer_cli"]
    (pkg_info,) = tmp_path.glob("*.egg-info/PKG-INFO")
    metadata = pkg_info.read_text()
    for field in ("License: Apache-2.0", "Home-page: https://", "Author: ",
                  "Classifier: License :: OSI Approved :: Apache Software License",
                  f"Version: {bi.__version__}", "Keywords: apache-beam"):
        assert field in metadata


@pytest.mark.e2e  # starts the batch job or a new interpreter
def test_the_console_script_starts_quietly_and_fails_in_one_line(tmp_path):
    command = [sys.executable, "-c", "import sys, beam_infer_cli; sys.exit(beam_infer_cli.main())",
               "inspect", str(tmp_path / "nope")]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                           env=env)
    assert quiet.returncode == 1
    (line,) = quiet.stderr.splitlines()  # no TensorFlow start-up lines, no traceback
    assert line.startswith("beam-infer inspect: error: model path ")
    verbose = subprocess.run([*command, "--verbose"], cwd=REPO, capture_output=True,
                             text=True, timeout=120, env=env)
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr
    assert verbose.stderr.rstrip().endswith(line)


def test_score_help_shows_the_jobs_flags_under_the_commands_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(["score", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: beam-infer score [-h] [--work_dir WORK_DIR]")
    assert "[--input INPUT | --input_table INPUT_TABLE | --query QUERY]" in " ".join(out.split())
    assert "--output_format {jsonl,parquet,tfrecord}" in out
    assert "Exit codes: 0 ok, 1 error, 2 usage, 3 too many failures, 4 nothing scored." in \
        " ".join(out.split())
