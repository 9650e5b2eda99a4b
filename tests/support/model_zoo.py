"""Small, deterministic SavedModels of every flavour ``beam_infer`` has to score.

Each builder writes one SavedModel into ``path`` (weights set exactly, no training) and returns
the path as a ``str``. All models compute ``y = factor * x`` from the float feature ``x``
(fixed length 1), so expected outputs are easy to write down in tests. Builders that take
serialized ``tf.train.Example``s follow the TF Serving / tfx-bsl convention: a 1-D ``DT_STRING``
input parsed in-graph with ``tf.io.parse_example``.

TF2 exports (``tf.saved_model.save``, ``keras.Model.export``, tf-keras ``model.save``) always
write ``method_name: "tensorflow/serving/predict"`` into ``saved_model.pb``; only the TF1
``SavedModelBuilder`` exports keep ``classify`` / ``regress`` method names. After
``tf.saved_model.load``, TF1 signatures are callable like TF2 ones: keyword arguments named by
the input aliases, e.g. ``loaded.signatures["classify"](inputs=t)``, returning a dict keyed by
output alias (a single-input signature also accepts one positional tensor).

Checked with tensorflow 2.21, keras 3.15, tf-keras 2.21, apache-beam 2.77 and tfx-bsl 1.21:
every signature returns the expected values through ``tf.saved_model.load``, and tfx-bsl's
``RunInference`` (``SavedModelSpec(model_path=..., signature_name=[...])``, DirectRunner,
``beam.Create`` of ``tf.train.Example``s) gives::

    builder / signature [method]: inputs -> outputs                        tfx-bsl RunInference
    keras3_export
      serve, serving_default [predict]: x f32[None,1] -> output_0 f32[None,1]  no: E1, construct
    keras3_export_examples
      serving_default [predict]: examples str[None] -> output_0 f32[None,1]    no: E2, run
      the same with track_tf_variables=True                                    yes
    tf_module_examples
      serving_default [predict]: examples str[None] -> output_0 f32[None,1]    yes
      predict_two_outputs [predict]: examples -> y, y_squared f32[None,1]      yes
      serving_sequence [predict]: examples (SequenceExample) -> output_0       yes
      two of them in one spec                                                  no: E3, construct
    tf_keras_examples
      serving_default [predict]: examples str[None] -> output_0 f32[None,1]    yes
    tf1_estimator_style (tags {"serve"}; one shared input tensor)
      serving_default, classify [classify]: inputs str[None]
          -> classes str[None,2], scores f32[None,2]                           yes
      classify_scores_only [classify]: inputs -> scores f32[None,2]            yes, labels ""
      regress [regress]: inputs -> outputs f32[None,1]                         yes
      predict [predict]: examples str[None] -> outputs f32[None,1]             yes
      any mix of the classify / regress signatures                             yes, multi-inference
      classify + predict                                                       no: E3, construct
      two_inputs [predict]: examples str[None], extra f32[None,1] -> outputs   no: E4, construct
      dense_predict [predict]: x f32[None,1] -> outputs f32[None,1]            no: E1, construct
      a signature name the model lacks                                         no: E5, construct
      classify fed tf.train.SequenceExamples                                   no: E6, run
    tf1_with_extra_tags (same graph, tags {"serve", "gpu"} only)
      default tags                                                             no: E7, construct
      SavedModelSpec(tag=["serve", "gpu"])                                     yes

"construct" errors are raised while ``RunInference`` is applied, "run" errors by
``pipeline.run()`` (the DirectRunner re-raises ``ValueError`` as is, TF errors as
``RuntimeError``):

* E1 ``ValueError: Input dtype is expected to be 7, got 1``
* E2 ``RuntimeError: tensorflow.python.framework.errors_impl.FailedPreconditionError: Graph
  execution error: ... Could not find variable dense/bias. ...`` (see
  :func:`keras3_export_examples`)
* E3 ``ValueError: Unsupported signature method_name for multi-head model inference:
  tensorflow/serving/predict``
* E4 ``ValueError: Signature should have 1 and only 1 inputs``
* E5 ``RuntimeError: Signature <name> could not be found in SavedModel``
* E6 ``ValueError: Classify only supports raw or serialized tf.train.Example``
* E7 ``RuntimeError: MetaGraphDef associated with tags ['serve'] could not be found in
  SavedModel``

Classify scores are softmax([0, factor * x]), e.g. [0.0067, 0.9933] for x = 1 and factor = 5.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import tensorflow as tf

PathLike = str | os.PathLike[str]

#: Signature names :func:`tf_module_examples` can export.
TF_MODULE_SIGNATURES = ("serving_default", "predict_two_outputs", "serving_sequence")

_EXAMPLES_SPEC = tf.TensorSpec(shape=[None], dtype=tf.string, name="examples")
_FEATURE_SPEC = {"x": tf.io.FixedLenFeature([1], tf.float32)}
_CLASS_LABELS = (b"neg", b"pos")


def make_examples(values: Iterable[float]) -> list[tf.train.Example]:
    """Builds one ``tf.train.Example`` per value, with the float feature ``x``.

    Args:
        values: The value of ``x`` for each example.

    Returns:
        The examples, in the order of ``values``.
    """
    return [
        tf.train.Example(
            features=tf.train.Features(
                feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)]))}
            )
        )
        for v in values
    ]


def make_sequence_examples(values: Iterable[float]) -> list[tf.train.SequenceExample]:
    """Builds one ``tf.train.SequenceExample`` per value, with the float context feature ``x``.

    Args:
        values: The value of the context feature ``x`` for each sequence example.

    Returns:
        The sequence examples, in the order of ``values``.
    """
    return [
        tf.train.SequenceExample(
            context=tf.train.Features(
                feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)]))}
            )
        )
        for v in values
    ]


def _keras3_model(factor: float) -> Any:
    """Returns a Keras 3 functional model ``x -> Dense(1)`` with kernel ``factor``, bias 0."""
    import keras  # Keras 3; imported lazily so importing this module stays cheap.

    inputs = keras.Input(shape=(1,), name="x", dtype="float32")
    dense = keras.layers.Dense(1, name="dense")
    model = keras.Model(inputs, dense(inputs), name="keras3_model")
    dense.kernel.assign([[factor]])
    dense.bias.assign([0.0])
    return model


def keras3_export(path: PathLike, *, factor: float = 5.0) -> str:
    """Exports a Keras 3 model with ``model.export`` (dense float input, no Example parsing).

    ``model.export`` writes two identical endpoints, ``serve`` and ``serving_default``, both
    ``tensorflow/serving/predict`` with input ``x`` float32 [None, 1] (the alias is the
    ``keras.Input`` name) and output ``output_0`` float32 [None, 1].

    Args:
        path: Directory to write the SavedModel to.
        factor: The Dense kernel value.

    Returns:
        ``path`` as a string.
    """
    path = os.fspath(path)
    _keras3_model(factor).export(path, format="tf_saved_model", verbose=False)
    return path


def keras3_export_examples(
    path: PathLike, *, factor: float = 5.0, track_tf_variables: bool = False
) -> str:
    """Saves a ``tf.Module`` wrapping a Keras 3 model, with an Example-parsing signature.

    ``serving_default`` (predict): ``examples`` string [None] -> ``output_0`` float32 [None, 1].
    ``tf.saved_model.load`` runs it correctly. tfx-bsl's ``RunInference`` accepts it at pipeline
    construction but fails when the first batch runs, because its TF1 loader
    (``tf.compat.v1.saved_model.loader.load`` into a Session) only restores the variables in the
    ``saver_def``: the checkpoint holds copies named ``Variable``/``Variable_1`` while the serving
    function reads the never-initialised handles ``dense/kernel`` and ``dense/bias``. The
    DirectRunner raises ``RuntimeError: tensorflow.python.framework.errors_impl.
    FailedPreconditionError: Graph execution error: ... Could not find variable dense/bias. This
    could mean that the variable has been deleted. In TF1, it can also mean the variable is
    uninitialized.`` (``dense/kernel`` instead, depending on which read runs first).

    Args:
        path: Directory to write the SavedModel to.
        factor: The Dense kernel value.
        track_tf_variables: Also attach the backing ``tf.Variable``s to the module (what
            ``keras.Model.export`` does). This is the workaround: TF1 loaders, tfx-bsl included,
            then restore and run the model.

    Returns:
        ``path`` as a string.
    """
    path = os.fspath(path)
    module = tf.Module()
    module.model = _keras3_model(factor)
    if track_tf_variables:
        module.tf_variables = [weight.value for weight in module.model.weights]

    @tf.function(input_signature=[_EXAMPLES_SPEC])
    def serve(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        features = tf.io.parse_example(examples, _FEATURE_SPEC)
        return {"output_0": module.model(features["x"], training=False)}

    tf.saved_model.save(module, path, signatures={"serving_default": serve})
    return path


def tf_module_examples(
    path: PathLike,
    *,
    factor: float = 5.0,
    signatures: Sequence[str] = ("serving_default",),
) -> str:
    """Saves a plain ``tf.Module`` (one ``tf.Variable`` weight) with Example-parsing signatures.

    Available signatures (all ``tensorflow/serving/predict``), pick with ``signatures``:

    * ``serving_default``: ``examples`` string [None] -> ``output_0`` float32 [None, 1].
    * ``predict_two_outputs``: ``examples`` string [None] -> ``y`` = factor * x and
      ``y_squared`` = y ** 2, both float32 [None, 1].
    * ``serving_sequence``: ``examples`` string [None] of serialized ``tf.train.SequenceExample``
      (context feature ``x``) -> ``output_0`` float32 [None, 1].

    Args:
        path: Directory to write the SavedModel to.
        factor: The weight value.
        signatures: Names (from :data:`TF_MODULE_SIGNATURES`) of the signatures to export.

    Returns:
        ``path`` as a string.

    Raises:
        ValueError: If ``signatures`` is empty or names an unknown signature.
    """
    unknown = sorted(set(signatures) - set(TF_MODULE_SIGNATURES))
    if unknown or not signatures:
        raise ValueError(f"signatures must be a non-empty subset of {TF_MODULE_SIGNATURES}")
    path = os.fspath(path)
    module = tf.Module()
    module.w = tf.Variable(factor, dtype=tf.float32, name="w")

    @tf.function(input_signature=[_EXAMPLES_SPEC])
    def serving_default(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        x = tf.io.parse_example(examples, _FEATURE_SPEC)["x"]
        return {"output_0": module.w * x}

    @tf.function(input_signature=[_EXAMPLES_SPEC])
    def predict_two_outputs(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        y = module.w * tf.io.parse_example(examples, _FEATURE_SPEC)["x"]
        return {"y": y, "y_squared": tf.square(y)}

    @tf.function(input_signature=[_EXAMPLES_SPEC])
    def serving_sequence(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        context, _, _ = tf.io.parse_sequence_example(examples, context_features=_FEATURE_SPEC)
        return {"output_0": module.w * context["x"]}

    functions = {
        "serving_default": serving_default,
        "predict_two_outputs": predict_two_outputs,
        "serving_sequence": serving_sequence,
    }
    tf.saved_model.save(module, path, signatures={name: functions[name] for name in signatures})
    return path


def tf_module_tensors(path: PathLike, *, factor: float = 5.0) -> str:
    """Saves a ``tf.Module`` whose predict signatures take named tensors, not Examples.

    * ``serving_default``: ``x`` float32 [None, 2], ``count`` int64 [None], ``label`` string
      [None] -> ``total`` = factor * sum(x) * count float32 [None], ``doubled`` = 2 * x
      float32 [None, 2], ``shout`` = upper(label) string [None].
    * ``scalar``: ``v`` float32 [None] -> ``y`` = factor * v float32 [None].
    * ``text_length``: ``text`` string [None] (raw text) -> ``length`` int32 [None], the
      length in UTF-8 characters.

    Args:
        path: Directory to write the SavedModel to.
        factor: The weight value.

    Returns:
        ``path`` as a string.
    """
    path = os.fspath(path)
    module = tf.Module()
    module.w = tf.Variable(factor, dtype=tf.float32, name="w")

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x"),
                                  tf.TensorSpec([None], tf.int64, name="count"),
                                  tf.TensorSpec([None], tf.string, name="label")])
    def serving_default(x: tf.Tensor, count: tf.Tensor, label: tf.Tensor
                        ) -> dict[str, tf.Tensor]:
        total = module.w * tf.reduce_sum(x, axis=1) * tf.cast(count, tf.float32)
        return {"total": total, "doubled": 2.0 * x, "shout": tf.strings.upper(label)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="v")])
    def scalar(v: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": module.w * v}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def text_length(text: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"length": tf.strings.length(text, unit="UTF8_CHAR")}

    tf.saved_model.save(module, path, signatures={
        "serving_default": serving_default, "scalar": scalar, "text_length": text_length})
    return path


def variable_length_tokens(path: PathLike) -> str:
    """Saves a ``tf.Module`` whose input has a variable-length dimension.

    ``serving_default``: ``tokens`` int32 [None, None] -> ``total`` int32 [None] (sum of the
    tokens) and ``length`` int64 [None] (number of non-zero tokens), so padding with zeros
    does not change the answers.

    Args:
        path: Directory to write the SavedModel to.

    Returns:
        ``path`` as a string.
    """
    path = os.fspath(path)
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="tokens")])
    def serving_default(tokens: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"total": tf.reduce_sum(tokens, axis=1),
                "length": tf.math.count_nonzero(tokens, axis=1)}

    tf.saved_model.save(module, path, signatures={"serving_default": serving_default})
    return path


def tf_keras_examples(path: PathLike, *, factor: float = 5.0) -> str:
    """Saves a tf-keras (Keras 2) model with ``model.save(save_format="tf", signatures=...)``.

    The serving function is the one from the TFX blog post: it parses ``examples`` and returns
    ``model(features, training=False)``, a bare tensor, which ``tf.saved_model`` names
    ``output_0``. ``serving_default``: ``examples`` string [None] -> ``output_0`` float32
    [None, 1], ``tensorflow/serving/predict``.

    Args:
        path: Directory to write the SavedModel to.
        factor: The Dense kernel value.

    Returns:
        ``path`` as a string.
    """
    import tf_keras  # Keras 2; imported lazily so importing this module stays cheap.

    path = os.fspath(path)
    inputs = tf_keras.Input(shape=(1,), name="x", dtype="float32")
    dense = tf_keras.layers.Dense(1, name="dense")
    model = tf_keras.Model(inputs, dense(inputs), name="tf_keras_model")
    dense.kernel.assign([[factor]])
    dense.bias.assign([0.0])

    @tf.function(input_signature=[_EXAMPLES_SPEC])
    def serve_tf_examples_fn(serialized_tf_examples: tf.Tensor) -> tf.Tensor:
        features = tf.io.parse_example(serialized_tf_examples, _FEATURE_SPEC)
        return model(features, training=False)

    model.save(path, save_format="tf", signatures={"serving_default": serve_tf_examples_fn})
    return path


def _tf1_build(path: str, factor: float, tags: Sequence[str]) -> str:
    """Writes the estimator-style TF1 graph under ``tags`` (see :func:`tf1_estimator_style`)."""
    sig_utils = tf.compat.v1.saved_model.signature_def_utils
    graph = tf.Graph()
    with graph.as_default():
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="input_example_tensor")
        x = tf.io.parse_example(serialized, _FEATURE_SPEC)["x"]
        w = tf.compat.v1.Variable(factor, dtype=tf.float32, name="w")
        y = tf.identity(w * x, name="y")
        logits = tf.concat([tf.zeros_like(y), y], axis=1)
        scores = tf.nn.softmax(logits, name="scores")
        classes = tf.tile(tf.constant([list(_CLASS_LABELS)]), [tf.shape(y)[0], 1], name="classes")
        extra = tf.compat.v1.placeholder(tf.float32, [None, 1], name="extra")
        dense_x = tf.compat.v1.placeholder(tf.float32, [None, 1], name="dense_x")
        classify = sig_utils.classification_signature_def(serialized, classes, scores)
        signature_def_map = {
            "serving_default": classify,
            "classify": classify,
            "classify_scores_only": sig_utils.classification_signature_def(
                serialized, None, scores
            ),
            "regress": sig_utils.regression_signature_def(serialized, y),
            "predict": sig_utils.predict_signature_def({"examples": serialized}, {"outputs": y}),
            "two_inputs": sig_utils.predict_signature_def(
                {"examples": serialized, "extra": extra}, {"outputs": y + extra}
            ),
            "dense_predict": sig_utils.predict_signature_def(
                {"x": dense_x}, {"outputs": w * dense_x}
            ),
        }
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(
                sess, list(tags), signature_def_map=signature_def_map, strip_default_attrs=True
            )
            builder.save()
    return path


def tf1_estimator_style(path: PathLike, *, factor: float = 5.0) -> str:
    """Saves an estimator-style TF1 graph (Session + ``SavedModelBuilder``) under tags {"serve"}.

    The input of every Example signature is the same string placeholder
    ``input_example_tensor:0`` [None], so several classify/regress signatures can be run together
    (tfx-bsl multi-inference). With y = w * x, w a Variable equal to ``factor``:

    * ``serving_default``, ``classify`` (classify): ``inputs`` -> ``classes`` string [None, 2]
      (always ``[b"neg", b"pos"]``) and ``scores`` float32 [None, 2] = softmax([0, y]).
    * ``classify_scores_only`` (classify): ``inputs`` -> ``scores`` only.
    * ``regress`` (regress): ``inputs`` -> ``outputs`` float32 [None, 1] = y.
    * ``predict`` (predict): ``examples`` -> ``outputs`` float32 [None, 1] = y.
    * ``two_inputs`` (predict): ``examples`` and ``extra`` float32 [None, 1] -> ``outputs``
      = y + extra.
    * ``dense_predict`` (predict): ``x`` float32 [None, 1] -> ``outputs`` = w * x.

    ``SavedModelBuilder`` refuses a ``path`` that exists and is not empty.

    Args:
        path: Directory to write the SavedModel to.
        factor: The weight value.

    Returns:
        ``path`` as a string.
    """
    return _tf1_build(os.fspath(path), factor, [tf.saved_model.SERVING])


def tf1_with_extra_tags(
    path: PathLike, *, factor: float = 5.0, tags: Sequence[str] = ("serve", "gpu")
) -> str:
    """Saves the :func:`tf1_estimator_style` graph under ``tags`` only (no plain {"serve"}).

    For "unknown tags" tests: loaders asked for {"serve"} must fail, and
    ``tf.saved_model.load(path)`` works without ``tags=`` because there is one MetaGraph.

    Args:
        path: Directory to write the SavedModel to.
        factor: The weight value.
        tags: The MetaGraph tags.

    Returns:
        ``path`` as a string.
    """
    return _tf1_build(os.fspath(path), factor, tags)


def versioned(
    base_path: PathLike,
    builder: Callable[..., str],
    versions: Iterable[int] = (1, 2),
    *,
    factor: float = 5.0,
    **kwargs: Any,
) -> str:
    """Writes ``base_path/<version>`` for each version, TF Serving style.

    Version ``v`` is built with ``factor * v``, so each version gives different outputs.

    Args:
        base_path: Parent directory of the version directories.
        builder: One of the builders of this module.
        versions: Version numbers (positive integers).
        factor: The factor of version 1.
        **kwargs: Further keyword arguments for ``builder``.

    Returns:
        ``base_path`` as a string.
    """
    base_path = os.fspath(base_path)
    for version in versions:
        builder(os.path.join(base_path, str(int(version))), factor=factor * version, **kwargs)
    return base_path


#: Values of ``x`` that :func:`poison_examples` refuses (InvalidArgumentError).
POISON_FROM = 1000.0


def poison_examples(path: PathLike, *, factor: float = 5.0) -> str:
    """Like :func:`tf_module_examples`' ``serving_default``, but fails on large inputs.

    A batch holding any example with ``x >= POISON_FROM`` fails as a whole with
    ``InvalidArgumentError: x must be below 1000``: a valid example the model cannot
    score, which only isolation can find. The module also counts its calls in the
    variable ``calls``.

    Args:
        path: Directory to write the SavedModel to.
        factor: The weight value.

    Returns:
        ``path`` as a string.
    """
    path = os.fspath(path)
    module = tf.Module()
    module.w = tf.Variable(factor, dtype=tf.float32, name="w")
    module.calls = tf.Variable(0, dtype=tf.int64, name="calls")

    @tf.function(input_signature=[_EXAMPLES_SPEC])
    def serving_default(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        module.calls.assign_add(1)
        x = tf.io.parse_example(examples, _FEATURE_SPEC)["x"]
        check = tf.debugging.assert_less(x, POISON_FROM, message="x must be below 1000")
        with tf.control_dependencies([check]):
            return {"output_0": module.w * x}

    tf.saved_model.save(module, path, signatures={"serving_default": serving_default})
    return path


def summing_examples(path: PathLike) -> str:
    """A signature whose output drops the batch dimension: one sum for the whole batch.

    What TF Serving cannot split into per-element results; the handler must say so.
    """
    path = os.fspath(path)
    module = tf.Module()

    @tf.function(input_signature=[_EXAMPLES_SPEC])
    def serving_default(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        x = tf.io.parse_example(examples, _FEATURE_SPEC)["x"]
        return {"output_0": tf.reduce_sum(x)}

    tf.saved_model.save(module, path, signatures={"serving_default": serving_default})
    return path


def flaky_examples(path: PathLike, *, failure: str, fail_calls: int = 1,
                   factor: float = 5.0) -> str:
    """A ``y = factor * x`` Example model whose first ``fail_calls`` calls fail transiently.

    The count lives in a ``tf.Variable`` of the loaded model, so every load starts again.

    * ``failure="oom"``: the call allocates a 4 TiB tensor, and TensorFlow raises
      ``ResourceExhaustedError`` (after its allocator waits about 10 s for memory).
    * ``failure="slow"``: the call sleeps 3 s in the graph (a ``tf.data`` sleep), for
      timeout tests.

    Args:
        path: Directory to write the SavedModel to.
        failure: ``"oom"`` or ``"slow"``.
        fail_calls: How many calls, from the first, fail.
        factor: The weight value.

    Returns:
        ``path`` as a string.
    """
    from tensorflow.python.data.experimental.ops import testing as data_testing

    if failure not in ("oom", "slow"):
        raise ValueError(f"failure must be 'oom' or 'slow'; got {failure!r}")
    path = os.fspath(path)
    module = tf.Module()
    module.w = tf.Variable(factor, dtype=tf.float32, name="w")
    module.calls = tf.Variable(0, dtype=tf.int64, name="calls")

    def oom(n: tf.Tensor) -> tf.Tensor:
        # The size depends on the call count, so it cannot be folded when the graph is built.
        return tf.reduce_sum(tf.random.uniform(tf.stack([n * (2 ** 40)]))) * 0.0

    def slow(n: tf.Tensor) -> tf.Tensor:
        sleep = data_testing.sleep(tf.constant(3_000_000, tf.int64))
        slept = tf.data.Dataset.range(1).apply(sleep).reduce(tf.constant(0, tf.int64),
                                                             lambda a, b: a + b)
        return tf.cast(slept, tf.float32) * 0.0

    @tf.function(input_signature=[_EXAMPLES_SPEC])
    def serving_default(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        n = module.calls.assign_add(1)
        x = tf.io.parse_example(examples, _FEATURE_SPEC)["x"]
        fail = oom if failure == "oom" else slow
        extra = tf.cond(n <= fail_calls, lambda: fail(n), lambda: tf.constant(0.0))
        return {"output_0": module.w * x + extra}

    tf.saved_model.save(module, path, signatures={"serving_default": serving_default})
    return path


def renamed_input_examples(path: PathLike, *, factor: float = 5.0, alias: str = "inputs") -> str:
    """The demo ``y = factor * x`` Example model with its input named ``alias``.

    What a re-export with another argument name publishes: the same computation under a
    signature whose input a pipeline built for ``examples`` does not feed.
    """
    path = os.fspath(path)
    module = tf.Module()
    module.w = tf.Variable(factor, dtype=tf.float32, name="w")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=alias)])
    def serving_default(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        x = tf.io.parse_example(serialized, _FEATURE_SPEC)["x"]
        return {"output_0": module.w * x}

    tf.saved_model.save(module, path, signatures={"serving_default": serving_default})
    return path
