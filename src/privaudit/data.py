"""Loading train/holdout records and checking they fit each other and the model.

Every problem the user can fix is raised as a one-line ``DataError`` naming the file, the column
and the rows (0-based data-row indices, header excluded: the same index the report uses).
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import numbers
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from privaudit.errors import DataError

SUPPORTED_SUFFIXES: tuple[str, ...] = (".csv", ".parquet", ".pq", ".npz")
_MAX_SHOWN = 5  # rows or labels listed in a message before "…and N more"
_NPZ_HINT = "save it with numpy.savez(path, X=X, y=y)"


@dataclass(frozen=True, eq=False)  # eq=False: field-by-field == on arrays is ambiguous
class Dataset:
    """Records as the audit sees them: numeric features plus the labels exactly as read."""

    X: NDArray[np.float64]
    y: NDArray[Any]
    feature_names: tuple[str, ...]
    source: str
    sha256: str | None
    label_name: str | None
    # Text feature columns as read (their X column is nan until privaudit.textcolumns codes them), and
    # the sentence that refuses them for a model that needs numbers.
    text: tuple[tuple[int, NDArray[Any]], ...] = ()
    text_refusal: str = ""

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])


def _one_line(text: object, limit: int = 200) -> str:
    """Library errors can span lines; the CLI prints one line, so flatten and shorten."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _more(items: Sequence[str], limit: int = _MAX_SHOWN) -> str:
    extra = f" …and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + extra


def _rows(idx: Sequence[int] | NDArray[np.intp]) -> str:
    return ("row " if len(idx) == 1 else "rows ") + _more([str(int(i)) for i in idx])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _names(names: Sequence[Any]) -> str:
    return _more([repr(str(n)) for n in names], 10)


def _show(v: Any) -> str:
    """A label or cell as the user would recognise it: strings quoted, 1.0 shown as 1."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        f = float(v)
        return str(int(f)) if f.is_integer() else repr(f)
    return _one_line(repr(str(v)) if isinstance(v, str) else repr(v), 40)


def _generated_names(d: int) -> tuple[str, ...]:
    return tuple(f"x{j}" for j in range(d))


def has_real_names(ds: Dataset) -> bool:
    """False when the names were made up (x0, x1, ...) because the input had none."""
    return ds.feature_names != _generated_names(ds.n_features)


def _to_float(v: Any) -> float | None:
    """One cell as a float (nan for missing), or None when it cannot be a number."""
    if isinstance(v, (list, tuple, dict, np.ndarray, bytes, bytearray)):
        return None  # checked first: pd.isna on these would answer per element
    if v is None or v is pd.NA or v is pd.NaT:
        return float("nan")
    if isinstance(v, (bool, np.bool_, numbers.Real, decimal.Decimal)):
        return float(v)  # booleans are features like any other: 0/1
    if isinstance(v, str):
        if not v.strip():
            return float("nan")  # a blank cell is missing, not malformed
        try:
            return float(v)
        except ValueError:
            return None
    return None  # dates, complex numbers, arbitrary objects


def _column_to_float(values: pd.Series | NDArray[Any]) -> tuple[NDArray[np.float64], list[int], Any]:
    """Convert one feature column; return floats, rows that are not numbers, and one bad value."""
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    kinds = pd.api.types
    if kinds.is_bool_dtype(s.dtype) or (kinds.is_numeric_dtype(s.dtype) and not kinds.is_complex_dtype(s.dtype)):
        # Fast path; na_value covers pandas' nullable Int64/boolean columns.
        return s.to_numpy(dtype=np.float64, na_value=np.nan), [], None
    raw = s.to_numpy(dtype=object)  # text, mixed, dates: judge cell by cell
    floats = [_to_float(v) for v in raw]
    bad = [i for i, f in enumerate(floats) if f is None]
    out = np.array([np.nan if f is None else f for f in floats], dtype=np.float64)
    return out, bad, (raw[bad[0]] if bad else None)


def _features(columns: Sequence[tuple[str, Any]], src: str,
              n: int) -> tuple[NDArray[np.float64], tuple[tuple[int, NDArray[Any]], ...], str]:
    """Stack feature columns as float64, reporting every non-numeric column at once.

    Columns of text are set aside (as read, nan in X) with the sentence that refuses them, because a
    model that encodes text itself (a scikit-learn Pipeline with a OneHotEncoder) takes them as they are.
    """
    X = np.empty((n, len(columns)), dtype=np.float64)
    problems: list[str] = []
    text: list[tuple[int, NDArray[Any]]] = []
    only_text = True
    for j, (name, values) in enumerate(columns):
        X[:, j], bad, example = _column_to_float(values)
        if bad:
            raw = (values if isinstance(values, pd.Series) else pd.Series(values)).to_numpy(dtype=object)
            is_text = all(isinstance(raw[i], str) for i in bad)
            only_text &= is_text
            if is_text:
                text.append((j, raw))
            kind = "text" if isinstance(example, str) else f"{type(example).__name__} values"
            kind = "dates" if isinstance(example, (datetime.date, np.datetime64)) else kind
            problems.append(f"{name!r} has {kind} such as {_show(example)} ({_rows(bad)})")
    message = ""
    if problems:
        head = "column" if len(problems) == 1 else f"{len(problems)} columns are not numeric:"
        more = f"; …and {len(problems) - 3} more columns" if len(problems) > 3 else ""
        message = (f"{src}: {head} {'; '.join(problems[:3])}{more}; the model needs numbers — "
                   "encode them as numbers (e.g. one-hot or ordinal codes) before auditing")
        if not only_text:
            raise DataError(message)
    return X, tuple(text), message


def _labels(y: Any, src: str, what: str) -> NDArray[Any]:
    """Labels as a 1-D array, unchanged in value; empty labels are an error."""
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            raise DataError(f"{src}: y has {y.shape[1]} columns; pass a single label column")
        y = y.iloc[:, 0]
    arr: NDArray[Any] | None = None
    if not isinstance(y, pd.Series):
        arr = np.asarray(y)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]  # a column vector is still one label per row
        if arr.ndim != 1:
            raise DataError(f"{src}: {what} must be one label per row, got shape {arr.shape}; pass a 1-D array")
    s = y if arr is None else pd.Series(arr)
    empty = np.array(s.isna(), dtype=bool)  # a fresh, writable mask
    if s.dtype == object or isinstance(s.dtype, pd.StringDtype):
        empty |= np.array([isinstance(v, str) and not v.strip() for v in s], dtype=bool)
    if empty.any():
        rows = np.flatnonzero(empty)
        raise DataError(
            f"{src}: {what} has {_count(len(rows), 'empty label')} ({_rows(rows)}); "
            "every record needs a label — fill or drop those rows"
        )
    if arr is not None:
        return arr  # numpy input keeps its dtype (ints, floats or fixed-width strings)
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
        return s.to_numpy(dtype=getattr(s.dtype, "numpy_dtype", s.dtype))  # nullable Int64 -> int64
    return s.to_numpy(dtype=object)  # strings and mixed values, exactly as read


def _frame_names(columns: pd.Index) -> tuple[str, ...]:
    # Like scikit-learn: column names count only when they are all strings.
    if all(isinstance(c, str) for c in columns):
        return tuple(str(c) for c in columns)
    return _generated_names(len(columns))


def _from_frame(df: pd.DataFrame, label: str | None, src: str, sha: str | None, how: str) -> Dataset:
    if len(df) == 0:
        raise DataError(f"{src}: has no data rows (header only); it needs at least one record")
    if label is None:
        # Never guess from names like "target": a wrong guess would leak the label in as a feature.
        raise DataError(f"{src}: say which column holds the labels ({how}); columns: {_names(df.columns)}")
    if label not in df.columns:
        raise DataError(f"{src}: no label column {label!r}; columns are {_names(df.columns)} — {how}")
    y = _labels(df[label], src, f"column {label!r}")
    feats = df.drop(columns=[label])
    if feats.shape[1] == 0:
        raise DataError(f"{src}: has no feature columns besides the label {label!r}")
    names = _frame_names(feats.columns)
    X, text, note = _features([(n, feats.iloc[:, j]) for j, n in enumerate(names)], src, len(feats))
    return Dataset(X, y, names, src, sha, label, text, note)


def _from_arrays(X_in: Any, y_in: Any, src: str, sha: str | None) -> Dataset:
    numeric: NDArray[np.float64] | None = None
    if isinstance(X_in, pd.DataFrame):
        names = _frame_names(X_in.columns)
        columns: list[tuple[str, Any]] = [(c, X_in.iloc[:, j]) for j, c in enumerate(names)]
        n, d = X_in.shape
    else:
        try:
            arr = np.asarray(X_in)
        except ValueError as exc:  # ragged nested lists
            raise DataError(f"{src}: X is not a rectangular table ({_one_line(exc, 80)}); "
                            "give every row the same length") from exc
        if arr.ndim != 2:
            hint = "; for a single feature use X.reshape(-1, 1)" if arr.ndim == 1 else ""
            raise DataError(f"{src}: X must be 2-D (rows × feature columns), got shape {arr.shape}{hint}")
        n, d = arr.shape
        names = _generated_names(d)
        # A numeric array converts in one step; other dtypes are judged column by column for the errors.
        numeric = np.array(arr, dtype=np.float64) if arr.dtype.kind in "biuf" else None
        columns = [] if numeric is not None else [(names[j], arr[:, j]) for j in range(d)]
    label_name = y_in.name if isinstance(y_in, pd.Series) and isinstance(y_in.name, str) else None
    y = _labels(y_in, src, f"column {label_name!r}" if label_name else "y")
    if len(y) != n:
        raise DataError(f"{src}: X has {n} rows but y has {len(y)}; give exactly one label per row")
    if n == 0 or d == 0:
        raise DataError(f"{src}: X has shape {(n, d)}; it needs at least one record and one feature column")
    X, text, note = (numeric, (), "") if numeric is not None else _features(columns, src, n)
    return Dataset(X, y, names, src, sha, label_name, text, note)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_npz(path: Path, src: str, sha: str) -> Dataset:
    # np.load falls back to pickle for anything that is neither a zip nor .npy; refuse before that.
    if not zipfile.is_zipfile(path):
        raise DataError(f"{src}: not a valid .npz file (not a zip archive); {_NPZ_HINT}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "X" not in z.files or "y" not in z.files:
                found = _names(z.files) if z.files else "none"
                raise DataError(f"{src}: needs arrays named 'X' and 'y', found {found}; {_NPZ_HINT}")
            X, y = z["X"], z["y"]
    except DataError:
        raise
    except Exception as exc:  # corrupt members raise zipfile, zlib, OS and value errors alike
        if isinstance(exc, ValueError) and "pickle" in str(exc):  # object arrays; unpickling can run code
            raise DataError(f"{src}: holds object arrays, which privaudit will not unpickle; "
                            "save X and y as numeric or string arrays") from exc
        raise DataError(f"{src}: not a readable .npz file ({_one_line(exc)}); {_NPZ_HINT}") from exc
    return _from_arrays(X, y, src, sha)


def _read_table(path: Path, src: str) -> pd.DataFrame:
    if path.suffix.lower() != ".csv":
        try:
            return pd.read_parquet(path)
        except ImportError as exc:
            raise DataError(f"{src}: reading Parquet needs pyarrow; install it (pip install pyarrow)") from exc
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError and others for bad files
            raise DataError(f"{src}: not a readable Parquet file ({_one_line(exc)})") from exc
    try:
        # low_memory=False reads whole columns at once, so mixed types give one dtype, not a warning.
        return pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{src}: is empty; it needs a header and at least one record") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{src}: is not UTF-8 text ({_one_line(exc, 120)}); save it as UTF-8") from exc
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"{src}: malformed CSV ({_one_line(exc)}); check the delimiter and quoting") from exc
    except OSError as exc:
        raise DataError(f"{src}: cannot be read ({_one_line(exc)})") from exc


def load_data(source: Any, *, label: str | None = None, name: str = "data", allow_text: bool = False) -> Dataset:
    """Load records; see :func:`_load_data`. Text feature columns are an error unless ``allow_text``
    (the audit allows them for models that encode text themselves; see privaudit.textcolumns)."""
    ds = _load_data(source, label=label, name=name)
    if ds.text and not allow_text:
        raise DataError(ds.text_refusal)
    return ds


def _load_data(source: Any, *, label: str | None = None, name: str = "data") -> Dataset:
    """Load records from a .csv/.parquet/.pq/.npz path, an ``(X, y)`` tuple, or a DataFrame.

    ``label`` names the label column of a CSV, Parquet file or DataFrame (ignored for .npz, whose
    arrays must be named ``X`` and ``y``). ``name`` labels in-memory data in messages: ``<name>``.
    Missing feature values are kept as nan here; ``check_missing`` decides whether they are allowed.
    """
    if isinstance(source, (str, os.PathLike)):
        path, src = Path(source), str(source)
        suffix = path.suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            kind = repr(suffix) if suffix else "(no extension)"
            raise DataError(f"{src}: unsupported file type {kind}; use one of {', '.join(SUPPORTED_SUFFIXES)}")
        if not path.is_file():
            raise DataError(f"{src}: {'is a directory' if path.is_dir() else 'no such file'}; check the path")
        if path.stat().st_size == 0:
            raise DataError(f"{src}: is empty (0 bytes); it needs a header and at least one record")
        sha = _file_sha256(path)
        if suffix == ".npz":
            return _load_npz(path, src, sha)
        return _from_frame(_read_table(path, src), label, src, sha, "pass it with --label")
    src = f"<{name}>"
    if isinstance(source, pd.DataFrame):
        return _from_frame(source, label, src, None, "pass label=<column name>")
    if isinstance(source, tuple) and len(source) == 2:
        return _from_arrays(source[0], source[1], src, None)
    raise DataError(f"{src}: cannot read data from a {type(source).__name__}; give a .csv, .parquet or .npz "
                    "path, an (X, y) tuple, or a pandas DataFrame with label=<column>")


def check_missing(ds: Dataset, *, allow_nan: bool) -> None:
    """Refuse infinite features always, and empty (nan) ones when the model cannot take them, naming the
    first bad column. Models that accept missing values still cannot score infinity."""
    bad = np.isinf(ds.X) if allow_nan else ~np.isfinite(ds.X)
    cols = np.flatnonzero(bad.any(axis=0))
    if len(cols) == 0:
        return
    j = int(cols[0])
    rows = np.flatnonzero(bad[:, j])
    nan = np.isnan(ds.X[rows, j])
    what = "empty" if nan.all() else "infinite" if not nan.any() else "empty or infinite"
    also = f"; also in {_names([ds.feature_names[int(c)] for c in cols[1:]])}" if len(cols) > 1 else ""
    raise DataError(
        f"{ds.source}: column {ds.feature_names[j]!r} has {_count(len(rows), what + ' value')} "
        f"({_rows(rows)}){also}; the model needs numbers — fill or drop them"
    )


def _name_diff(have: Sequence[str], want: Sequence[str]) -> str:
    """How ``have`` differs from ``want``: missing names, extra names, or the same names reordered."""
    missing = [n for n in want if n not in set(have)]
    extra = [n for n in have if n not in set(want)]
    parts = ([f"missing {_names(missing)}"] if missing else []) + ([f"extra {_names(extra)}"] if extra else [])
    if parts:
        return "; ".join(parts)
    first = next((i for i, (a, b) in enumerate(zip(have, want)) if a != b), None)
    if first is None:  # only possible when a name is repeated
        return f"{len(have)} columns where {len(want)} are expected (a name is repeated)"
    return f"same columns in a different order (position {first} is {have[first]!r}, expected {want[first]!r})"


def check_same_columns(train: Dataset, holdout: Dataset) -> None:
    """Train and holdout must describe records the same way, or comparing them means nothing."""
    fix = "both must have the same feature columns in the same order"
    if has_real_names(train) and has_real_names(holdout) and train.feature_names != holdout.feature_names:
        diff = _name_diff(holdout.feature_names, train.feature_names)
        raise DataError(f"{holdout.source}: feature columns differ from {train.source}: {diff}; {fix}")
    if train.n_features != holdout.n_features:
        raise DataError(f"{holdout.source}: has {holdout.n_features} feature columns but "
                        f"{train.source} has {train.n_features}; {fix}")


def check_features_for_model(ds: Dataset, *, n_features: int | None, feature_names: Sequence[str] | None) -> None:
    """The data must have the columns the model was fitted on (``n_features_in_``/``feature_names_in_``)."""
    want = None if feature_names is None else [str(n) for n in feature_names]
    # Without real names in the data (e.g. .npz) only the count can be compared.
    if want is not None and has_real_names(ds) and list(ds.feature_names) != want:
        raise DataError(f"{ds.source}: feature columns do not match the model's: {_name_diff(ds.feature_names, want)}; "
                        "give the columns the model was trained on, in the same order")
    expected = n_features if n_features is not None else (None if want is None else len(want))
    if expected is not None and ds.n_features != expected:
        raise DataError(f"{ds.source}: has {ds.n_features} feature columns but the model expects {expected}; "
                        "give the columns the model was trained on (the label column excluded)")


def _numeric(a: NDArray[Any]) -> NDArray[np.float64] | None:
    """``a`` as floats when every value is a number (bools count), else None."""
    if a.dtype.kind in "biuf":
        return a.astype(np.float64)
    if a.dtype.kind == "O" and all(isinstance(v, (numbers.Real, np.bool_)) for v in a):
        return np.array([float(v) for v in a], dtype=np.float64)
    return None


def _key(v: Any) -> str:
    """Text form for comparing labels when one side is text: 1, 1.0 and np.int64(1) all give '1'."""
    return _show(v) if isinstance(v, (numbers.Real, np.bool_)) else str(v)


def encode_labels(ds: Dataset, classes: Sequence[Any] | NDArray[Any]) -> NDArray[np.int64]:
    """Index of each label in the model's ``classes``; labels the model does not know are an error."""
    cls, y = np.asarray(classes), np.asarray(ds.y)
    yf, cf = _numeric(y), _numeric(cls)
    if yf is not None and cf is not None:
        # Numeric on both sides: compare values, so 1.0 read from a CSV matches class 1.
        lookup: dict[Any, int] = {v: i for i, v in reversed(list(enumerate(cf.tolist())))}
        keys: list[Any] = yf.tolist()
    else:
        lookup = {k: i for i, k in reversed(list(enumerate(_key(c) for c in cls.tolist())))}
        keys = [_key(v) for v in y.tolist()]
    out = np.array([lookup.get(k, -1) for k in keys], dtype=np.int64)
    unknown = np.flatnonzero(out < 0)
    if len(unknown):
        what = f"column {ds.label_name!r}" if ds.label_name else "y"
        seen = list(dict.fromkeys(_show(v) for v in y[unknown].tolist()))
        known = _more([_show(c) for c in cls.tolist()], 10)
        raise DataError(
            f"{ds.source}: {what} has labels the model does not know: {_more(seen)} ({_rows(unknown)}); "
            f"the model's classes are {known} — check the label column or drop those rows"
        )
    return out


def _canonical(X: NDArray[Any]) -> NDArray[np.float64]:
    """Little-endian float64 rows in which equal values have equal bytes (-0.0 -> 0.0, one nan)."""
    A = np.ascontiguousarray(np.asarray(X, dtype="<f8"))
    if A.ndim != 2:
        raise ValueError(f"expected a 2-D array of rows, got shape {A.shape}")
    nan = np.isnan(A)
    if not nan.any() and not np.any(np.signbit(A) & (A == 0.0)):
        return A  # already canonical: hashed as it is, without a copy
    A = A + 0.0  # a copy in which -0.0 became 0.0
    A[nan] = np.nan  # nan payloads differ between producers; use one
    return A


def rows_sha256(X: NDArray[Any], *, salt: bytes = b"") -> NDArray[np.str_]:
    """Per-row id: the first 16 hex chars of sha256(salt + the row's float64 bytes).

    Unsalted ids let anyone holding a candidate record check whether it is in the data, so pass a
    random per-audit ``salt`` before putting ids into a report that will be shared.
    """
    ids = [hashlib.sha256(salt + row.tobytes()).hexdigest()[:16] for row in _canonical(X)]
    return np.array(ids, dtype="<U16")


def duplicate_rows(train_X: NDArray[Any], holdout_X: NDArray[Any]) -> int:
    """How many holdout rows also appear, value for value, in train (they blur the audit)."""
    if np.shape(train_X)[1:] != np.shape(holdout_X)[1:]:
        return 0  # rows of different widths cannot be equal
    # Rows compared by their canonical bytes directly: a set of byte strings, no per-row hashing call.
    width = 8 * int(np.shape(train_X)[1]) if np.ndim(train_X) == 2 else 0
    if width == 0:
        return 0
    tr, ho = _canonical(train_X).tobytes(), _canonical(holdout_X).tobytes()
    seen = {tr[i:i + width] for i in range(0, len(tr), width)}
    return sum(1 for i in range(0, len(ho), width) if ho[i:i + width] in seen)


def dataset_sha256(ds: Dataset) -> str:
    """The file's sha256, or for in-memory data a stable hash of the contents of X and y."""
    if ds.sha256 is not None:
        return ds.sha256
    h = hashlib.sha256(repr(ds.X.shape).encode())
    h.update(_canonical(ds.X).data)  # the buffer itself: no copy of the bytes
    y = np.asarray(ds.y)
    if y.dtype.kind in "biuf":
        h.update(b"num" + y.astype("<f8").tobytes())
    else:
        for v in y.tolist():  # length-prefixed, so ("ab", "c") and ("a", "bc") hash differently
            b = str(v).encode("utf-8", "surrogatepass")
            h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()
