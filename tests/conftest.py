"""Shared fixtures: real SavedModels built once per session, and a way to read outputs.

Test tiers: every test gets one marker, ``unit`` (the modules in ``UNIT_MODULES``: the
inner loop, ``python -m pytest -m unit``, about a minute), ``emulators`` (marked in their
modules: they start local cloud-service emulators) or ``pipeline`` (everything else:
pipelines, jobs end to end, the portable runner).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import pathlib

import pytest

from pipelines import models
from tests import model_zoo
from tests.publishing import publish

pytest_plugins = ["tests.portable", "tests.emulators.gcs", "tests.emulators.pubsub",
                  "tests.emulators.bigquery", "tests.emulators.tf_serving",
                  "tests.emulators.kserve_server"]


UNIT_MODULES = frozenset({
    "test_batches", "test_beam_api", "test_columns", "test_compatibility", "test_config",
    "test_construction_errors", "test_dead_letters_properties", "test_devices", "test_handler",
    "test_isolation",
    "test_live_versions", "test_loading", "test_messages", "test_model_cache",
    "test_public_api", "test_remote_codecs", "test_remote_spec", "test_rows", "test_tables",
    "test_tensor_inputs", "test_validation", "test_versions", "test_warmup",
})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("emulators") is None:
            module = item.module.__name__.rsplit(".", 1)[-1]
            item.add_marker("unit" if module in UNIT_MODULES else "pipeline")


@dataclasses.dataclass(frozen=True)
class Zoo:
    """Paths of the session's SavedModels, one per kind users export."""

    five: str  # the demo y = 5x, tf.Module, Example signature
    ten: str
    keras3_dense: str  # keras.Model.export(): float input
    keras3_examples: str  # tf.Module holding Keras 3 layers, Example signature
    tf_module: str  # tf.Module: serving_default, predict_two_outputs, serving_sequence
    tf_keras: str  # tf-keras model.save() with the seed's serve_tf_examples_fn
    tf1: str  # estimator-style TF1 export: classify, regress, predict, ...
    tf1_gpu_tags: str  # TF1 export whose only MetaGraph has tags {serve, gpu}
    tensors: str  # tf.Module: multi-input multi-output, scalar and raw-text signatures
    tokens: str  # tf.Module: int32 [None, None] variable-length input


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    root = tmp_path_factory.mktemp("zoo")
    return Zoo(
        five=models.build_multiplier_model(str(root / "five"), 5.0),
        ten=models.build_multiplier_model(str(root / "ten"), 10.0),
        keras3_dense=model_zoo.keras3_export(root / "keras3_dense"),
        keras3_examples=model_zoo.keras3_export_examples(root / "keras3_examples"),
        tf_module=model_zoo.tf_module_examples(
            root / "tf_module", signatures=model_zoo.TF_MODULE_SIGNATURES),
        tf_keras=model_zoo.tf_keras_examples(root / "tf_keras"),
        tf1=model_zoo.tf1_estimator_style(root / "tf1"),
        tf1_gpu_tags=model_zoo.tf1_with_extra_tags(root / "tf1_gpu"),
        tensors=model_zoo.tf_module_tensors(root / "tensors"),
        tokens=model_zoo.variable_length_tokens(root / "tokens"),
    )


@dataclasses.dataclass(frozen=True)
class FaultZoo:
    """Models that fail on purpose, for dead-letter, isolation and retry tests."""

    poison: str  # y = 5x; a batch holding x >= 1000 fails with InvalidArgumentError
    slow: str  # y = 5x; the first call of each load sleeps 3 s


@pytest.fixture(scope="session")
def fault_zoo(tmp_path_factory: pytest.TempPathFactory) -> FaultZoo:
    root = tmp_path_factory.mktemp("fault_zoo")
    return FaultZoo(
        poison=model_zoo.poison_examples(root / "poison"),
        slow=model_zoo.flaky_examples(root / "slow", failure="slow"),
    )


@pytest.fixture
def base(tmp_path: pathlib.Path) -> str:
    """A TF Serving-style base path holding version 1 of ``y = 5·v·x`` (see ``publishing``)."""
    path = str(tmp_path / "five")
    os.makedirs(path)
    publish(path, 1)
    return path


@pytest.fixture
def work_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path
