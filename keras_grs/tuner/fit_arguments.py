"""keras-tuner's ``search()`` arguments in the forms the evaluators and the guard take.

keras-tuner passes ``search()``'s arguments to ``fit`` untouched. A pruning search also carves its guard out of the
validation data and, with the batched evaluator, trains candidates on arrays, so before any trial:

- ``x=``/``y=`` keywords become the positional ``x, y``;
- a ``tf.data.Dataset`` given as ``validation_data`` is read once into arrays (the guard needs samples to carve);
- a ``tf.data.Dataset`` given as training data is read once into arrays when the evaluator batches and it fits in
  memory (``MATERIALISE_LIMIT``), its batch size becoming ``batch_size``; otherwise it goes to ``fit`` as it is, one
  fit per trial;
- ``validation_split`` takes the last share of the training arrays as the validation data, as Keras does
  (``validation_data`` wins when both are given, as in Keras); the guard is then carved from that validation data.
"""

from __future__ import annotations

import math

import numpy as np

MATERIALISE_LIMIT = 1 << 30  # bytes: a dataset larger than this is streamed to fit instead


def is_dataset(value) -> bool:
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - keras-grs installs TensorFlow
        return False
    return isinstance(value, tf.data.Dataset)


def materialise(dataset, limit=MATERIALISE_LIMIT):
    """A batched dataset of ``(x, y)`` or ``(x, y, sample_weight)`` elements as concatenated arrays, and its batch
    size; ``(None, reason)`` when it cannot be (infinite, larger than ``limit`` bytes, other elements)."""
    import tensorflow as tf

    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        return None, "an infinite (repeated) tf.data.Dataset"
    parts, size, batch = None, 0, None
    for element in dataset.as_numpy_iterator():
        if not isinstance(element, tuple) or len(element) not in (2, 3):
            return None, "a tf.data.Dataset whose elements are not (x, y) or (x, y, sample_weight) tuples"
        if parts is None:
            parts, batch = [[] for _ in element], len(element[0])
        for part, value in zip(parts, element):
            part.append(np.asarray(value))
        size += sum(np.asarray(value).nbytes for value in element)
        if size > limit:
            return None, f"a tf.data.Dataset larger than {limit:,} bytes"
    if parts is None:
        raise ValueError("the tf.data.Dataset given to search() is empty")
    return tuple(np.concatenate(part) for part in parts), batch


def normalise(fit_args, fit_kwargs, batches):
    """``(fit_args, fit_kwargs, reason)``: the arguments as described in the module's docstring; ``reason`` names
    the argument that forces one fit per trial (a training dataset kept as it is), or None."""
    fit_args, fit_kwargs = list(fit_args), dict(fit_kwargs)
    for position, name in enumerate(("x", "y")):
        if name in fit_kwargs:
            if len(fit_args) != position:
                raise TypeError(f"search() got {name} twice, or y= without x: pass x and y by position or by keyword")
            fit_args.append(fit_kwargs.pop(name))
    reason = None
    if fit_args and is_dataset(fit_args[0]) and batches:  # one fit per trial takes the dataset as it is
        if len(fit_args) > 1 and fit_args[1] is not None:
            raise ValueError("y must not be given with a tf.data.Dataset as x: the dataset yields (x, y) pairs")
        arrays, batch = materialise(fit_args[0])
        if arrays is None:
            reason = f"x: {batch}"
        else:
            fit_args = list(arrays[:2])
            if len(arrays) > 2:
                fit_kwargs["sample_weight"] = arrays[2]
            fit_kwargs.setdefault("batch_size", batch)
    validation = fit_kwargs.get("validation_data")
    if is_dataset(validation):
        arrays, why = materialise(validation)
        if arrays is None:
            raise ValueError(f"validation_data is {why}: the search scores every trial on it and carves its guard "
                             "from it; pass a finite dataset or arrays")
        fit_kwargs["validation_data"] = arrays
    split = fit_kwargs.pop("validation_split", None)
    if split and fit_kwargs.get("validation_data") is None:
        if not 0 < split < 1:
            raise ValueError(f"validation_split must be in (0, 1), got {split}")
        if not fit_args or is_dataset(fit_args[0]) or len(fit_args) < 2:
            raise ValueError("validation_split needs x and y as arrays (as in Keras); pass validation_data instead")
        n = len(fit_args[0])
        cut = int(math.floor(n * (1.0 - split)))  # Keras' rule: the last samples, before any shuffling
        if cut in (0, n):
            raise ValueError(f"validation_split={split} of {n} samples leaves no training or no validation sample")
        x, y = np.asarray(fit_args[0]), np.asarray(fit_args[1])
        fit_kwargs["validation_data"] = (x[cut:], y[cut:])
        fit_args[:2] = [x[:cut], y[:cut]]
        if fit_kwargs.get("sample_weight") is not None:
            fit_kwargs["sample_weight"] = np.asarray(fit_kwargs["sample_weight"])[:cut]
    return tuple(fit_args), fit_kwargs, reason
