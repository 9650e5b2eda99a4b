"""What beam_infer adds to Beam's TF handlers: any Beam filesystem, SavedModel folders, errors.

Beam's own tests of these handlers are ported in ``tests/test_beam_tf_handlers.py``; these
cover what beam_infer does beyond them. Remote models live in ``tests/object_store.py``'s
in-memory ``memobjects://`` filesystem.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import pathlib
import tempfile
import uuid

import apache_beam as beam
import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

import beam_infer as bi
from beam_infer import tensorflow_inference
from beam_infer._messages import MAX_MESSAGE_CHARS
from tests.support import object_store
from tests.support.beam_helpers import run_collect

X = [np.array([1.0, 2.0, 3.0], np.float32), np.array([10.0, 20.0, 30.0], np.float32)]


def _keras3(factor: float) -> keras.Model:
    inputs = keras.Input(shape=(3,))
    scale = keras.layers.Dense(3, use_bias=False,
                               kernel_initializer=keras.initializers.Identity(gain=factor))
    return keras.Model(inputs, scale(inputs))


class _Times(tf.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = tf.Variable(factor)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def __call__(self, x):
        return x * self.factor


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("beam_api")
    _keras3(2.0).save(str(root / "two.keras"))
    _keras3(3.0).save_weights(str(root / "three.weights.h5"))
    tf.saved_model.save(_Times(4.0), str(root / "module"))
    inputs = tf_keras.Input(shape=(3,))
    scale = tf_keras.layers.Dense(
        3, use_bias=False, kernel_initializer=tf_keras.initializers.Identity(gain=5.0))
    tf_keras.Model(inputs, scale(inputs)).save(str(root / "tf_keras"))
    _keras3(6.0).export(str(root / "exported"), verbose=False)
    return {p.name: str(p) for p in root.iterdir()}


@pytest.fixture
def bucket() -> str:
    name = f"bucket-{uuid.uuid4().hex[:12]}"
    yield name
    object_store.clear(name)


def _upload_file(local: str, name: str) -> str:
    with open(local, "rb") as f:
        object_store.put(name, f.read())
    return object_store.PREFIX + name


def _scores(handler) -> list[list[float]]:
    results = handler.run_inference(X, handler.load_model())
    return [np.asarray(r.inference).tolist() for r in results]


# --- Beam's signatures, checked against Beam's own source ---------------------------------


def _beam_init_parameters() -> dict[str, list[tuple[str, str | None, str]]]:
    """Each Beam handler's ``__init__`` parameters (name, default, kind), read from source.

    Beam's module cannot be imported here (it imports tensorflow_hub), so it is parsed.
    """
    spec = importlib.util.find_spec("apache_beam.ml.inference.base")
    source = pathlib.Path(spec.origin).with_name("tensorflow_inference.py").read_text()
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name.startswith("TFModelHandler"):
            init = next(f for f in node.body if getattr(f, "name", "") == "__init__")
            args = init.args
            positional = args.args[1:]
            defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
            params = [(a.arg, ast.unparse(d) if d else None, "positional")
                      for a, d in zip(positional, defaults, strict=True)]
            params += [(a.arg, ast.unparse(d) if d else None, "keyword")
                       for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
            found[node.name] = params
    return found


@pytest.mark.parametrize("name", ["TFModelHandlerNumpy", "TFModelHandlerTensor"])
def test_the_constructors_take_beams_parameters_in_beams_order_with_beams_defaults(name):
    beam_params = _beam_init_parameters()[name]
    ours = inspect.signature(getattr(bi, name).__init__).parameters
    names = [n for n in ours if n not in ("self", "kwargs")]
    # beam_infer adds one keyword, model_cache, after Beam's.
    assert names == [n for n, _, _ in beam_params] + ["model_cache"]
    assert ours["kwargs"].kind == inspect.Parameter.VAR_KEYWORD
    for param, default, kind in beam_params:
        ours_param = ours[param]
        assert (ours_param.kind is inspect.Parameter.KEYWORD_ONLY) == (kind == "keyword")
        if default is None:
            assert ours_param.default is inspect.Parameter.empty
        elif default.startswith("ModelType."):
            assert ours_param.default is getattr(bi.ModelType, default.split(".")[1])
        elif default.startswith("default_"):
            assert ours_param.default is getattr(bi, default)
        else:
            assert ours_param.default == ast.literal_eval(default), param


def test_the_names_import_from_beam_infer_and_from_beams_module_path():
    from beam_infer.tensorflow_inference import TFModelHandlerNumpy as Numpy

    assert Numpy is bi.TFModelHandlerNumpy
    assert tensorflow_inference.TFModelHandlerTensor is bi.TFModelHandlerTensor
    assert tensorflow_inference.ModelType is bi.ModelType
    assert [m.name for m in bi.ModelType] == ["SAVED_MODEL", "SAVED_WEIGHTS"]
    assert bi.TFModelHandlerNumpy("m").get_metrics_namespace() == "BeamML_TF_Numpy"
    assert bi.TFModelHandlerTensor("m").get_metrics_namespace() == "BeamML_TF_Tensor"


def test_batching_and_sharing_keywords_reach_beams_model_handler():
    handler = bi.TFModelHandlerNumpy("m", min_batch_size=2, max_batch_size=8,
                                     max_batch_duration_secs=3, model_copies=2)
    assert handler.batch_elements_kwargs() == {
        "min_batch_size": 2, "max_batch_size": 8, "max_batch_duration_secs": 3}
    assert handler.share_model_across_processes() and handler.model_copies() == 2
    assert not bi.TFModelHandlerTensor("m").share_model_across_processes()


# --- loading --------------------------------------------------------------------------------


def test_a_keras_file_scores_with_the_uri_as_model_id(models):
    handler = bi.TFModelHandlerNumpy(models["two.keras"])
    results = list(handler.run_inference(X, handler.load_model()))
    assert [r.model_id for r in results] == [models["two.keras"]] * 2
    np.testing.assert_allclose(results[1].inference, [20.0, 40.0, 60.0])


def test_saved_model_folders_load_under_keras_3(models):
    assert _scores(bi.TFModelHandlerNumpy(models["module"]))[0] == [4.0, 8.0, 12.0]
    tf_keras_handler = bi.TFModelHandlerNumpy(models["tf_keras"])
    model = tf_keras_handler.load_model()
    assert isinstance(model, tf_keras.Model)  # a Keras 2 SavedModel keeps predict()
    assert model.predict(np.stack(X), verbose=0)[0].tolist() == [5.0, 10.0, 15.0]


def test_a_saved_model_without_call_says_which_inference_fn_to_pass(models):
    handler = bi.TFModelHandlerNumpy(models["exported"])
    model = handler.load_model()
    with pytest.raises(TypeError, match=r"not callable.*signatures: serve, serving_default"):
        handler.run_inference(X, model)

    def serve(model, batch, inference_args, model_id=None):
        return bi.default_numpy_inference_fn(model.serve, batch, inference_args, model_id)

    custom = bi.TFModelHandlerNumpy(models["exported"], inference_fn=serve)
    assert _scores(custom)[0] == [6.0, 12.0, 18.0]


def test_saved_weights_and_custom_weights(models):
    weights = bi.TFModelHandlerNumpy(models["three.weights.h5"], bi.ModelType.SAVED_WEIGHTS,
                                     lambda: _keras3(0.0))
    assert _scores(weights)[0] == [3.0, 6.0, 9.0]
    custom = bi.TFModelHandlerNumpy(models["two.keras"], custom_weights=models["three.weights.h5"])
    assert _scores(custom)[0] == [3.0, 6.0, 9.0]


def test_update_model_path_loads_the_new_model_and_names_it(models):
    handler = bi.TFModelHandlerNumpy(models["two.keras"])
    handler.update_model_path(models["module"])
    results = list(handler.run_inference(X, handler.load_model()))
    assert results[0].model_id == models["module"]
    assert np.asarray(results[0].inference).tolist() == [4.0, 8.0, 12.0]
    handler.update_model_path(None)  # Beam keeps the path it has
    assert handler.run_inference(X[:1], handler.load_model())[0].model_id == models["module"]


# --- remote models: any Beam filesystem -----------------------------------------------------


def test_a_remote_keras_file_is_copied_for_the_load_then_removed(models, bucket, tmp_path,
                                                                 monkeypatch):
    uri = _upload_file(models["two.keras"], f"{bucket}/models/two.keras")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    handler = bi.TFModelHandlerNumpy(uri)
    results = list(handler.run_inference(X, handler.load_model()))
    assert results[0].model_id == uri
    np.testing.assert_allclose(results[0].inference, [2.0, 4.0, 6.0])
    assert not [p for p in os.listdir(tmp_path) if p.startswith("beam_infer-file-")]


def test_a_remote_saved_model_goes_through_the_model_cache_once(models, bucket, tmp_path):
    uri = object_store.upload_dir(models["module"], f"{bucket}/models/module")
    cache = bi.ModelCache(directory=str(tmp_path / "cache"))
    handler = bi.TFModelHandlerTensor(uri, model_cache=cache)
    first = handler.load_model()
    entries = [e for e in os.listdir(cache.directory) if not e.endswith(".lock")]
    assert len(entries) == 1
    marker = os.path.join(cache.directory, entries[0], "model", "saved_model.pb")
    inode = os.stat(marker).st_ino
    second = handler.load_model()  # reused, not copied again
    assert os.stat(marker).st_ino == inode
    for model in (first, second):
        result = handler.run_inference([tf.constant(X[0])], model)[0]
        assert result.inference.numpy().tolist() == [4.0, 8.0, 12.0]


def test_remote_weights_load(models, bucket):
    uri = _upload_file(models["three.weights.h5"], f"{bucket}/w/three.weights.h5")
    handler = bi.TFModelHandlerNumpy(uri, bi.ModelType.SAVED_WEIGHTS, lambda: _keras3(0.0))
    assert _scores(handler)[1] == [30.0, 60.0, 90.0]
    keras_uri = _upload_file(models["two.keras"], f"{bucket}/w/two.keras")
    custom = bi.TFModelHandlerNumpy(keras_uri, custom_weights=uri)
    assert _scores(custom)[0] == [3.0, 6.0, 9.0]


def test_a_remote_model_in_a_pipeline_keyed(models, bucket, tmp_path):
    uri = _upload_file(models["two.keras"], f"{bucket}/two.keras")
    handler = KeyedModelHandler(bi.TFModelHandlerNumpy(uri, max_batch_size=2))
    outputs, _ = run_collect(lambda p: {"results": (
        p | beam.Create([("a", X[0]), ("b", X[1])]) | RunInference(handler)
        | beam.MapTuple(lambda key, r: (key, r.model_id, np.asarray(r.inference).tolist())))},
        str(tmp_path))
    assert sorted(outputs["results"]) == [("a", uri, [2.0, 4.0, 6.0]),
                                          ("b", uri, [20.0, 40.0, 60.0])]


# --- errors: what was wrong, what was found, how to fix it -----------------------------------


def test_a_missing_path_is_a_value_error_naming_what_is_there(models, bucket):
    folder = os.path.dirname(models["two.keras"])
    with pytest.raises(bi.ModelPathError, match=r"does not exist.*Its folder holds: .*two\.keras"):
        bi.TFModelHandlerNumpy(os.path.join(folder, "too.keras")).load_model()
    object_store.put(f"{bucket}/models/one.keras", b"x")
    with pytest.raises(ValueError, match=r"memobjects://.*/nothing' does not exist.*one\.keras"):
        bi.TFModelHandlerNumpy(f"memobjects://{bucket}/models/nothing").load_model()


def test_a_saved_model_pb_file_or_a_versions_folder_says_what_to_pass(models, tmp_path):
    pb = os.path.join(models["module"], "saved_model.pb")
    with pytest.raises(ValueError, match=r"saved_model\.pb file of a SavedModel; pass its "
                                         r"folder instead: model_uri='.*module'"):
        bi.TFModelHandlerNumpy(pb).load_model()
    for version in ("1", "2", "10"):
        (tmp_path / "base" / version).mkdir(parents=True)
    with pytest.raises(bi.ModelPathError, match=r"numbered version folders \(1, 2, 10\).*/10'"):
        bi.TFModelHandlerNumpy(str(tmp_path / "base")).load_model()


def test_a_weights_file_loaded_as_a_model_points_at_saved_weights(models):
    with pytest.raises(bi.ModelLoadError, match=r"Unable to load.*looks like a weights "
                                                r"file.*ModelType\.SAVED_WEIGHTS") as e:
        bi.TFModelHandlerNumpy(models["three.weights.h5"]).load_model()
    assert isinstance(e.value, ValueError)  # what Beam raises
    with pytest.raises(ValueError, match="create_model_fn must be passed"):
        bi.TFModelHandlerNumpy(models["three.weights.h5"], bi.ModelType.SAVED_WEIGHTS).load_model()


@pytest.mark.skipif(importlib.util.find_spec("tensorflow_hub") is not None,
                    reason="tensorflow_hub is installed: it would download the handle")
def test_a_tf_hub_address_without_tensorflow_hub_says_so():
    with pytest.raises(ValueError, match=r"web address.*needs tensorflow_hub, which is not "
                                         r"installed. Download the model"):
        tensorflow_inference._load_model("https://tfhub.dev/google/x/1", "", {})


def test_construction_errors():
    with pytest.raises(bi.UnknownArgumentError, match=r"'max_batch_szie' \(did you mean "
                                                      r"'max_batch_size'"):
        bi.TFModelHandlerNumpy("m", max_batch_szie=4)
    with pytest.raises(bi.ConfigurationError, match=r"model_type=.*got 'SAVED_WEIGHTS'"):
        bi.TFModelHandlerTensor("m", "SAVED_WEIGHTS")
    with pytest.raises(bi.ConfigurationError, match=r"model_uri=.*takes a path.*got int"):
        bi.TFModelHandlerNumpy(3)
    with pytest.raises(bi.ConfigurationError, match=r"inference_fn=.*must be a function"):
        bi.TFModelHandlerNumpy("m", inference_fn="fn")


def test_arrays_that_do_not_stack_name_their_shapes(models):
    handler = bi.TFModelHandlerNumpy(models["two.keras"])
    with pytest.raises(bi.InputError, match=r"do not stack.*float32\[2\], float32\[3\]"):
        handler.run_inference([X[0], X[0][:2]], handler.load_model())


def test_error_text_is_bounded(tmp_path):
    long_uri = os.path.join(str(tmp_path), *[c * 240 for c in "abcdefghij"], "m.keras")
    with pytest.raises(ValueError) as e:
        bi.TFModelHandlerNumpy(long_uri).load_model()
    assert len(str(e.value)) <= MAX_MESSAGE_CHARS
    assert "characters cut]" in str(e.value)


def test_get_num_bytes_counts_the_data():
    arrays = [np.zeros((10, 10), np.float32), np.zeros(5, np.int64)]
    assert bi.TFModelHandlerNumpy("m").get_num_bytes(arrays) == 400 + 40
    tensors = [tf.zeros((10, 10)), tf.constant([b"abc", b"de"])]
    assert bi.TFModelHandlerTensor("m").get_num_bytes(tensors) == 400 + 5
