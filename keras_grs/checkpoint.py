"""Checkpoints written from weight arrays, in the file layout Keras 3's ``save_weights`` gives the model.

``model.save_weights`` walks the whole model in Python (every layer, every variable, the optimizer) for each
checkpoint; for a small candidate that walk costs more than its batched fine-tuning. Candidates of one search share
their topology and differ only in widths, so the walk is done once: :meth:`CheckpointLayout.of` lets Keras write
one model and records where each layer's variables went (HDF5 groups, their attributes, dataset names) and the
datasets that are not layer weights (the optimizer's iteration count and learning rate). :meth:`CheckpointLayout.
write` then writes any model of that topology from its arrays alone, and ``model.load_weights`` reads the file as
one Keras wrote.

The recorded datasets that are not layer weights are written as recorded, so a layout describes models compiled
like the one it was taken from and whose optimizer has not been built since (a candidate before any ``fit``; the
batched evaluator never builds it). Keras' layout is read from a file Keras wrote, never rebuilt here, so a layer
that stores more (a BatchNormalization's moving statistics) is laid out as Keras lays it out.

Example:
    >>> import tempfile, numpy as np, keras_grs
    >>> from keras_grs.checkpoint import CheckpointLayout
    >>> from keras_grs.structure import leaf_layers
    >>> model = keras_grs.models.build("nn1", (140,))
    >>> layout = CheckpointLayout.of(model)
    >>> arrays = {layer.name: layer.get_weights() for layer in leaf_layers(model)}
    >>> path = tempfile.mkdtemp() + "/nn1.weights.h5"
    >>> layout.write(path, arrays)
    >>> twin = keras_grs.models.build("nn1", (140,))
    >>> twin.load_weights(path)
    >>> all(np.array_equal(a, b) for a, b in zip(model.get_weights(), twin.get_weights()))
    True
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import h5py
import numpy as np

from keras_grs.structure import leaf_layers


class LayoutError(ValueError):
    """A model's checkpoint cannot be described by a layout (the file Keras wrote is not what the layout reads)."""


@dataclass(frozen=True)
class CheckpointLayout:
    """Where Keras 3 writes each variable of models of one topology (see the module docstring).

    Attributes:
        groups: every HDF5 group of the file, parents first, with its attributes.
        slots: per layer name, the dataset path and dtype of each of its weights, in ``layer.get_weights()`` order.
        constants: the other datasets (path, value), written as recorded.
    """

    groups: tuple[tuple[str, tuple[tuple[str, object], ...]], ...]
    slots: Mapping[str, tuple[tuple[str, str], ...]]
    constants: tuple[tuple[str, np.ndarray], ...]

    @classmethod
    def of(cls, model) -> CheckpointLayout:
        """The layout of ``model``'s checkpoint, read from one file Keras writes of it.

        Raises:
            LayoutError: a layer's saved variables are not its ``get_weights()`` (in number, order, shape or
                value), or two layers share a name; such a model is saved by Keras itself.
        """
        layers = leaf_layers(model)
        by_name = {layer.name: layer for layer in layers}
        if len(by_name) != len(layers):
            raise LayoutError(f"model {model.name!r} has layers that share a name")
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "layout.weights.h5")
            model.save_weights(path)
            groups, datasets = [], []
            with h5py.File(path, "r") as file:
                def visit(name, item):
                    if isinstance(item, h5py.Group):
                        groups.append((name, tuple((k, v) for k, v in item.attrs.items())))
                    else:
                        if len(item.attrs):
                            raise LayoutError(f"dataset {name!r} has attributes ({list(item.attrs)})")
                        datasets.append((name, item[()]))
                file.visititems(visit)
        attributes = dict(groups)
        slots, constants = {}, []
        def owner(group):
            """The layer whose variables ``group`` holds: a layer's sit in layers/<key>/vars (nested models:
            layers/<key>/layers/<key>/vars), a sublayer's (a recurrent layer's cell) in layers/<key>/cell/vars."""
            if not (group.startswith("layers/") and group.endswith("/vars")):
                return None
            parts = group.split("/")[:-1]
            while parts:
                layer = by_name.get(dict(attributes.get("/".join(parts + ["vars"]), ())).get("name"))
                if layer is not None or (len(parts) > 1 and parts[-2] == "layers"):
                    return layer
                parts = parts[:-1]
            return None

        for name, value in datasets:
            group, _, index = name.rpartition("/")
            layer = owner(group)
            if layer is None:
                constants.append((name, value))
            else:
                slots.setdefault(layer.name, {})[int(index)] = name
        ordered, stored = {}, dict(datasets)
        for layer in layers:
            found = slots.pop(layer.name, {})
            weights = layer.get_weights()
            if sorted(found) != list(range(len(weights))):
                raise LayoutError(f"layer {layer.name!r}: Keras saved {len(found)} variables, it has {len(weights)} "
                                  "weights")
            paths = tuple(found[i] for i in range(len(weights)))
            for path_i, value in zip(paths, weights):
                if stored[path_i].shape != value.shape or not np.array_equal(stored[path_i], value):
                    raise LayoutError(f"layer {layer.name!r}: Keras saved its variables in another order than "
                                      "get_weights() lists them")
            if paths:
                ordered[layer.name] = tuple((p, stored[p].dtype.str) for p in paths)
        return cls(tuple(groups), ordered, tuple(constants))

    def write(self, path, weights: Mapping[str, Sequence[np.ndarray]], names: Mapping[str, str] | None = None
              ) -> None:
        """Write a checkpoint to ``path`` (a plain write: pass it through :func:`keras_grs.files.write_checkpoint`
        for an atomic one): ``weights`` maps every layer name that has weights to its arrays, in
        ``layer.get_weights()`` order. ``names``: group path -> the ``name`` attribute it gets instead of the
        recorded one (Keras numbers optimizer instances, ``adam``, ``adam_1``, ..., and writes the instance's name,
        which loading does not read).

        Raises:
            ValueError: a layer's arrays are missing or not as many as its weights.
        """
        missing = sorted(set(self.slots) - set(weights))
        if missing:
            raise ValueError(f"no weights given for layers {missing}")
        for layer, paths in self.slots.items():
            if len(weights[layer]) != len(paths):
                raise ValueError(f"layer {layer!r} has {len(paths)} weights, {len(weights[layer])} arrays were given")
        with open(path, "wb") as file:
            file.write(self._skeleton)
        with h5py.File(path, "r+") as file:
            for name, value in (names or {}).items():
                if name in file and "name" in file[name].attrs:
                    file[name].attrs["name"] = value
            for layer, paths in self.slots.items():
                for (dataset, dtype), value in zip(paths, weights[layer]):
                    file[dataset] = np.asarray(value, dtype=dtype)

    @functools.cached_property
    def _skeleton(self) -> bytes:
        """The file without the layers' weights (its groups, their attributes, the constant datasets), written once
        per layout: each checkpoint starts as a copy and gets only its weights, a third of the time of writing every
        group and attribute again."""
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "skeleton.weights.h5")
            with h5py.File(path, "w") as file:
                for name, attributes in self.groups:
                    group = file.require_group(name)
                    for key, value in attributes:
                        group.attrs[key] = value
                for dataset, value in self.constants:
                    file[dataset] = value
            with open(path, "rb") as file:
                return file.read()
