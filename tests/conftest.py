"""Shared fixtures: real SavedModels, each built once per session when first used.

Test tiers: every test gets exactly one of the markers in ``TIERS`` (registered in
``pyproject.toml``; docs/contributing.md says what each covers):

* ``unit``: the modules in ``UNIT_MODULES``, the inner loop (``python -m pytest -m unit``,
  about a minute): handlers, specs, versions and copies, with at most a few tiny pipelines;
* ``pipeline``: the library's transforms in DirectRunner pipelines (every module not named
  below);
* ``e2e``: the project's deliverables run as a user runs them (``E2E_MODULES``): the jobs
  of ``pipelines/``, batch scoring runs, ``beam-infer score``, the notebook, the
  benchmarks at smoke size, the docs site;
* ``portable``: jobs and pipelines through a local job service and an EXTERNAL worker pool
  (``PORTABLE_MODULES``, ``tests/support/portable.py``);
* ``emulators``: against local GCS, Pub/Sub or BigQuery emulators (marked in their modules).

A test marked with a tier itself (``@pytest.mark.e2e``, ``pytestmark = ...``) keeps it;
the others get their module's. ``python -m pytest`` with no ``-m`` runs every tier.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import functools
import pathlib

import pytest

from pipelines import models
from tests.support import model_zoo
from tests.support.publishing import publish

pytest_plugins = ["tests.support.portable", "tests.emulators.gcs", "tests.emulators.pubsub",
                  "tests.emulators.bigquery", "tests.emulators.tf_serving",
                  "tests.emulators.kserve_server"]


TIERS = ("unit", "pipeline", "e2e", "portable", "emulators")

UNIT_MODULES = frozenset({
    "test_batches", "test_beam_api", "test_cli", "test_coders", "test_columns",
    "test_compatibility",
    "test_config", "test_construction_errors", "test_dead_letters_properties", "test_devices",
    "test_dockerfile", "test_handler", "test_isolation", "test_keys", "test_keywords",
    "test_layout", "test_live_versions", "test_loading", "test_messages", "test_metrics_docs",
    "test_model_cache", "test_prediction_log", "test_public_api", "test_reading",
    "test_remote_codecs", "test_remote_spec", "test_rows", "test_startup", "test_support",
    "test_tables", "test_tensor_inputs", "test_validation", "test_versions", "test_warmup",
})
E2E_MODULES = frozenset({
    "test_batch_scoring_models", "test_batch_scoring_recipes", "test_batch_scoring_runs",
    "test_benchmark_dead_letters_smoke", "test_benchmark_handler_smoke", "test_benchmark_smoke",
    "test_benchmark_startup_smoke", "test_bigquery_preflight",
    "test_docs", "test_notebook", "test_pipelines_basic", "test_pipelines_batch_scoring",
    "test_pipelines_dead_letters", "test_pipelines_patterns", "test_pipelines_streaming",
    "test_services",
})
PORTABLE_MODULES = frozenset({"test_pipelines_portable", "test_portable_runner"})


def tier_of_module(module: str) -> str:
    """The tier of the tests of ``module`` (``test_x``) that are not marked with one."""
    for tier, modules in (("unit", UNIT_MODULES), ("e2e", E2E_MODULES),
                          ("portable", PORTABLE_MODULES)):
        if module in modules:
            return tier
    return "pipeline"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marked = sorted({m.name for m in item.iter_markers() if m.name in TIERS})
        if len(marked) > 1:
            raise pytest.UsageError(
                f"{item.nodeid} is marked with the tiers {', '.join(marked)}; a test belongs "
                f"to exactly one of {', '.join(TIERS)} (see tests/conftest.py).")
        if not marked:
            item.add_marker(tier_of_module(item.module.__name__.rsplit(".", 1)[-1]))


class _LazyModels:
    """Model paths built on first use into one folder, each at most once per session.

    Each model is a ``functools.cached_property``: a test that uses ``zoo.five`` builds
    ``five`` only, so ``python -m pytest -m unit -k one_test`` spends no time on the other
    SavedModels. The folder is made when the first model is built.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, name: str):
        self._tmp_path_factory = tmp_path_factory
        self._name = name

    @functools.cached_property
    def _root(self) -> pathlib.Path:
        return self._tmp_path_factory.mktemp(self._name)

    def built(self) -> list[str]:
        """The names of the models built so far (for tests of this laziness)."""
        return sorted(name for name in vars(self) if not name.startswith("_"))


class Zoo(_LazyModels):
    """Paths of the session's SavedModels, one per kind users export, each built when used."""

    @functools.cached_property
    def five(self) -> str:
        """The demo y = 5x, tf.Module, Example signature."""
        return models.build_multiplier_model(str(self._root / "five"), 5.0)

    @functools.cached_property
    def ten(self) -> str:
        return models.build_multiplier_model(str(self._root / "ten"), 10.0)

    @functools.cached_property
    def keras3_dense(self) -> str:
        """keras.Model.export(): float input."""
        return model_zoo.keras3_export(self._root / "keras3_dense")

    @functools.cached_property
    def keras3_examples(self) -> str:
        """tf.Module holding Keras 3 layers, Example signature."""
        return model_zoo.keras3_export_examples(self._root / "keras3_examples")

    @functools.cached_property
    def tf_module(self) -> str:
        """tf.Module: serving_default, predict_two_outputs, serving_sequence."""
        return model_zoo.tf_module_examples(self._root / "tf_module",
                                            signatures=model_zoo.TF_MODULE_SIGNATURES)

    @functools.cached_property
    def tf_keras(self) -> str:
        """tf-keras model.save() with the seed's serve_tf_examples_fn."""
        return model_zoo.tf_keras_examples(self._root / "tf_keras")

    @functools.cached_property
    def tf1(self) -> str:
        """Estimator-style TF1 export: classify, regress, predict, ..."""
        return model_zoo.tf1_estimator_style(self._root / "tf1")

    @functools.cached_property
    def tf1_gpu_tags(self) -> str:
        """TF1 export whose only MetaGraph has tags {serve, gpu}."""
        return model_zoo.tf1_with_extra_tags(self._root / "tf1_gpu")

    @functools.cached_property
    def tensors(self) -> str:
        """tf.Module: multi-input multi-output, scalar and raw-text signatures."""
        return model_zoo.tf_module_tensors(self._root / "tensors")

    @functools.cached_property
    def tokens(self) -> str:
        """tf.Module: int32 [None, None] variable-length input."""
        return model_zoo.variable_length_tokens(self._root / "tokens")


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return Zoo(tmp_path_factory, "zoo")


class FaultZoo(_LazyModels):
    """Models that fail on purpose, for dead-letter, isolation and retry tests."""

    @functools.cached_property
    def poison(self) -> str:
        """y = 5x; a batch holding x >= 1000 fails with InvalidArgumentError."""
        return model_zoo.poison_examples(self._root / "poison")

    @functools.cached_property
    def slow(self) -> str:
        """y = 5x; the first call of each load sleeps 3 s."""
        return model_zoo.flaky_examples(self._root / "slow", failure="slow")


@pytest.fixture(scope="session")
def fault_zoo(tmp_path_factory: pytest.TempPathFactory) -> FaultZoo:
    return FaultZoo(tmp_path_factory, "fault_zoo")


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
