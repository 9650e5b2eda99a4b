"""Configuration mistakes fail while the pipeline is built, with messages that say what was
wrong, what was found and how to fix it. The messages are pinned."""

from __future__ import annotations

import os
import re

import apache_beam as beam
import pytest
from tfx_bsl.public.proto import model_spec_pb2

import beam_infer as bi


def _build(spec) -> None:
    bi.RunInference(spec)


def _message(error: pytest.ExceptionInfo, root: str) -> str:
    return str(error.value).replace(root, "<ROOT>")


def test_missing_model_path_names_the_path(tmp_path):
    with pytest.raises(bi.ModelPathError) as error:
        _build(bi.ModelSpec(model_path=str(tmp_path / "nope")))
    assert _message(error, str(tmp_path)) == (
        "model path '<ROOT>/nope' does not exist: SavedModel file does not exist at: "
        "<ROOT>/nope/{saved_model.pbtxt|saved_model.pb}. Point model_path at a SavedModel "
        "directory (the folder that holds saved_model.pb and variables/)."
    )


def test_directory_without_saved_model_lists_what_it_holds(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.h5").write_bytes(b"")
    with pytest.raises(bi.ModelPathError) as error:
        _build(bi.ModelSpec(model_path=str(tmp_path / "model")))
    assert _message(error, str(tmp_path)) == (
        "no SavedModel in '<ROOT>/model': SavedModel file does not exist at: "
        "<ROOT>/model/{saved_model.pbtxt|saved_model.pb}; found: weights.h5. Export the "
        "model with tf.saved_model.save(...) or Keras model.export(...)."
    )


def test_a_missing_model_is_an_oserror_as_in_tfx_bsl(tmp_path):
    # tfx-bsl's loader raises OSError("SavedModel file does not exist at: ..."); code that
    # catches it keeps working.
    with pytest.raises(OSError, match="SavedModel file does not exist"):
        _build(bi.ModelSpec(model_path=str(tmp_path)))


@pytest.mark.parametrize(("name", "advice"), [
    ("model.keras", "is a Keras model file, not a SavedModel directory. Export a SavedModel "
                    "from it and pass that folder: keras.models.load_model(path).export("
                    "'/models/m/1') (Keras 3), or tf.saved_model.save(model, '/models/m/1')."),
    ("weights.h5", "is a Keras model file, not a SavedModel directory."),
    ("notes.txt", "is a file; model_path names the SavedModel directory, the folder that "
                  "holds saved_model.pb and variables/."),
])
def test_a_model_file_says_what_to_pass_instead(tmp_path, name, advice):
    (tmp_path / name).write_bytes(b"x")
    with pytest.raises(bi.ModelPathError) as error:
        _build(bi.ModelSpec(model_path=str(tmp_path / name)))
    assert _message(error, str(tmp_path)).startswith(f"model path '<ROOT>/{name}' {advice}")


def test_the_saved_model_pb_file_itself_points_at_its_folder(zoo):
    with pytest.raises(bi.ModelPathError) as error:
        _build(bi.ModelSpec(model_path=f"{zoo.five}/saved_model.pb"))
    assert str(error.value) == (
        f"model path '{zoo.five}/saved_model.pb' is the saved_model.pb file of a SavedModel; "
        f"pass its folder instead: model_path='{zoo.five}'.")


def test_base_path_without_a_complete_version_fails_at_build(tmp_path):
    for version in ("1", "2", "10"):
        (tmp_path / "base" / version).mkdir(parents=True)
    with pytest.raises(bi.ModelPathError) as error:
        _build(bi.ModelSpec(model_path=str(tmp_path / "base")))
    assert _message(error, str(tmp_path)) == (
        "no complete model version under '<ROOT>/base' for version policy latest(1); "
        "complete versions: none; incomplete (saved_model.pb or variables still missing): "
        "1, 2, 10. Export a SavedModel into a numbered folder such as '<ROOT>/base/11', or "
        "point model_path at a SavedModel directory."
    )


def test_unknown_signature_lists_available_ones(zoo):
    with pytest.raises(bi.SignatureError) as error:
        _build(bi.ModelSpec(model_path=zoo.tf1, signature_names=("predikt",)))
    assert _message(error, zoo.tf1) == (
        "signature 'predikt' not found in <ROOT>; available: classify, classify_scores_only, "
        "dense_predict, predict, regress, serving_default, two_inputs. Pass one of them as "
        "ModelSpec(signature_names=(...)) (saved_model_spec.signature_name)."
    )


def test_unknown_signature_in_tfx_bsl_spec_fails_the_same_way(zoo):
    spec = model_spec_pb2.InferenceSpecType(saved_model_spec=model_spec_pb2.SavedModelSpec(
        model_path=zoo.five, signature_name=["classify"]))
    with pytest.raises(bi.SignatureError, match=re.escape(
            "signature 'classify' not found in " + zoo.five + "; available: serving_default.")):
        _build(spec)


def test_unknown_tags_list_available_tag_sets(zoo):
    with pytest.raises(bi.TagsError) as error:
        _build(bi.ModelSpec(model_path=zoo.tf1_gpu_tags))
    assert _message(error, zoo.tf1_gpu_tags) == (
        "tags {serve} not found in <ROOT>; available tag sets: {gpu, serve}. Pass one of them "
        "as ModelSpec(tags=...) (saved_model_spec.tag in an InferenceSpecType)."
    )


def test_requested_tags_are_used(zoo):
    handler = bi.SavedModelHandler(bi.ModelSpec(model_path=zoo.tf1_gpu_tags,
                                                tags=("gpu", "serve")))
    assert handler.plan.operation is bi.Operation.CLASSIFY


def test_predict_cannot_join_multi_inference(zoo):
    with pytest.raises(bi.SignatureError) as error:
        _build(bi.ModelSpec(model_path=zoo.tf1, signature_names=("classify", "predict")))
    assert _message(error, zoo.tf1) == (
        "several signatures were asked of <ROOT>: classify (tensorflow/serving/classify), "
        "predict (tensorflow/serving/predict); only classify and regress signatures combine "
        "into one multi-inference call. Run predict signatures in separate RunInference steps."
    )


def test_errors_surface_when_the_pipeline_is_built_not_run(tmp_path):
    pipeline = beam.Pipeline()
    with pytest.raises(bi.ModelPathError):
        _ = pipeline | beam.Create([b""]) | bi.RunInference(
            bi.ModelSpec(model_path=os.fspath(tmp_path / "missing")))


def test_remote_spec_is_refused_with_a_pointer_to_tfx_bsl():
    spec = model_spec_pb2.InferenceSpecType(
        ai_platform_prediction_model_spec=model_spec_pb2.AIPlatformPredictionModelSpec(
            project_id="p", model_name="m"))
    with pytest.raises(bi.ConfigurationError) as error:
        _build(spec)
    assert str(error.value) == (
        "InferenceSpecType sets ai_platform_prediction_model_spec; beam_infer runs SavedModels "
        "in process and needs saved_model_spec { model_path: ... }. To call a remote endpoint "
        "use tfx_bsl.public.beam.RunInference."
    )


def test_wrong_spec_type_shows_an_example():
    with pytest.raises(bi.ConfigurationError) as error:
        _build("/models/five")
    assert str(error.value) == (
        "RunInference needs a beam_infer.ModelSpec or a tfx_bsl InferenceSpecType; got str. "
        'Example: bi.RunInference(bi.ModelSpec(model_path="/models/five"))'
    )
