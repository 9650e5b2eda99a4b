"""Keys are decided once from the element type, split from values and joined back."""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
from apache_beam.typehints import typehints

from beam_infer._keys import KeyedBatch, Keys


def test_keys_are_decided_from_the_declared_element_type():
    assert Keys.of_type(typehints.Tuple[str, bytes]) is Keys.ALL
    assert Keys.of_type(bytes) is Keys.NONE
    assert Keys.of_type(tf.train.Example) is Keys.NONE
    assert Keys.of_type(np.ndarray) is Keys.NONE
    assert Keys.of_type(typehints.Any) is Keys.PER_ELEMENT


def test_one_element_splits_as_its_declared_keys_say():
    assert Keys.NONE.split(("k", b"x")) == (True, None, ("k", b"x"))
    assert Keys.ALL.split(("k", b"x")) == (True, "k", b"x")
    assert Keys.ALL.split(b"x") == (False, None, b"x")
    assert Keys.PER_ELEMENT.split(b"x") == (True, None, b"x")


def test_a_batch_splits_and_joins_back_in_order():
    batch = [("a", b"1"), b"2", ("c", b"3")]
    split = KeyedBatch.split(batch, Keys.PER_ELEMENT)
    assert split.values == [b"1", b"2", b"3"]
    assert split.keys == ["a", None, "c"]
    assert split.not_pairs() == [1]
    assert split.join_all(["x", "y", "z"]) is None  # mixed: joined one by one
    assert [split.join(i, o) for i, o in enumerate("xyz")] == [("a", "x"), "y", ("c", "z")]


def test_all_pairs_or_none_join_in_one_pass_and_an_empty_batch_splits():
    pairs = KeyedBatch.split([("a", 1), ("b", 2)], Keys.ALL)
    assert pairs.join_all(["x", "y"]) == [("a", "x"), ("b", "y")]
    plain = KeyedBatch.split([("a", 1)], Keys.NONE)
    assert plain.values == [("a", 1)] and plain.join_all(["x"]) == ["x"]
    empty = KeyedBatch.split([], Keys.ALL)
    assert (empty.values, empty.keys, empty.join_all([])) == ([], [], [])


def test_a_batch_of_tuples_of_other_lengths_splits_element_by_element():
    split = KeyedBatch.split([("a", 1), ("b", 2, 3), ("c", 4)], Keys.PER_ELEMENT)
    assert split.has_key == [True, False, True]
    assert split.values == [1, ("b", 2, 3), 4] and split.keys == ["a", None, "c"]


def test_a_tuple_subclass_of_two_is_a_pair_in_a_batch_as_alone():
    Pair = collections.namedtuple("Pair", "key value")
    batch = [Pair("a", b"1"), Pair("b", b"2")]
    split = KeyedBatch.split(batch, Keys.PER_ELEMENT)
    assert (split.keys, split.values) == (["a", "b"], [b"1", b"2"])
    assert [Keys.PER_ELEMENT.split(e)[1:] for e in batch] == [("a", b"1"), ("b", b"2")]
