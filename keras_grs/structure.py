"""Which units of a Keras model can be removed, and what each removal touches.

A *width group* is one prunable axis: the units of a Dense layer or the filters of a Conv layer, together with
every downstream weight that depends on them (a BatchNormalization's per-channel statistics, the next Dense or
Conv layer's input rows, through any Flatten that spreads one channel over many rows). :func:`analyze` finds the
groups of a model; :func:`keras_grs.shrink` removes units from them.

Only chains are supported for now: every layer takes the previous layer's output. Residual additions and
concatenations are refused with :class:`UnsupportedLayerError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
from keras.src.models.functional import Functional

# Layers that own a width group (their output channels) and consume one (their input channels).
WIDTH_LAYERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)
# Layers whose per-channel weights follow the channels of their input.
CHANNEL_WEIGHT_LAYERS = (keras.layers.BatchNormalization,)
# Layers that keep the channel axis (last) as it is.
CHANNEL_PRESERVING_LAYERS = (
    keras.layers.Dropout,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
)
# Flatten spreads channel c of an (..., C) input over the rows s * C + c of its output.
FLATTEN_LAYERS = (keras.layers.Flatten,)
INPUT_LAYERS = (keras.layers.InputLayer,)

SUPPORTED_LAYERS = WIDTH_LAYERS + CHANNEL_WEIGHT_LAYERS + CHANNEL_PRESERVING_LAYERS + FLATTEN_LAYERS + INPUT_LAYERS


class UnsupportedLayerError(ValueError):
    """The model holds a layer (or a connection) that keras-grs cannot prune through."""


def supported_layer_names() -> str:
    return ", ".join(sorted({cls.__name__ for cls in SUPPORTED_LAYERS}))


@dataclass(frozen=True)
class WidthGroup:
    """One prunable axis of a model.

    Attributes:
        name: the group's name (the name of ``layer``), used as the key of ``shrink``'s ``remove`` mapping.
        layer: the Dense/Conv layer whose units or filters this group removes.
        dependents: the downstream layers whose weights follow the group (BatchNormalization, the next
            Dense/Conv layer's input rows), and any Flatten whose row mapping it changes, in model order.
        width: the current number of units or filters.
        min_width: the smallest width a search may reach (default 1).
    """

    name: str
    layer: str
    dependents: tuple[str, ...]
    width: int
    min_width: int = 1

    @property
    def removable(self) -> int:
        """How many units may still go before the group reaches ``min_width``."""
        return max(0, self.width - self.min_width)


@dataclass(frozen=True)
class Structure:
    """The width groups of a model, in model order (input to output).

    ``str(structure)`` is the seed's notation, for example ``32x16x8``.
    """

    groups: tuple[WidthGroup, ...]
    layers: tuple[str, ...] = field(default=(), repr=False)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(g.width for g in self.groups)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)

    def group(self, name: str) -> WidthGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no width group named {name!r}; the groups are {list(self.names)}")

    def __str__(self) -> str:
        return "x".join(str(w) for w in self.widths) if self.groups else "(no prunable layers)"


def layer_chain(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers in call order, checking that each takes the previous one's output.

    Raises UnsupportedLayerError for a subclassed model, a multi-input or multi-output model, a layer used twice,
    or a merge (Add, Concatenate, ...), so that nothing downstream has to guess at the graph.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a keras.Model, got {type(model).__name__}")
    if isinstance(model, keras.Sequential):
        layers = [layer for layer in model.layers if not isinstance(layer, INPUT_LAYERS)]
        for layer in layers:
            if isinstance(layer, keras.Model):
                raise UnsupportedLayerError(
                    f"layer {layer.name!r} is a nested model ({type(layer).__name__}); flatten it into one model first"
                )
        _check_supported(layers)
        return layers
    if not isinstance(model, Functional):
        raise UnsupportedLayerError(
            f"{type(model).__name__} is a subclassed model; keras-grs needs a Sequential or Functional model"
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedLayerError(
            f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "keras-grs supports one input and one output"
        )
    layers = [layer for layer in model.layers if not isinstance(layer, INPUT_LAYERS)]
    _check_supported(layers)
    previous = model.inputs[0]
    for layer in layers:
        nodes = layer._inbound_nodes
        if len(nodes) != 1:
            raise UnsupportedLayerError(f"layer {layer.name!r} is called {len(nodes)} times; shared layers are not supported")
        inputs = nodes[0].input_tensors
        if len(inputs) != 1 or inputs[0] is not previous:
            raise UnsupportedLayerError(
                f"layer {layer.name!r} does not take the previous layer's output: branches, residual additions "
                "and concatenations are not supported yet"
            )
        previous = nodes[0].output_tensors[0]
    if previous is not model.outputs[0]:
        raise UnsupportedLayerError(f"model {model.name!r} is not a chain of layers from its input to its output")
    return layers


def _check_supported(layers) -> None:
    for layer in layers:
        if not isinstance(layer, SUPPORTED_LAYERS):
            raise UnsupportedLayerError(
                f"layer {layer.name!r} of class {type(layer).__name__} is not supported; "
                f"supported layers: {supported_layer_names()}"
            )
        if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)) and layer.groups != 1:
            raise UnsupportedLayerError(f"layer {layer.name!r} is a grouped convolution (groups={layer.groups})")
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise UnsupportedLayerError(
                f"layer {layer.name!r} uses data_format={layer.data_format!r}; only channels_last is supported"
            )
        if isinstance(layer, keras.layers.BatchNormalization) and layer.axis not in (-1,):
            rank = len(layer.input.shape) if _has_input(layer) else None
            if rank is None or layer.axis != rank - 1:
                raise UnsupportedLayerError(
                    f"layer {layer.name!r} normalizes axis {layer.axis}; only the channel axis (-1) is supported"
                )


def _has_input(layer) -> bool:
    try:
        layer.input  # noqa: B018 - raises when the layer has never been called
    except (AttributeError, ValueError):
        return False
    return True


def analyze(model: keras.Model, min_width: int | dict[str, int] = 1) -> Structure:
    """Find the width groups of a Sequential or Functional Keras model.

    Every Dense, Conv1D or Conv2D layer but the last one (the output layer, never pruned) is a group; the layers
    after it, up to and including the next Dense/Conv layer, are its dependents.

    Args:
        model: a built Keras 3 Sequential or Functional model made of supported layers.
        min_width: the smallest width a search may reach, for all groups or per group name.

    Returns:
        A :class:`Structure`. Nothing about the model is changed.

    Raises:
        UnsupportedLayerError: a layer keras-grs cannot prune through (named in the message).

    Example:
        >>> from keras_grs import analyze, models
        >>> s = analyze(models.build("nn1", (140,)))
        >>> str(s), [g.name for g in s.groups]
        ('32x16x8', ['dense1', 'dense2', 'dense3'])
    """
    layers = layer_chain(model)
    width_layers = [layer for layer in layers if isinstance(layer, WIDTH_LAYERS)]
    if not width_layers:
        return Structure(groups=(), layers=tuple(layer.name for layer in layers))
    output_layer = width_layers[-1]
    minimums = min_width if isinstance(min_width, dict) else {}
    unknown = set(minimums) - {layer.name for layer in width_layers[:-1]}
    if unknown:
        raise ValueError(f"min_width names unknown groups {sorted(unknown)}")
    groups = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, WIDTH_LAYERS) or layer is output_layer:
            continue
        dependents = []
        for follower in layers[i + 1 :]:
            if isinstance(follower, WIDTH_LAYERS):
                dependents.append(follower.name)
                break
            if isinstance(follower, CHANNEL_WEIGHT_LAYERS + FLATTEN_LAYERS):
                dependents.append(follower.name)
        width = layer.units if isinstance(layer, keras.layers.Dense) else layer.filters
        minimum = minimums.get(layer.name, 1) if isinstance(min_width, dict) else int(min_width)
        if minimum < 1 or minimum > width:
            raise ValueError(f"min_width {minimum} of group {layer.name!r} must be between 1 and its width {width}")
        groups.append(
            WidthGroup(name=layer.name, layer=layer.name, dependents=tuple(dependents), width=width, min_width=minimum)
        )
    return Structure(groups=tuple(groups), layers=tuple(layer.name for layer in layers))
