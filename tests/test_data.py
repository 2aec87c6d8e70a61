"""Tests for privaudit.data: loading every input form, the one-line errors, and the checks."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from privaudit.data import (
    Dataset,
    check_features_for_model,
    check_missing,
    check_same_columns,
    dataset_sha256,
    duplicate_rows,
    encode_labels,
    load_data,
    rows_sha256,
)
from privaudit.errors import DataError, PrivauditError


def data_error(fn: Callable[[], Any], *expected: str) -> str:
    """Run ``fn``, demand a one-line DataError, and check each expected substring is in it."""
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg, msg
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [30.0, 41.0, np.nan, 25.0],
            "smoker": [True, False, True, False],
            "income": [10, 20, 30, 40],
            "diagnosis": ["a", "b", "a", "b"],
        }
    )


# ----------------------------------------------------------------------------- round trips


def test_csv_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "age,smoker,income,diagnosis\n30,True,10,0\n41,False,20,1\n,True,30,1\n")
    ds = load_data(path, label="diagnosis")
    assert isinstance(ds, Dataset)
    assert ds.feature_names == ("age", "smoker", "income")
    assert ds.label_name == "diagnosis"
    assert ds.source == str(path)
    assert ds.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ds.X.dtype == np.float64 and ds.X.shape == (3, 3)
    np.testing.assert_array_equal(ds.X[:2], [[30, 1, 10], [41, 0, 20]])  # booleans became 0/1
    assert np.isnan(ds.X[2, 0])  # missing features are kept for check_missing to judge
    assert ds.y.tolist() == [0, 1, 1]


def test_csv_string_labels_kept_as_read(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "x,label\n1,cat\n2,dog\n")
    ds = load_data(str(path), label="label")
    assert ds.source == str(path)
    assert ds.y.tolist() == ["cat", "dog"]


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_parquet_round_trip(tmp_path: Path, frame: pd.DataFrame, suffix: str) -> None:
    path = tmp_path / f"train{suffix}"
    frame.to_parquet(path)
    ds = load_data(path, label="diagnosis")
    assert ds.feature_names == ("age", "smoker", "income")
    np.testing.assert_array_equal(ds.X[:, 1], [1, 0, 1, 0])
    assert ds.y.tolist() == ["a", "b", "a", "b"]
    assert ds.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_npz_round_trip_ignores_label(tmp_path: Path) -> None:
    path = tmp_path / "train.npz"
    X = np.arange(6, dtype=np.int32).reshape(3, 2)
    np.savez(path, X=X, y=np.array(["a", "b", "a"]))
    ds = load_data(path, label="whatever")
    np.testing.assert_array_equal(ds.X, X)
    assert ds.X.dtype == np.float64
    assert ds.feature_names == ("x0", "x1")
    assert ds.y.tolist() == ["a", "b", "a"]
    assert ds.label_name is None
    assert ds.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_tuple_of_arrays_and_lists() -> None:
    ds = load_data((np.array([[1, 2], [3, 4]]), np.array([0, 1])), name="train")
    assert ds.source == "<train>" and ds.sha256 is None and ds.label_name is None
    assert ds.feature_names == ("x0", "x1")
    np.testing.assert_array_equal(ds.X, [[1.0, 2.0], [3.0, 4.0]])
    assert load_data(([[1, 2], [3, 4]], ["a", "b"]), name="holdout").y.tolist() == ["a", "b"]
    booleans = load_data((np.array([[True], [False]]), [0, 1]))
    np.testing.assert_array_equal(booleans.X, [[1.0], [0.0]])


def test_tuple_of_pandas_objects(frame: pd.DataFrame) -> None:
    ds = load_data((frame.drop(columns="diagnosis"), frame["diagnosis"]), name="train")
    assert ds.feature_names == ("age", "smoker", "income")
    assert ds.label_name == "diagnosis"
    assert ds.y.tolist() == ["a", "b", "a", "b"]


def test_dataframe_with_label(frame: pd.DataFrame) -> None:
    ds = load_data(frame, label="diagnosis", name="holdout")
    assert ds.source == "<holdout>" and ds.sha256 is None
    assert ds.feature_names == ("age", "smoker", "income")
    assert ds.X.shape == (4, 3)


def test_nullable_pandas_dtypes() -> None:
    df = pd.DataFrame(
        {"a": pd.array([1, None, 3], dtype="Int64"), "b": pd.array([True, None, False], dtype="boolean"),
         "y": pd.array([1, 0, 1], dtype="Int64")}
    )
    ds = load_data(df, label="y")
    assert np.isnan(ds.X[1]).all()
    np.testing.assert_array_equal(ds.X[[0, 2]], [[1, 1], [3, 0]])
    assert ds.y.dtype == np.int64


def test_numeric_text_in_object_column_is_accepted() -> None:
    ds = load_data((np.array([["1.5", " 2 "], ["", "3"]], dtype=object), [0, 1]))
    assert ds.X[0].tolist() == [1.5, 2.0] and np.isnan(ds.X[1, 0])


# ----------------------------------------------------------------------------- file errors


def test_missing_file(tmp_path: Path) -> None:
    data_error(lambda: load_data(tmp_path / "nope.csv", label="y"), "nope.csv", "no such file")


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.csv", "")
    data_error(lambda: load_data(path, label="y"), "empty.csv", "empty")
    blank = write(tmp_path / "blank.csv", "\n\n")
    data_error(lambda: load_data(blank, label="y"), "blank.csv", "empty")


def test_header_only(tmp_path: Path) -> None:
    path = write(tmp_path / "hdr.csv", "age,diagnosis\n")
    data_error(lambda: load_data(path, label="diagnosis"), "hdr.csv", "no data rows")


def test_parquet_without_rows(tmp_path: Path, frame: pd.DataFrame) -> None:
    path = tmp_path / "none.parquet"
    frame.iloc[:0].to_parquet(path)
    data_error(lambda: load_data(path, label="diagnosis"), "none.parquet", "no data rows")


def test_malformed_csv(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.csv", "a,b\n1,2\n3,4,5\n")
    data_error(lambda: load_data(path, label="b"), "bad.csv", "malformed CSV", "Expected 2 fields")


def test_not_utf8_csv(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("name,y\ncaf\xe9,1\n".encode("latin-1"))
    data_error(lambda: load_data(path, label="y"), "latin.csv", "UTF-8")


def test_not_really_parquet(tmp_path: Path) -> None:
    path = write(tmp_path / "fake.parquet", "a,b\n1,2\n")
    data_error(lambda: load_data(path, label="b"), "fake.parquet", "not a readable Parquet file")


def test_corrupt_npz(tmp_path: Path) -> None:
    text = write(tmp_path / "text.npz", "hello")
    data_error(lambda: load_data(text), "text.npz", "not a valid .npz")
    good = tmp_path / "good.npz"
    np.savez_compressed(good, X=np.random.default_rng(0).random((200, 5)), y=np.zeros(200))
    raw = bytearray(good.read_bytes())
    for i in range(60, 400):  # garble compressed member data but keep the zip directory intact
        raw[i] ^= 0xFF
    broken = tmp_path / "broken.npz"
    broken.write_bytes(bytes(raw))
    assert zipfile.is_zipfile(broken)
    data_error(lambda: load_data(broken), "broken.npz", "not a readable .npz")


def test_npz_wrong_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.npz"
    np.savez(path, features=np.zeros((2, 2)), labels=np.zeros(2))
    data_error(lambda: load_data(path), "keys.npz", "'X' and 'y'", "'features', 'labels'")


def test_npz_object_arrays_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, X=np.array([[1, "a"]], dtype=object), y=np.array([0]))
    data_error(lambda: load_data(path), "obj.npz", "object arrays")


def test_unsupported_extension(tmp_path: Path) -> None:
    path = write(tmp_path / "train.xlsx", "x")
    data_error(lambda: load_data(path, label="y"), "train.xlsx", "'.xlsx'", ".csv", ".parquet", ".npz")


def test_unsupported_source_type() -> None:
    data_error(lambda: load_data(42, name="train"), "<train>", "int")


# ----------------------------------------------------------------------------- label errors


def test_label_column_missing_lists_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "age,outcome\n1,0\n")
    data_error(lambda: load_data(path, label="diagnosis"), "train.csv", "'diagnosis'", "'age', 'outcome'", "--label")


def test_label_required_even_when_a_column_looks_like_one(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "age,target\n1,0\n")
    data_error(lambda: load_data(path), "train.csv", "labels", "'age', 'target'")


def test_dataframe_requires_label(frame: pd.DataFrame) -> None:
    data_error(lambda: load_data(frame, name="train"), "<train>", "label=", "'diagnosis'")


def test_label_with_empty_values(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "x,diagnosis\n1,a\n2,\n3,b\n4,\n")
    data_error(lambda: load_data(path, label="diagnosis"), "train.csv", "column 'diagnosis'", "2 empty labels", "rows 1, 3")


def test_label_with_empty_values_in_arrays() -> None:
    data_error(lambda: load_data((np.zeros((3, 1)), ["a", None, " "]), name="holdout"), "<holdout>", "rows 1, 2")
    data_error(lambda: load_data((np.zeros((2, 1)), [0.0, np.nan])), "row 1")


def test_label_only_file_has_no_features(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "diagnosis\n1\n0\n")
    data_error(lambda: load_data(path, label="diagnosis"), "train.csv", "no feature columns")


# ----------------------------------------------------------------------------- shape and type errors


def test_lengths_differ(tmp_path: Path) -> None:
    data_error(lambda: load_data((np.zeros((3, 2)), [0, 1]), name="train"), "<train>", "3 rows", "2")
    path = tmp_path / "len.npz"
    np.savez(path, X=np.zeros((4, 2)), y=np.zeros(5))
    data_error(lambda: load_data(path), "len.npz", "4 rows", "5")


def test_x_not_2d(tmp_path: Path) -> None:
    data_error(lambda: load_data((np.zeros(3), [0, 1, 2])), "2-D", "(3,)", "reshape")
    path = tmp_path / "cube.npz"
    np.savez(path, X=np.zeros((2, 2, 2)), y=np.zeros(2))
    data_error(lambda: load_data(path), "cube.npz", "2-D", "(2, 2, 2)")
    data_error(lambda: load_data(([[1, 2], [3]], [0, 1])), "rectangular")


def test_non_numeric_feature_column(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "age,city,y\n30,Paris,0\n41,3,1\n50,Rome,0\n")
    data_error(
        lambda: load_data(path, label="y"),
        "train.csv", "column 'city'", "text", "'Paris'", "rows 0, 2", "encode",
    )


def test_several_non_numeric_columns_named() -> None:
    df = pd.DataFrame(
        {"city": ["a"] * 8, "when": pd.to_datetime(["2020-01-01"] * 8), "n": range(8), "y": [0, 1] * 4}
    )
    msg = data_error(lambda: load_data(df, label="y", name="train"), "<train>", "2 columns", "'city'", "'when'", "dates")
    assert "rows 0, 1, 2, 3, 4 …and 3 more" in msg


# ----------------------------------------------------------------------------- check_missing


def test_check_missing() -> None:
    X = np.array([[1.0, 2.0], [1.0, np.nan], [1.0, 3.0], [1.0, np.nan], [np.inf, np.nan]])
    ds = load_data((X, [0, 1, 0, 1, 0]), name="train")
    check_missing(load_data((X[:4], [0, 1, 0, 1]), name="train"), allow_nan=True)  # models that accept NaN are fine
    # ...but no model scores infinity (a forest's tags allow nan, and it crashed on inf)
    data_error(lambda: check_missing(ds, allow_nan=True), "<train>", "column 'x0'", "1 infinite value", "row 4")
    data_error(lambda: check_missing(ds, allow_nan=False), "<train>", "column 'x0'", "1 infinite value", "row 4", "'x1'")
    only_nan = load_data((X[:, 1:], [0, 1, 0, 1, 0]), name="train")
    data_error(lambda: check_missing(only_nan, allow_nan=False), "column 'x0'", "3 empty values", "rows 1, 3, 4", "fill or drop")
    check_missing(load_data((np.ones((2, 2)), [0, 1])), allow_nan=False)


def test_check_missing_names_file_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "id,age,y\n" + "".join(f"{i},{'' if i % 2 else i},0\n" for i in range(14)))
    ds = load_data(path, label="y")
    data_error(
        lambda: check_missing(ds, allow_nan=False),
        "train.csv: column 'age' has 7 empty values (rows 1, 3, 5, 7, 9 …and 2 more)",
    )


# ----------------------------------------------------------------------------- column checks


def named(columns: list[str], name: str) -> Dataset:
    return load_data(pd.DataFrame({c: [1.0, 2.0] for c in [*columns, "y"]}), label="y", name=name)


def test_check_same_columns() -> None:
    train = named(["a", "b", "c"], "train")
    check_same_columns(train, named(["a", "b", "c"], "holdout"))
    data_error(lambda: check_same_columns(train, named(["a", "b"], "holdout")), "<holdout>", "<train>", "missing 'c'")
    data_error(lambda: check_same_columns(train, named(["a", "b", "c", "d"], "holdout")), "extra 'd'")
    data_error(lambda: check_same_columns(train, named(["a", "c", "b"], "holdout")), "different order", "'c'", "'b'")


def test_check_same_columns_unnamed_compares_count() -> None:
    train = named(["a", "b"], "train")
    check_same_columns(train, load_data((np.zeros((2, 2)), [0, 1]), name="holdout"))
    data_error(
        lambda: check_same_columns(train, load_data((np.zeros((2, 3)), [0, 1]), name="holdout")),
        "<holdout>", "3 feature columns", "<train> has 2",
    )


def test_check_features_for_model() -> None:
    from sklearn.linear_model import LogisticRegression

    ds = named(["a", "b"], "train")
    model = LogisticRegression().fit(pd.DataFrame({"a": [0.0, 1.0], "b": [1.0, 0.0]}), [0, 1])
    check_features_for_model(ds, n_features=model.n_features_in_, feature_names=model.feature_names_in_)
    data_error(lambda: check_features_for_model(ds, n_features=3, feature_names=None), "<train>", "2 feature columns", "expects 3")
    data_error(
        lambda: check_features_for_model(ds, n_features=2, feature_names=["a", "z"]), "<train>", "missing 'z'", "extra 'b'"
    )
    unnamed = load_data((np.zeros((2, 2)), [0, 1]))
    check_features_for_model(unnamed, n_features=2, feature_names=["a", "z"])  # no names to compare: count only
    check_features_for_model(ds, n_features=None, feature_names=None)


# ----------------------------------------------------------------------------- labels


def test_encode_labels_numeric(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "x,y\n1,1.0\n2,0.0\n3,2.0\n")
    ds = load_data(path, label="y")
    assert ds.y.dtype == np.float64
    out = encode_labels(ds, np.array([0, 1, 2]))
    assert out.dtype == np.int64 and out.tolist() == [1, 0, 2]
    assert encode_labels(load_data((np.zeros((2, 1)), [True, False])), [0, 1]).tolist() == [1, 0]


def test_encode_labels_strings() -> None:
    ds = load_data((np.zeros((3, 1)), np.array(["no", "yes", "no"])))
    assert encode_labels(ds, ["no", "yes"]).tolist() == [0, 1, 0]
    # One side text, one side numbers: compared as text, with 1.0 written as 1.
    assert encode_labels(load_data((np.zeros((2, 1)), [1.0, 0.0])), np.array(["0", "1"])).tolist() == [1, 0]


def test_encode_labels_unknown(tmp_path: Path) -> None:
    path = write(tmp_path / "holdout.csv", "x,diagnosis\n" + "".join(f"{i},{v}\n" for i, v in enumerate("0101x1101y")))
    ds = load_data(path, label="diagnosis")
    data_error(
        lambda: encode_labels(ds, np.array([0, 1])),
        "holdout.csv: column 'diagnosis' has labels the model does not know: 'x', 'y' (rows 4, 9); "
        "the model's classes are 0, 1",
    )
    numeric = load_data((np.zeros((3, 1)), [0, 1, 7]), name="holdout")
    data_error(lambda: encode_labels(numeric, [0, 1]), "<holdout>", "7", "row 2")


# ----------------------------------------------------------------------------- hashing


def test_rows_sha256_stable() -> None:
    X = np.array([[1.0, 2.0], [3.0, np.nan], [1.0, 2.0]])
    a, b = rows_sha256(X), rows_sha256(X.copy())
    assert list(a) == list(b)
    assert all(len(h) == 16 and int(h, 16) >= 0 for h in a)
    assert a[0] == a[2] != a[1]
    assert rows_sha256(np.array([[-0.0, 1]]))[0] == rows_sha256(np.array([[0.0, 1.0]]))[0]
    assert list(rows_sha256(X, salt=b"audit-1")) != list(a)
    assert rows_sha256(np.array([[1, 2]], dtype=np.int64))[0] == a[0]


def test_duplicate_rows() -> None:
    train = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, np.nan]])
    holdout = np.array([[1.0, 2.0], [9.0, 9.0], [1.0, 2.0], [5.0, np.nan], [3.0, 4.5]])
    assert duplicate_rows(train, holdout) == 3
    assert duplicate_rows(train, np.array([[7.0, 7.0]])) == 0
    assert duplicate_rows(train, np.ones((2, 3))) == 0


def test_dataset_sha256(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "x,y\n1,0\n")
    assert dataset_sha256(load_data(path, label="y")) == hashlib.sha256(path.read_bytes()).hexdigest()
    X = np.array([[1.0, 2.0], [3.0, 4.0]])
    first = dataset_sha256(load_data((X, ["a", "b"])))
    assert first == dataset_sha256(load_data((X.copy(), ["a", "b"])))
    assert first != dataset_sha256(load_data((X, ["a", "c"])))
    assert first != dataset_sha256(load_data((X + 1, ["a", "b"])))
    assert len(first) == 64


def test_data_error_is_user_facing() -> None:
    assert issubclass(DataError, PrivauditError)
