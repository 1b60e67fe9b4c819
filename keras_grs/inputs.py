"""Checks on user data, run before any work so that bad input is refused with a message naming the problem."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

REQUIRED_KEYS = ("x_train", "y_train", "x_val", "y_val")
OPTIONAL_KEYS = ("x_test", "y_test")


class DataError(ValueError):
    """The data does not fit the model or is malformed."""


def load_npz(path) -> dict[str, np.ndarray]:
    """Read a run's data file: x_train, y_train, x_val, y_val and optionally x_test, y_test.

    The file is read with ``allow_pickle=False``: an object array is refused, never unpickled (unpickling runs
    code from the file). Every split is checked with :func:`check_split` (an empty split is named here, before
    anything computes over its labels).

    Raises DataError naming the missing keys, an unreadable file, or a test split with only one half.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as error:  # numpy raises several kinds for a bad file
        raise DataError(f"cannot read data file {str(path)!r} as .npz: {error}") from None
    for key, value in arrays.items():  # numpy hands back a member without the .npy header as raw bytes
        if not isinstance(value, np.ndarray):
            raise DataError(f"data file {str(path)!r}: {key!r} is not a NumPy array (.npy) member")
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        raise DataError(
            f"data file {str(path)!r} lacks {', '.join(missing)}; it needs {', '.join(REQUIRED_KEYS)} "
            f"(and optionally {', '.join(OPTIONAL_KEYS)}); it has {', '.join(sorted(arrays)) or 'nothing'}"
        )
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"data file {str(path)!r} has only one of x_test and y_test")
    for name, split in SPLITS.items():
        if f"x_{split}" in arrays:
            check_split(name, arrays[f"x_{split}"], arrays[f"y_{split}"])
    return arrays


SPLITS = {"training data": "train", "validation data": "val", "test data": "test"}


def check_model_file(path) -> None:
    """A ``.keras`` file is a complete zip archive holding a model config, and matches the size and SHA-256
    recorded when keras-grs wrote it (see :func:`keras_grs.files.verify`).

    Keras itself answers a truncated file with "File not found"; this names the real problem.
    """
    from keras_grs.files import verify

    path = Path(path)
    verify(path)
    if path.suffix != ".keras":
        return
    what = f"cannot read model file {str(path)!r}: it is not a valid or complete .keras file"
    if not zipfile.is_zipfile(path):
        raise DataError(f"{what} (not a zip archive: truncated, or not a saved Keras model)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            damaged = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as error:
        raise DataError(f"{what}: {error}") from None
    if damaged is not None:
        raise DataError(f"{what}: its member {damaged!r} is damaged (checksum mismatch)")
    if "config.json" not in names:
        raise DataError(f"{what}: it holds no config.json")


def check_split(name: str, x, y) -> None:
    """A split's samples and labels: same length, non-empty, numeric, finite."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise DataError(f"{name}: x and y must be arrays with one entry per sample, not single values")
    if len(x) != len(y):
        raise DataError(f"{name}: x has {len(x)} samples but y has {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"{name}: no samples")
    for label, array in (("x", x), ("y", y)):
        if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
            raise DataError(f"{name}: {label} has dtype {array.dtype}, not numbers")
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            bad = int(np.count_nonzero(~np.isfinite(array)))
            raise DataError(f"{name}: {label} holds {bad} NaN or infinite values")


def check_fits_model(name: str, model, x, y) -> None:
    """The features match the model's input shape and the labels its output (integer class ids or one-hot)."""
    x, y = np.asarray(x), np.asarray(y)
    expected = tuple(model.input_shape[1:])
    got = tuple(x.shape[1:])
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
        raise DataError(f"{name}: samples of shape {got} do not fit model {model.name!r}, whose input is {expected}")
    outputs = model.output_shape[-1]
    if y.ndim == 2 and y.shape[1] > 1:
        if y.shape[1] != outputs:
            raise DataError(f"{name}: one-hot labels have {y.shape[1]} columns, model {model.name!r} has {outputs} outputs")
        return
    labels = y.reshape(len(y))
    if not np.all(np.equal(np.mod(labels, 1), 0)):
        raise DataError(f"{name}: labels must be integer class ids, found non-integer values")
    classes = 2 if outputs == 1 else outputs
    if labels.min() < 0 or labels.max() >= classes:
        raise DataError(
            f"{name}: labels range over {int(labels.min())}..{int(labels.max())}, but model {model.name!r} has "
            f"{outputs} output{'s' if outputs > 1 else ''} (labels 0..{classes - 1})"
        )


def check_data(model, x, y, validation_data, test_data=None) -> None:
    """Every split of a run, against one model."""
    splits = [("training data", x, y), ("validation data", *_pair("validation_data", validation_data))]
    if test_data is not None:
        splits.append(("test data", *_pair("test_data", test_data)))
    for name, xs, ys in splits:
        check_split(name, xs, ys)
        check_fits_model(name, model, xs, ys)


def _pair(name, data):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise DataError(f"{name} must be a tuple (x, y)")
    return data
