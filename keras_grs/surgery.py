"""Weight surgery: build a physically smaller copy of a model with some units removed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import keras
import numpy as np

from keras_grs.structure import (
    CHANNEL_WEIGHT_LAYERS,
    FLATTEN_LAYERS,
    WIDTH_LAYERS,
    Structure,
    analyze,
    layer_chain,
)


def shrink(model: keras.Model, remove: Mapping[str, Iterable[int]], structure: Structure | None = None) -> keras.Model:
    """Return a new, smaller model with the given units removed and every surviving weight copied exactly.

    The child has the parent's architecture with fewer units/filters in the named groups. Its weights are the
    parent's, minus the removed units' kernel columns and biases, minus the rows of the next Dense/Conv layer that
    read them (through a Flatten: every spatial position of a removed channel), minus their BatchNormalization
    gamma/beta/moving statistics. It is compiled like the parent (same optimizer class and config, loss, metrics)
    when the parent was compiled, so it can be fit at once. The parent is never changed; ``shrink(model, {})``
    reproduces the parent's outputs bit for bit.

    Args:
        model: a Sequential or Functional model that :func:`keras_grs.analyze` accepts.
        remove: maps a group name (see ``analyze(model).groups``) to the unit indices to remove from it.
        structure: ``analyze(model)``, when the caller already has it.

    Raises:
        ValueError: an unknown group, an index out of range, a repeated index, or every unit of a group removed.

    Example:
        >>> import keras_grs
        >>> parent = keras_grs.models.build("nn1", (140,))
        >>> child = keras_grs.shrink(parent, {"dense1": [0, 5], "dense3": [7]})
        >>> str(keras_grs.analyze(child))
        '30x16x7'
    """
    structure = structure if structure is not None else analyze(model)
    keep = kept_units(structure, remove)
    child = resized(model, {name: len(indices) for name, indices in keep.items()})
    set_chain_weights(child, surviving_weights(model, keep))
    return child


def resized(model: keras.Model, widths: Mapping[str, int]) -> keras.Model:
    """A freshly initialized copy of ``model`` with new widths for the named Dense/Conv layers, compiled like it."""

    def clone_layer(layer):
        config = layer.get_config()
        if layer.name in widths:
            config["units" if isinstance(layer, keras.layers.Dense) else "filters"] = int(widths[layer.name])
        return layer.__class__.from_config(config)

    child = keras.models.clone_model(model, clone_function=clone_layer)
    compile_config = model.get_compile_config() if model.compiled else None
    if compile_config:
        child.compile_from_config(compile_config)
    return child


def set_chain_weights(model: keras.Model, weights: list[list[np.ndarray]]) -> None:
    """Set the weights of every layer of ``model``'s chain, as :func:`surviving_weights` lists them."""
    layers = layer_chain(model)
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
    keep = {}
    for name, indices in remove.items():
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


def surviving_weights(model: keras.Model, keep: Mapping[str, np.ndarray]) -> list[list[np.ndarray]]:
    """The weights of every layer of ``model``'s chain after removing all units but ``keep``'s.

    ``current`` follows the indices, along the last axis of the tensor flowing between layers, that survive.
    """
    result = []
    current = None
    for layer in layer_chain(model):
        weights = layer.get_weights()
        if isinstance(layer, WIDTH_LAYERS):
            kernel, rest = weights[0], weights[1:]
            if current is not None:
                kernel = np.take(kernel, current, axis=-2)
            current = keep.get(layer.name)
            if current is not None:
                kernel = kernel[..., current]
                rest = [w[current] for w in rest]
            weights = [kernel, *rest]
        elif isinstance(layer, CHANNEL_WEIGHT_LAYERS) and current is not None:
            weights = [w[current] for w in weights]
        elif isinstance(layer, FLATTEN_LAYERS) and current is not None:
            shape = layer.input.shape[1:]
            channels, positions = shape[-1], int(np.prod(shape[:-1]))
            current = (np.arange(positions)[:, None] * channels + current[None, :]).ravel()
        result.append(weights)
    return result
