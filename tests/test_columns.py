"""pipelines.columns: rows → the inputs a real signature takes, and the errors rows get."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import beam_infer as bi
from pipelines import columns


def _mapping(path: str, *signatures: str, input_map=None, key_column=None, feature_types=None,
             text_cells=False) -> columns.RowMapping:
    handler = bi.SavedModelHandler(bi.ModelSpec(model_path=path, signature_names=signatures))
    return columns.RowMapping.for_plan(
        handler.plan, input_map=input_map or {}, key_column=key_column,
        feature_types=feature_types or {}, text_cells=text_cells, model_path=path)


def _error(mapping: columns.RowMapping, row: dict, **options) -> str:
    with pytest.raises(columns.RowError) as error:
        mapping.to_model_input(row, **options)
    return str(error.value)


def test_keras3_export_reads_the_column_named_after_its_input(zoo):
    mapping = _mapping(zoo.keras3_dense, key_column="id")
    assert (mapping.feed, mapping.columns) == ("tensors", ["x"])
    (value,) = mapping.to_model_input({"id": "a", "x": [1.5], "other": "ignored"}).values()
    assert value.dtype == np.float32 and value.tolist() == [1.5]
    # A scalar fills an input of shape [1]; an int feeds a float input exactly.
    assert mapping.to_model_input({"x": 2})["x"].tolist() == [2.0]


def test_multi_input_signature_takes_lists_numbers_and_text(zoo):
    mapping = _mapping(zoo.tensors)
    fed = mapping.to_model_input({"x": [1.0, 2.0], "count": 3, "label": "ab"})
    assert {k: (v.dtype.name, v.tolist()) for k, v in fed.items()} == {
        "x": ("float32", [1.0, 2.0]), "count": ("int64", 3), "label": ("object", b"ab")}


def test_input_map_feeds_other_columns_and_unknown_aliases_fail_at_build(zoo):
    mapping = _mapping(zoo.tensors, input_map={"x": "features", "count": "n"})
    assert mapping.columns == ["n", "label", "features"]  # inputs in alias order
    assert mapping.to_model_input({"features": [0.5, 0.5], "n": 1, "label": "c"})[
        "x"].tolist() == [0.5, 0.5]
    with pytest.raises(ValueError) as error:
        _mapping(zoo.tensors, input_map={"y": "features"})
    assert str(error.value) == (
        f"--input_map names input 'y', which signature 'serving_default' of {zoo.tensors} "
        "does not have; its inputs: count: int64[?], label: string[?], x: float32[?,2]. Map "
        "those aliases (--input_map ALIAS=COLUMN).")


def test_errors_name_the_column_the_value_type_and_what_the_signature_expects(zoo):
    mapping = _mapping(zoo.tensors)
    good = {"x": [1.0, 2.0], "count": 3, "label": "ab"}
    assert _error(mapping, {**good, "x": "oops"}) == (
        "column 'x' holds a str ('oops') (one value); input 'x' of signature "
        "'serving_default' expects a list of 2 float32 values (x: float32[?,2]). Write the "
        "column as a list of 2 float32 values, or map another with --input_map x=COLUMN.")
    assert _error(mapping, {**good, "x": ["a", "b"]}) == (
        "column 'x' holds a list of 2 str; input 'x' of signature 'serving_default' expects "
        "a list of 2 float32 values (x: float32[?,2]), so the column must hold numbers. Fix "
        "the data, or map another column with --input_map x=COLUMN.")
    assert _error(mapping, {**good, "x": [1.0, 2.0, 3.0]}).startswith(
        "column 'x' holds a list of 3 float (shape [3]); input 'x' of signature "
        "'serving_default' expects a list of 2 float32 values")
    assert _error(mapping, {**good, "count": 2.5}) == (
        "column 'count' holds a float (2.5); input 'count' of signature 'serving_default' "
        "takes int64 (count: int64[?]), which cannot hold 2.5 exactly. Only lossless casts "
        "are made: write int64 values, or round them before scoring.")
    assert _error(mapping, {"x": [1.0, 2.0], "label": "ab"}) == (
        "column 'count' is missing in this row; input 'count' of signature "
        "'serving_default' expects one int64 value (count: int64[?]). Fill the column, or "
        "map another with --input_map count=COLUMN.")
    assert _error(mapping, {**good, "x": [[1.0], [2.0, 3.0]]}).startswith(
        "column 'x' holds a list of 2 lists whose items differ in length (a ragged list)")
    assert _error(mapping, {**good, "label": 7}).endswith(
        "so the column must hold text (str). Fix the data, or map another column with "
        "--input_map label=COLUMN.")


def test_csv_cells_are_parsed_as_the_inputs_dtype(zoo):
    mapping = _mapping(zoo.tensors, text_cells=True)
    fed = mapping.to_model_input({"x": "[1.5, 2]", "count": "4", "label": "007"})
    assert fed["x"].tolist() == [1.5, 2.0] and fed["count"].tolist() == 4
    assert fed["label"].tolist() == b"007"  # text stays text, leading zeros and all
    assert _error(mapping, {"x": "1,2", "count": "4", "label": "a"}) == (
        "column 'x' holds the text '1,2', which is not a JSON list; input 'x' of signature "
        "'serving_default' expects a list of 2 float32 values (x: float32[?,2]), written in "
        "a CSV cell as JSON, e.g. \"[1.0, 2.0]\".")
    assert _error(mapping, {"x": "[1, 2]", "count": "four", "label": "a"}).startswith(
        "column 'count' holds the text 'four', which is not a int64 number")
    assert _error(mapping, {"x": "[1, 2]", "count": "", "label": "a"}).startswith(
        "column 'count' is empty in this row")


def test_example_features_fill_scalar_and_vector_inputs(zoo):
    mapping = _mapping(zoo.tensors)
    fed = mapping.to_model_input({"x": [1.0, 2.0], "count": [3], "label": [b"ab"]},
                                 from_example=True)
    assert fed["count"].tolist() == 3 and fed["label"].tolist() == b"ab"


def test_example_signatures_keep_one_feature_per_column_and_rename_with_input_map(zoo):
    mapping = _mapping(zoo.five, input_map={"x": "value"}, key_column="id")
    assert mapping.feed == "examples"
    example = mapping.to_model_input({"id": "q", "value": 2.0})
    assert isinstance(example, tf.train.Example)
    assert dict(example.features.feature)["x"].float_list.value == [2.0]
    assert "id" not in example.features.feature
    with pytest.raises(columns.RowError, match="key column 'id' is missing or empty"):
        mapping.key_of({"value": 1.0})


def test_raw_text_signature_reads_the_mapped_column(zoo):
    mapping = _mapping(zoo.tensors, "text_length", input_map={"text": "body"})
    assert mapping.feed == "text"
    assert mapping.to_model_input({"body": "héllo"})["text"].tolist() == "héllo".encode()


def test_feature_types_are_refused_for_tensor_signatures(zoo):
    with pytest.raises(ValueError, match=r"^--feature_types applies to signatures that parse "
                                         r"tf\.train\.Examples; signature 'serving_default'"):
        _mapping(zoo.keras3_dense, feature_types={"x": "float"})


def test_check_columns_names_what_is_missing_and_what_was_found(zoo):
    mapping = _mapping(zoo.tensors, input_map={"x": "features"}, key_column="id")
    mapping.check_columns(["id", "features", "count", "label"], "--input in.csv")
    with pytest.raises(ValueError) as error:
        mapping.check_columns(["features", "count"], "--input in.csv")
    assert str(error.value) == (
        "--input in.csv has no column 'id' (the key column), 'label' (for input label: "
        "string[?]); its columns: features, count. Name columns after the signature's input "
        "aliases, or map them with --input_map ALIAS=COLUMN (and --key_column=COLUMN).")


def test_parse_input_map_accepts_repeats_and_commas_and_refuses_bad_entries():
    assert columns.parse_input_map(["x=a,count=n", "label=l"]) == {
        "x": "a", "count": "n", "label": "l"}
    with pytest.raises(ValueError, match="--input_map entry 'x' is not alias=column"):
        columns.parse_input_map(["x"])
    with pytest.raises(ValueError, match="maps input 'x' twice"):
        columns.parse_input_map(["x=a", "x=b"])
