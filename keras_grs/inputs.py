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


class SettingError(ValueError):
    """A setting of a run refused before any work, naming the setting as the caller spells it.

    ``template`` names each setting as ``{keyword}`` (a keyword of :func:`keras_grs.prune`); ``str(error)`` spells
    them as Python arguments (``resume=True``), and a front end spells them its own way through :meth:`render`
    (the CLI as ``--resume``)::

        >>> error = SettingError("{epochs} must be at least 1", "epochs")
        >>> str(error), error.render(lambda name: "--" + name)
        ('epochs must be at least 1', '--epochs must be at least 1')
    """

    # How the Python API spells a setting in a message where the bare keyword would not read as advice.
    API_NAMES = {"resume": "resume=True", "safe_mode": "safe_mode=False"}

    def __init__(self, template: str, *settings: str):
        self.template, self.settings = template, settings
        super().__init__(self.render(lambda name: self.API_NAMES.get(name, name)))

    def render(self, spell) -> str:
        """The message with every setting spelled by ``spell(keyword)``."""
        text = self.template
        for name in self.settings:  # str.replace, not str.format: paths and values in the text may hold braces
            text = text.replace("{" + name + "}", spell(name))
        return text


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


def load_model(spec, input_shape=None, num_classes: int = 2, safe_mode: bool = True):
    """A model from a ``.keras`` file or a built-in name (nn1, cnn1, ...; built for ``input_shape`` and
    ``num_classes``, by default 140 features or 12x12x1 images and 2 classes).

    Files load in Keras' safe mode (no Lambda layer or other code from the file runs) unless ``safe_mode=False``.
    Raises DataError naming a spec that is neither, a damaged file, or code that safe mode refused.
    """
    from keras_grs import models

    if isinstance(spec, str) and spec in models.NAMES:
        if input_shape is None:
            input_shape = (12, 12, 1) if spec.startswith("cnn") else (140,)
        return models.build(spec, tuple(input_shape), num_classes=num_classes)
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"model {str(spec)!r} is neither a built-in model ({', '.join(models.NAMES)}) nor a file")
    check_model_file(path)
    import warnings

    import keras

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return keras.models.load_model(path, safe_mode=safe_mode)
    except Exception as error:  # keras raises many kinds for a bad file
        if "safe_mode" in str(error):  # Keras' safe mode refused code stored in the file
            raise SettingError(f"model file {str(spec)!r} holds code (a Lambda layer or similar) that Keras' safe "
                               "mode refuses to run; pass {safe_mode} only if you trust this file", "safe_mode") from None
        raise DataError(f"cannot read model file {str(spec)!r}: {error}") from None


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
    """The features match the model's input shape and the labels its output: integer class ids or one-hot rows,
    or for a model compiled with a regression loss, targets of its output's size."""
    from keras_grs.guard import loss_reads_classes

    x, y = np.asarray(x), np.asarray(y)
    expected = tuple(model.input_shape[1:])
    got = tuple(x.shape[1:])
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
        raise DataError(f"{name}: samples of shape {got} do not fit model {model.name!r}, whose input is {expected}")
    outputs = model.output_shape[-1]
    if loss_reads_classes(model) is False:  # a regression's targets: any values, one per output
        size = int(np.prod([d for d in model.output_shape[1:] if d is not None]))
        if y[0].size != size:
            raise DataError(f"{name}: targets of shape {y.shape[1:]} do not fit model {model.name!r}, whose output "
                            f"is {tuple(model.output_shape[1:])}")
        return
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


def check_splits(x, y, validation_data, test_data=None) -> list[tuple]:
    """Every split of a run checked with :func:`check_split`; returns them as ``(name, x, y)``."""
    splits = [("training data", x, y), ("validation data", *_pair("validation_data", validation_data))]
    if test_data is not None:
        splits.append(("test data", *_pair("test_data", test_data)))
    for name, xs, ys in splits:
        check_split(name, xs, ys)
    return splits


def _pair(name, data):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise DataError(f"{name} must be a tuple (x, y)")
    return data
