"""Weight surgery: build a physically smaller copy of a model with some units removed.

The analysis (:func:`keras_grs.analyze`) records, for every layer of the graph, which group and unit each of its
input and output channels carries. Surgery applies that record: a removal becomes, per layer, the kept input
channels and kept output channels, and the layer's slicing rule in :mod:`keras_grs.layers` cuts its weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import keras
import numpy as np

from keras_grs.layers import kind_of
from keras_grs.structure import Structure, _functional, analyze, leaf_layers


def shrink(model: keras.Model, remove: Mapping[str, Iterable[int]], structure: Structure | None = None) -> keras.Model:
    """Return a new, smaller model with the given units removed and every surviving weight copied exactly.

    The child has the parent's topology with fewer units/filters in the named groups. Its weights are the
    parent's, minus the removed units' kernel columns and biases (at every producer of the group: all the branches
    a residual ``Add`` joins), minus their per-channel weights in every channel-wise layer they pass through
    (BatchNormalization statistics, DepthwiseConv kernels), minus the input rows that read them in every consumer
    (through a Flatten: every spatial position; after a Concatenate: at their offset). It is compiled like the
    parent (same optimizer class and config, loss, metrics) when the parent was compiled, so it can be fit at
    once. The parent is never changed; ``shrink(model, {})`` reproduces the parent's outputs bit for bit.

    Args:
        model: a Sequential or Functional model that :func:`keras_grs.analyze` accepts.
        remove: maps a group name (see ``analyze(model).groups``) to the unit indices to remove from it.
        structure: ``analyze(model)``, when the caller already has it.

    Raises:
        ValueError: an unknown or pinned group, an index out of range, a repeated index, or every unit of a group
            removed.

    Example:
        >>> import keras_grs
        >>> parent = keras_grs.models.build("nn1", (140,))
        >>> child = keras_grs.shrink(parent, {"dense1": [0, 5], "dense3": [7]})
        >>> str(keras_grs.analyze(child))
        '30x16x7'
    """
    structure = structure if structure is not None else analyze(model)
    keep = kept_units(structure, remove)
    child = _rebuild(model, structure, keep)
    set_chain_weights(child, surviving_weights(model, keep, structure))
    return child


def resized(model: keras.Model, widths: Mapping[str, int], structure: Structure | None = None) -> keras.Model:
    """A freshly initialized copy of ``model`` with new widths for the named groups, compiled like it.

    ``widths`` maps a group name to its new width; every producer of the group, and any layer whose configuration
    states the channel count (a Reshape), changes with it. A width above the current one is possible when the group's
    layers state their channel counts alone (a chain's Dense/Conv; a parent rebuilt from its child's model).
    """
    if not widths:
        return _rebuild(model, None, {})
    structure = structure if structure is not None else analyze(model)
    keep, grown = {}, {}
    for name, width in widths.items():
        if name not in structure.names:
            kept_units(structure, {name: []})  # the error for an unknown or pinned group
        group = structure.group(name)
        if int(width) < 1:
            raise ValueError(f"group {name!r} has {group.width} units; a width of {width} is not possible")
        if int(width) > group.width:
            grown[name] = int(width)
        elif int(width) != group.width:
            keep[name] = np.arange(int(width))
    if grown:
        # wider than the template (a parent rebuilt from its child's model): only layers whose configuration states
        # a channel count change, so the group must be carried by those alone (a chain's Dense/Conv)
        channels = {}
        for name, width in {**{n: len(k) for n, k in keep.items()}, **grown}.items():
            for layer_name in structure.group(name).layers:
                layer = model.get_layer(layer_name)
                if kind_of(layer).resize is not None:
                    channels[layer_name] = width
        return _rebuild(model, structure, {}, channels)
    return _rebuild(model, structure, keep)


def _rebuild(model, structure, keep, channels=None):
    """A fresh model of the same topology; layers whose output channels change get the new count in their config
    (from ``keep``, the units each group keeps, or ``channels``, the new count per layer name)."""
    channels = dict(channels or {})
    if keep:
        kept_mask = structure.keeper(keep)
        for step in structure.steps:
            mask = kept_mask(step.output)
            if mask is not None:
                channels[step.name] = int(mask.sum())

    def clone_layer(layer):
        config = layer.get_config()
        if layer.name in channels:
            resize = kind_of(layer).resize
            if resize is not None:
                resize(config, channels[layer.name])
        return layer.__class__.from_config(config)

    compile_config = model.get_compile_config() if model.compiled else None
    # clone_model compiles a clone of a compiled model with compile_from_config, whose eager optimizer.build (two
    # variables per weight for Adam) was a third of a search candidate's build time; the clone is compiled once,
    # below, and fit() creates the optimizer's variables when it needs them. ``compiled`` is restored at once.
    compiled, model.compiled = model.compiled, False
    try:
        child = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    finally:
        model.compiled = compiled
    if compile_config:
        child.compile(**compile_arguments(model))
    return child


def compile_arguments(model) -> dict:
    """The arguments a compiled ``model`` was compiled with, to compile another model alike: new objects made from
    its compile configuration (an optimizer or a metric holds state, so it is never shared), except its loss
    object, given as it is: a loss holds no state, and the configuration of some does not hold all of it (Keras'
    ``Huber`` leaves out its ``delta``, so a model compiled from the configuration would train with the default)."""
    arguments = keras.saving.deserialize_keras_object(model.get_compile_config())
    if isinstance(getattr(model, "loss", None), keras.losses.Loss):
        arguments["loss"] = model.loss
    return arguments


def set_chain_weights(model: keras.Model, weights: list[list[np.ndarray]]) -> None:
    """Set the weights of every layer of ``model`` (inputs excepted, in graph order), as :func:`surviving_weights`
    lists them."""
    layers = leaf_layers(model)
    if len(layers) != len(weights):
        raise ValueError(f"model {model.name!r} has {len(layers)} layers, the weights are for {len(weights)}")
    for layer, values in zip(layers, weights):
        if not values:
            continue
        expected = [tuple(w.shape) for w in layer.weights]
        if expected != [tuple(v.shape) for v in values]:
            raise ValueError(
                f"layer {layer.name!r} has weights of shapes {expected}, the inherited ones are "
                f"{[tuple(v.shape) for v in values]}"
            )
        layer.set_weights(values)


def kept_units(structure: Structure, remove: Mapping[str, Iterable[int]]) -> dict[str, np.ndarray]:
    """Check a removal request against a structure; return the sorted kept indices of each group it changes."""
    if not isinstance(remove, Mapping):
        raise TypeError(f"remove must map group names to unit indices, got {type(remove).__name__}")
    pinned = {g.name: g.pinned for g in structure.pinned}
    keep = {}
    for name, indices in remove.items():
        if name in pinned:
            raise ValueError(f"width group {name!r} is pinned ({pinned[name]}); its units cannot be removed")
        if name not in structure.names:
            raise ValueError(f"unknown width group {name!r}; the model's groups are {list(structure.names)}")
        width = structure.group(name).width
        try:
            indices = [_as_index(i) for i in indices]
        except TypeError as error:
            raise ValueError(f"group {name!r}: unit indices must be integers ({error})") from None
        if not indices:
            continue
        bad = [i for i in indices if not 0 <= i < width]
        if bad:
            raise ValueError(f"group {name!r} has {width} units (indices 0..{width - 1}); out of range: {bad}")
        if len(set(indices)) != len(indices):
            repeated = sorted({i for i in indices if indices.count(i) > 1})
            raise ValueError(f"group {name!r}: unit indices repeated: {repeated}")
        if len(indices) == width:
            raise ValueError(f"group {name!r}: removing all {width} units would disconnect the model")
        keep[name] = np.setdiff1d(np.arange(width), indices)
    return keep


def _as_index(value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{value!r} is not an integer")
    return int(value)


def surviving_weights(
    model: keras.Model, keep: Mapping[str, np.ndarray], structure: Structure | None = None, weights=None
) -> list[list[np.ndarray]]:
    """The weights of every layer of ``model`` (inputs excepted, in graph order) after removing all units but
    ``keep``'s (as :func:`kept_units` returns them), cut by each layer's slicing rule.

    ``weights`` (per layer, as this returns them) and ``structure`` may stand in for another model of ``model``'s
    topology (a pruning candidate held as arrays): only for layers whose slicing rule reads nothing but the
    weights (Dense, Conv, the per-channel layers such as BatchNormalization)."""
    structure = structure if structure is not None else analyze(model)
    steps = {step.name: step for step in structure.steps}
    kept_mask = structure.keeper(keep)
    result = []
    for i, layer in enumerate(leaf_layers(model)):
        values = layer.get_weights() if weights is None else list(weights[i])
        step = steps[layer.name]
        slicer = kind_of(layer).slice
        if not values or slicer is None or not keep:
            result.append(values)
            continue
        kin = kept_mask(step.inputs[0]) if step.inputs else None
        kout = kept_mask(step.output)
        if kin is None and kout is None:
            result.append(values)
            continue
        names = [v.name if [w.name for w in layer.weights].count(v.name) == 1 else f"{i}:{v.name}"
                 for i, v in enumerate(layer.weights)]
        kin = None if kin is None else np.flatnonzero(kin)
        kout = None if kout is None else np.flatnonzero(kout)
        sliced = slicer(layer, dict(zip(names, values)), kin, kout)
        result.append([sliced[name] for name in names])
    return result


def silenced_call(model: keras.Model, remove: Mapping[str, Iterable[int]], inputs, structure: Structure | None = None):
    """The parent's inference outputs with the removed units zeroed wherever they flow: at the output of every
    layer of their group (``WidthGroup.layers``). This is what :func:`shrink`'s child computes on the channels it
    keeps, without building it: the reference the tests and the coverage benchmark compare against.

    Example:
        >>> import numpy as np, keras_grs
        >>> parent = keras_grs.models.build("nn1", (140,))
        >>> x = np.ones((2, 140), "float32")
        >>> child = keras_grs.shrink(parent, {"dense2": [1, 2]})
        >>> bool(np.allclose(child(x), keras_grs.surgery.silenced_call(parent, {"dense2": [1, 2]}, x), atol=1e-5))
        True
    """
    structure = structure if structure is not None else analyze(model)
    keep = kept_units(structure, remove)
    masks = {}
    kept_mask = structure.keeper(keep)
    for step in structure.steps:
        mask = kept_mask(step.output)
        if mask is not None:
            masks[step.name] = mask.astype("float32")

    def operation_fn(op):
        def call(*args, **kwargs):
            if isinstance(op, keras.Model):  # a nested model: silence inside it too
                return _functional(op)._run_through_graph(args[0], operation_fn=operation_fn)
            out = op(*args, **kwargs)
            return out * masks[op.name] if op.name in masks else out

        return call

    return _functional(model)._run_through_graph(inputs, operation_fn=operation_fn)  # private, as analyze's graph
