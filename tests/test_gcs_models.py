"""SavedModels on GCS (gcp-storage-emulator): found by their files, with or without folder
objects; version directories, base paths, completeness, warm-up and live versions."""

from __future__ import annotations

import os
import threading

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter

import beam_infer as bi
from pipelines import models, streaming
from tests.support import model_zoo
from tests.support.publishing import publish

pytestmark = pytest.mark.emulators


@pytest.fixture(scope="module")
def local_versions(tmp_path_factory) -> str:
    """A local base path holding versions 1 and 2 (y = 5·v·x), each with a warm-up file."""
    base = str(tmp_path_factory.mktemp("gcs_models") / "five")
    os.makedirs(base)
    for version in (1, 2):
        publish(base, version)
    return base


def _line(log) -> str:
    predict_log = log.predict_log
    x = models.example_value(predict_log.request.inputs["examples"].string_val[0])
    return (f"x={x:g} y={predict_log.response.outputs['output_0'].float_val[0]:g} "
            f"version={predict_log.response.model_spec.version.value}")


def _score_to_gcs(model_path: str, output: str, values=(1.0, 2.0)):
    """Scores ``values`` with the model and writes ``x=.. y=.. version=..`` lines to
    ``output`` (one file); returns the PipelineResult."""
    pipeline = beam.Pipeline()
    _ = (pipeline
         | beam.Create(model_zoo.make_examples(values))
         | bi.RunInference(bi.ModelSpec(model_path=model_path))
         | beam.Map(_line)
         | beam.io.WriteToText(output, shard_name_template=""))
    result = pipeline.run()
    result.wait_until_finish()
    return result


def _counters(result) -> dict[str, int]:
    metrics = result.metrics().query(MetricsFilter().with_namespace("beam_infer"))
    return {m.key.metric.name: m.committed for m in metrics["counters"]}


@pytest.mark.parametrize("folder_objects", [False, True], ids=["no_folder_objects",
                                                                "folder_objects"])
def test_model_uploaded_object_by_object_scores_from_a_version_dir_and_a_base_path(
        gcs, local_versions, folder_objects):
    bucket = gcs.new_bucket()
    base = f"gs://{bucket}/models/five"
    gcs.upload_tree(os.path.join(local_versions, "1"), f"{base}/1",
                    folder_objects=folder_objects)
    names = gcs.names(f"gs://{bucket}/")
    assert "models/five/1/saved_model.pb" in names
    assert any(n.endswith("/") for n in names) == folder_objects

    _score_to_gcs(f"{base}/1", f"gs://{bucket}/out/version_dir.txt")
    _score_to_gcs(base, f"gs://{bucket}/out/base_path.txt")

    assert sorted(gcs.read_text(f"gs://{bucket}/out/version_dir.txt").splitlines()) == [
        "x=1 y=5 version=0", "x=2 y=10 version=0"]
    assert sorted(gcs.read_text(f"gs://{bucket}/out/base_path.txt").splitlines()) == [
        "x=1 y=5 version=1", "x=2 y=10 version=1"]


def test_warmup_file_written_to_gcs_is_replayed_on_load(gcs, tmp_path):
    bucket = gcs.new_bucket()
    model = gcs.upload_tree(models.build_multiplier_model(str(tmp_path / "m"), 5.0),
                            f"gs://{bucket}/models/five/1")
    written = bi.write_warmup_requests(model, model_zoo.make_examples([1.0, 2.0]))
    assert written == f"{model}/assets.extra/tf_serving_warmup_requests"
    result = _score_to_gcs(model, f"gs://{bucket}/out/answers.txt")
    assert _counters(result)["warmup_records_replayed"] == 2


def test_half_uploaded_version_is_not_chosen(gcs, local_versions):
    bucket = gcs.new_bucket()
    base = f"gs://{bucket}/models/five"
    gcs.upload_tree(os.path.join(local_versions, "1"), f"{base}/1")
    gcs.upload_tree(os.path.join(local_versions, "2"), f"{base}/2")
    gcs.client().bucket(bucket).blob("models/five/2/variables/variables.index").delete()
    assert bi.SavedModelHandler(bi.ModelSpec(model_path=base)).model_version.version == 1


def test_missing_and_incomplete_gcs_paths_say_what_is_there(gcs):
    bucket = gcs.new_bucket()
    root = f"gs://{bucket}"
    blobs = gcs.client().bucket(bucket)
    blobs.blob("plain/weights.h5").upload_from_string(b"w")
    blobs.blob("base/1/").upload_from_string(b"")  # a console-made empty version folder
    blobs.blob("base/2/saved_model.pb").upload_from_string(b"")  # upload just started
    with pytest.raises(bi.ModelPathError) as missing:
        bi.RunInference(bi.ModelSpec(model_path=f"{root}/nope"))
    assert str(missing.value) == (
        f"model path '{root}/nope' does not exist: SavedModel file does not exist at: "
        f"{root}/nope/{{saved_model.pbtxt|saved_model.pb}}. Point model_path at a SavedModel "
        "directory (the folder that holds saved_model.pb and variables/).")
    with pytest.raises(bi.ModelPathError) as no_model:
        bi.RunInference(bi.ModelSpec(model_path=f"{root}/plain"))
    assert str(no_model.value) == (
        f"no SavedModel in '{root}/plain': SavedModel file does not exist at: "
        f"{root}/plain/{{saved_model.pbtxt|saved_model.pb}}; found: weights.h5. Export the "
        "model with tf.saved_model.save(...) or Keras model.export(...).")
    with pytest.raises(bi.ModelPathError) as incomplete:
        bi.RunInference(bi.ModelSpec(model_path=f"{root}/base"))
    assert str(incomplete.value) == (
        f"no complete model version under '{root}/base' for version policy latest(1); "
        "complete versions: none; incomplete (saved_model.pb or variables still missing): "
        f"1, 2. Export a SavedModel into a numbered folder such as '{root}/base/3', or "
        "point model_path at a SavedModel directory.")


def test_version_uploaded_into_a_gcs_base_path_mid_stream_is_served(gcs, local_versions,
                                                                    tmp_path):
    bucket = gcs.new_bucket()
    base = f"gs://{bucket}/models/five"
    gcs.upload_tree(os.path.join(local_versions, "1"), f"{base}/1")
    rate, duration = 20, 7.0
    uploader = threading.Timer(
        3.0, gcs.upload_tree, (os.path.join(local_versions, "2"), f"{base}/2"))
    uploader.start()
    try:
        result = streaming.run(
            ["--model_path", base, "--output", str(tmp_path / "out"), "--rate", str(rate),
             "--duration_secs", str(duration), "--poll_interval_secs", "0.5"],
            save_main_session=False)
    finally:
        uploader.join()
    rows = [dict(field.split("=") for field in line.split())
            for path in tmp_path.glob("out-*.txt") for line in path.read_text().splitlines()]
    xs = sorted(int(float(r["x"])) for r in rows)
    assert xs == list(range(len(xs))) and len(xs) >= rate * duration - 1
    versions = {int(r["version"]) for r in rows}
    assert versions == {1, 2}
    assert all(float(r["y"]) == 5 * int(r["version"]) * float(r["x"]) for r in rows)
    counters = _counters(result)
    assert counters["model_version_swaps"] == 1
    assert counters.get("model_load_failures", 0) == 0
