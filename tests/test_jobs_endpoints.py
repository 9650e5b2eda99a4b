"""The jobs score against a serving endpoint (``--endpoint``) as they do a SavedModel.

Run against the TF Serving stand-in (tests/emulators/tf_serving.py), which serves ``five``
version 1 (y = 5x) and version 2 (y = 10x) from real SavedModels.
"""

from __future__ import annotations

import json

import pytest

import beam_infer as bi
from pipelines import basic, batch_scoring, branching, dead_letters, keyed

pytestmark = pytest.mark.emulators

BASIC_ANSWERS = ["input is [[1000.0]] output is [5000.0]", "input is [[1013.0]] output is [5065.0]",
                 "input is [[105.0]] output is [525.0]", "input is [[108.0]] output is [540.0]"]


def _grpc(tf_serving, version: int = 1) -> str:
    return f"grpc://{tf_serving.grpc_target}/models/five/versions/{version}"


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_the_basic_job_gives_the_same_answers_from_an_endpoint(tf_serving, tmp_path, protocol):
    url = _grpc(tf_serving) if protocol == "grpc" \
        else f"{tf_serving.rest_url}/v1/models/five/versions/1"
    basic.run([f"--work_dir={tmp_path}", f"--endpoint={url}"])
    assert sorted((tmp_path / "output").read_text().splitlines()) == BASIC_ANSWERS
    assert not (tmp_path / "five").exists()  # no demo model was built


def test_the_dead_letters_job_sets_bad_records_aside_from_an_endpoint(tf_serving, tmp_path):
    dead_letters.run([f"--work_dir={tmp_path}", f"--endpoint={_grpc(tf_serving)}"])
    predictions = (tmp_path / "output.predictions").read_text().splitlines()
    failed = [json.loads(line) for line in
              (tmp_path / "output.dead_letters").read_text().splitlines()]
    assert len(predictions) == 4 and len(failed) == 4
    assert {letter["stage"] for letter in failed} <= {"decode", "validate", "inference"}


def test_the_keyed_job_is_answered_by_the_version_in_its_url(tf_serving, tmp_path):
    keyed.run([f"--work_dir={tmp_path}", f"--endpoint={_grpc(tf_serving, 2)}"])
    assert sorted((tmp_path / "output").read_text().splitlines()) == sorted([  # y = 10x
        "key is first_question input is [105.0] output is 1050.0",
        "key is second_question input is [108.0] output is 1080.0",
        "key is third_question input is [1000.0] output is 10000.0",
        "key is fourth_question input is [1013.0] output is 10130.0"])


def test_a_two_model_job_takes_an_endpoint_for_each_model(tf_serving, tmp_path):
    branching.run([f"--work_dir={tmp_path}", f"--five_endpoint={_grpc(tf_serving, 1)}",
                   f"--ten_endpoint={_grpc(tf_serving, 2)}"])
    (rows_file,) = tmp_path.glob("rows*.jsonl")
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert len(rows) == 8
    assert not (tmp_path / "models").exists()  # neither demo model was built


def test_batch_scoring_writes_endpoint_lineage_into_its_manifest(tf_serving, tmp_path):
    out = tmp_path / "scores"
    code = batch_scoring.main([f"--work_dir={tmp_path}", f"--endpoint={_grpc(tf_serving, 2)}",
                               f"--output={out}/part", "--output_format=jsonl"])
    assert code == 0
    (manifest,) = out.glob("_*.manifest.json")
    model = json.loads(manifest.read_text())["model"]
    assert model["path"] == _grpc(tf_serving, 2) and model["version"] == "2"
    assert model["fingerprint"] == f"{_grpc(tf_serving, 2)}@2" and model["tags"] == []


def test_model_flags_refuse_two_models_and_stray_endpoint_flags(tmp_path):
    with pytest.raises(bi.ConfigurationError, match=r"--model_path=.* and --endpoint=.* were "
                                                    r"both given"):
        basic.run([f"--work_dir={tmp_path}", "--model_path=/m", "--endpoint=grpc://h:1/models/m"])
    with pytest.raises(bi.ConfigurationError, match="--endpoint_token_file applies to "
                                                    "--endpoint, which was not given"):
        basic.run([f"--work_dir={tmp_path}", "--endpoint_token_file=/t"])
    with pytest.raises(bi.ConfigurationError, match=r"--five_model=.* and --five_endpoint="):
        branching.run([f"--work_dir={tmp_path}", "--five_model=/m",
                       "--five_endpoint=grpc://h:1/models/m"])


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_inspect_reads_an_endpoints_signatures(tf_serving, capsys, protocol):
    from beam_infer import _cli

    url = _grpc(tf_serving) if protocol == "grpc" \
        else f"{tf_serving.rest_url}/v1/models/five/versions/1"
    assert _cli.main(["inspect", url]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"endpoint: {url}\n")
    assert "The endpoint serves the following SignatureDefs:" in text
    assert "signature_def['serving_default']:" in text
    assert "beam_infer RunInference: predict" in text
    assert _cli.main(["inspect", url, "--json"]) == 0
    description = json.loads(capsys.readouterr().out)
    (meta_graph,) = description["meta_graphs"]
    assert meta_graph["tags"] == []
    assert {s["name"] for s in meta_graph["signatures"]} >= {"serving_default"}
