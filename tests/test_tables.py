"""Rows to Examples and table formats: plain functions, no pipeline."""

from __future__ import annotations

import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines import tables


def test_row_to_example_types_follow_values_unless_told():
    example = tables.row_to_example(
        {"id": "a", "x": 2, "y": 1.5, "flag": True, "tags": ["p", "q"], "gone": None},
        exclude=["id"], feature_types={"n": "int"})
    features = example.features.feature
    assert sorted(features) == ["flag", "tags", "x", "y"]
    assert features["x"].float_list.value == [2.0]  # numbers default to float
    assert features["y"].float_list.value == [1.5]
    assert features["flag"].int64_list.value == [1]
    assert features["tags"].bytes_list.value == [b"p", b"q"]
    ids = tables.row_to_example({"n": 7.0}, feature_types={"n": "int"})
    assert ids.features.feature["n"].int64_list.value == [7]


@settings(deadline=None, max_examples=50)  # TF op timing varies on a loaded machine
@given(st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True),
                       st.floats(allow_nan=False, width=32), max_size=5))
def test_float_rows_survive_a_round_trip_through_parse_example(row):
    example = tables.row_to_example(row)
    spec = {name: tf.io.FixedLenFeature([1], tf.float32) for name in row}
    parsed = tf.io.parse_single_example(example.SerializeToString(), spec) if row else {}
    assert {k: float(v.numpy()[0]) for k, v in parsed.items()} == row


def test_bad_cell_for_a_declared_type_names_column_value_and_fix():
    with pytest.raises(ValueError) as error:
        tables.row_to_example({"x": "abc"}, feature_types={"x": "float"})
    assert str(error.value) == (
        "column 'x' holds 'abc', which cannot be a float feature: could not convert string "
        "to float: 'abc'. Fix the data or set the column's type with feature_types "
        "(--feature_types=name:float).")


def test_feature_types_flag_is_parsed_and_checked():
    assert tables.parse_feature_types("x:float, id:int,name:bytes") == {
        "x": "float", "id": "int", "name": "bytes"}
    assert tables.parse_feature_types(None) == {}
    with pytest.raises(ValueError) as error:
        tables.parse_feature_types("x:double")
    assert str(error.value) == (
        "feature type 'x:double' is not column:type with type one of float, int, bytes; "
        "e.g. --feature_types=x:float,id:int.")


def test_csv_lines_become_typed_rows():
    header = ["key", "n", "v", "s", "e"]
    assert tables.parse_csv_line('a,3,1.5,"x, y",', header) == {
        "key": "a", "n": 3, "v": 1.5, "s": "x, y", "e": None}
    with pytest.raises(ValueError, match=r"CSV line has 2 cells but the header has 5 columns"):
        tables.parse_csv_line("a,3", header)


def test_formats_come_from_extensions_or_the_flag(tmp_path):
    assert tables.detect_format("gs://b/in/*.csv") == "csv"
    assert tables.detect_format("in.jsonl.gz") == "jsonl"
    assert tables.detect_format("part-*.parquet") == "parquet"
    assert tables.detect_format("data.tfrecords") == "tfrecord"
    assert tables.detect_format("data.bin", "tfrecord") == "tfrecord"
    with pytest.raises(ValueError, match=r"unknown format 'xml'; use one of csv, jsonl"):
        tables.detect_format("a.xml", "xml")


def test_csv_header_is_read_when_the_pipeline_is_built(tmp_path):
    (tmp_path / "b.csv").write_text("k,x\nq,1\n")
    assert tables.csv_header(str(tmp_path / "*.csv")) == ["k", "x"]
    with pytest.raises(ValueError) as error:
        tables.ReadRows(str(tmp_path / "missing*.csv"), fmt="csv")
    assert str(error.value) == (
        f"no file matches {str(tmp_path / 'missing*.csv')!r}; check the input path.")
