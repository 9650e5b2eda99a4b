"""Property-based: random bytes and random Examples mixed into batches never lose an
element, good ones score exactly as in a clean batch, and every element refused before
the model is one the model itself refuses."""

from __future__ import annotations

import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import beam_infer as bi
from beam_infer._isolation import IsolatingHandler
from beam_infer._keys import Keys
from beam_infer._retries import ModelCaller
from tests.support import model_zoo

PROPERTY_SETTINGS = settings(max_examples=100, deadline=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def poison(fault_zoo):
    inner = bi.SavedModelHandler(bi.ModelSpec(model_path=fault_zoo.poison))
    handler = IsolatingHandler(inner, keys=Keys.ALL,
                               caller=ModelCaller(inner, bi.RetryConfig(max_attempts=1)),
                               validator=inner.validator(), dead_letters=True)
    return handler, handler.load_model()


def _features() -> st.SearchStrategy[tf.train.Feature]:
    floats = st.lists(st.floats(-2000, 2000, width=32), max_size=3)
    return st.one_of(
        floats.map(lambda v: tf.train.Feature(float_list=tf.train.FloatList(value=v))),
        st.lists(st.integers(-5, 5), max_size=3).map(
            lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=v))),
        st.lists(st.binary(max_size=4), max_size=2).map(
            lambda v: tf.train.Feature(bytes_list=tf.train.BytesList(value=v))),
        st.just(tf.train.Feature()),
    )


def _random_examples() -> st.SearchStrategy[tf.train.Example]:
    return st.dictionaries(st.sampled_from(["x", "y", "X"]), _features(), max_size=2).map(
        lambda f: tf.train.Example(features=tf.train.Features(feature=f)))


def _good_examples() -> st.SearchStrategy[tf.train.Example]:
    return st.floats(-999, 999, width=32).map(lambda v: model_zoo.make_examples([v])[0])


ELEMENTS = st.one_of(
    _good_examples(),
    _random_examples(),
    _random_examples().map(lambda e: e.SerializeToString()),
    st.binary(max_size=24),
    st.none(),
    st.floats(1000, 1e6, width=32).map(lambda v: model_zoo.make_examples([v])[0]),  # poison
)


def _refused_by_the_model(handler: IsolatingHandler, model, element) -> bool:
    serialized = element if isinstance(element, bytes) else element.SerializeToString()
    try:
        handler.inner.call_model(handler.inner.encoded([serialized]), model)
    except Exception:  # noqa: BLE001 - any failure of the real model counts
        return True
    return False


@PROPERTY_SETTINGS
@given(values=st.lists(ELEMENTS, min_size=1, max_size=24))
def test_every_element_is_scored_or_dead_lettered_and_nothing_else(poison, values):
    handler, model = poison
    batch = [(f"k{i}", v) for i, v in enumerate(values)]
    outputs = handler.run_inference(batch, model)

    assert len(outputs) == len(batch)
    dead = [(i, o) for i, o in enumerate(outputs) if isinstance(o, bi.DeadLetter)]
    scored = [(i, o) for i, o in enumerate(outputs) if not isinstance(o, bi.DeadLetter)]
    assert all(o.element == batch[i] and o.key == f"k{i}" for i, o in dead)
    assert all(o.message for _, o in dead)
    if scored:
        clean = handler.inner.run_inference([batch[i][1] for i, _ in scored], model)
        assert [o for _, o in scored] == [(f"k{i}", log) for (i, _), log
                                          in zip(scored, clean, strict=True)]
    for i, letter in dead:
        element = batch[i][1]
        if isinstance(element, bytes | tf.train.Example):
            assert _refused_by_the_model(handler, model, element), letter


@PROPERTY_SETTINGS
@given(data=st.binary(max_size=64))
def test_random_bytes_are_refused_before_the_model_only_when_the_model_refuses_them(
        poison, data):
    handler, model = poison
    failure = handler.explain(data)
    if failure is not None:
        assert _refused_by_the_model(handler, model, data)
