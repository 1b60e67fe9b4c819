"""Which units of a Keras model can be removed, and what each removal touches.

A *width group* is one prunable axis: a set of channels that must be removed together. It starts at the layers
that produce channels (the units of a Dense layer, the filters of a Conv layer) and follows them through the
dependency graph of the model: through channel-wise layers (BatchNormalization, DepthwiseConv2D, pooling, padding,
activations), through Flatten (one channel spreads over many rows), across element-wise merges (a residual ``Add``
joins the channels of all its inputs into one group) and into a Concatenate (where the channels sit at an offset),
up to the layers that *consume* them (the next Dense/Conv layer's input rows). Layers that mix channels
(LayerNormalization, a channel Softmax, attention, a Reshape that moves channels) *pin* the groups they touch, as
do the model's inputs and outputs: pinned groups are listed with the reason but never pruned.

:func:`analyze` finds the groups of a model; :func:`keras_grs.shrink` removes units from them. What each layer
class does is looked up in :mod:`keras_grs.layers`, the one table of layer kinds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

import keras
import numpy as np
from keras.src.models.functional import Functional

from keras_grs.layers import UnsupportedLayerError, is_op, kind_of
from keras_grs.search.engine import GroupSpec, check_width_multiple

# Layers that own a width group (their output channels) and consume one (their input channels), for the code that
# handles chains only (EUP, the batched evaluator, the C IR).
WIDTH_LAYERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)
# The layers those chain-only consumers handle; :func:`layer_chain` refuses the rest of the table.
CHAIN_LAYERS = WIDTH_LAYERS + (
    keras.layers.BatchNormalization,
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
    keras.layers.Flatten,
    keras.layers.InputLayer,
)

# The batched evaluator (and the candidates it trains as arrays) also takes depthwise convolutions of a layer's units
# and the SeparableConv, LeakyReLU, ELU, PReLU, LayerNormalization, ZeroPadding, Cropping, UpSampling, GaussianNoise
# and GaussianDropout layers, LSTM, GRU and SimpleRNN layers, Reshapes (at the model's input, to one axis, or of size-1
# positions), and Rescaling and Normalization at the model's input; the C backend's int8 chains do not (no int8
# depthwise kernel).
BATCHED_CHAIN_LAYERS = CHAIN_LAYERS + (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
                                      keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.ZeroPadding1D,
                                      keras.layers.ZeroPadding2D, keras.layers.Cropping1D, keras.layers.Cropping2D,
                                      keras.layers.SeparableConv1D, keras.layers.SeparableConv2D,
                                      keras.layers.Rescaling, keras.layers.Normalization, keras.layers.GaussianNoise,
                                      keras.layers.GaussianDropout, keras.layers.UpSampling1D,
                                      keras.layers.UpSampling2D, keras.layers.Reshape, keras.layers.PReLU,
                                      keras.layers.LayerNormalization, keras.layers.LSTM, keras.layers.GRU,
                                      keras.layers.SimpleRNN)
# ... and graphs of them joined by element-wise merges (a residual Add) and channel concatenations (layer_graph).
MERGE_LAYERS = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply, keras.layers.Average,
                keras.layers.Maximum, keras.layers.Minimum)
BATCHED_GRAPH_LAYERS = BATCHED_CHAIN_LAYERS + MERGE_LAYERS + (keras.layers.Concatenate,)

__all__ = ["Structure", "WidthGroup", "UnsupportedLayerError", "analyze", "layer_chain", "layer_graph", "WIDTH_LAYERS"]


@dataclass(frozen=True)
class WidthGroup:
    """One prunable (or pinned) axis of a model.

    Attributes:
        name: the group's name (the name of ``layer``), used as the key of ``shrink``'s ``remove`` mapping.
        layer: the first layer (in graph order) whose output channels are the group's units.
        dependents: the layers besides the producers whose weights or channel mapping follow the group
            (BatchNormalization, DepthwiseConv, Flatten, a Reshape, the consumers' input rows), in graph order.
        width: the current number of units.
        min_width: the smallest width a search may reach (default 1).
        layers: every layer (or Keras op) whose *output* channels carry the group's units, in graph order: its
            producers (several when a merge joins them) and every channel-wise layer, merge, Concatenate or
            Flatten the units pass through (after a Concatenate they sit at an offset).
        consumers: the layers that read the group and lose its input rows (Dense, Conv, SeparableConv), and any
            layer that pins it.
        width_multiple: searches should keep the width a multiple of this (what SIMD kernels want); 1 = any.
        pinned: why the group cannot be pruned (None for a prunable group).
    """

    name: str
    layer: str
    dependents: tuple[str, ...]
    width: int
    min_width: int = 1
    layers: tuple[str, ...] = ()
    consumers: tuple[str, ...] = ()
    width_multiple: int = 1
    pinned: str | None = None

    @property
    def removable(self) -> int:
        """How many units may still go before the group reaches ``min_width``."""
        return max(0, self.width - self.min_width)


@dataclass(frozen=True)
class Layout:
    """The channels (last axis) of one tensor: channel i is unit ``unit[i]`` of group ``group[i]`` (an index
    into ``Structure.all_groups``)."""

    group: np.ndarray
    unit: np.ndarray


@dataclass(frozen=True)
class Step:
    """One layer or op of the graph, as the analysis saw it."""

    name: str
    role: str
    inputs: tuple[Layout, ...]
    output: Layout | None


@dataclass(frozen=True)
class Structure:
    """The width groups of a model, in graph order (input to output).

    ``str(structure)`` is the seed's notation for the prunable groups, for example ``32x16x8``;
    ``structure.summary()`` lists every group, pinned ones with the reason.
    """

    groups: tuple[WidthGroup, ...]
    layers: tuple[str, ...] = field(default=(), repr=False)
    pinned: tuple[WidthGroup, ...] = field(default=(), repr=False)
    steps: tuple[Step, ...] = field(default=(), repr=False, compare=False)
    all_groups: tuple[WidthGroup, ...] = field(default=(), repr=False, compare=False)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(g.width for g in self.groups)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)

    def search_groups(self) -> tuple[GroupSpec, ...]:
        """The prunable groups as the search engine takes them (name, width, min_width)."""
        return tuple(GroupSpec(g.name, g.width, g.min_width) for g in self.groups)

    def group(self, name: str) -> WidthGroup:
        """The prunable group called ``name``; KeyError (saying why) for a pinned or unknown name."""
        for g in self.groups:
            if g.name == name:
                return g
        for g in self.pinned:
            if g.name == name:
                raise KeyError(f"width group {name!r} is pinned ({g.pinned}); it cannot be pruned")
        raise KeyError(f"no width group named {name!r}; the groups are {list(self.names)}")

    def summary(self) -> str:
        """One line per group: name, width, layers carrying it, consumers; pinned groups with their reason."""
        lines = []
        for g in self.all_groups:
            state = f"pinned: {g.pinned}" if g.pinned else f"prunable, min {g.min_width}, multiple {g.width_multiple}"
            lines.append(f"{g.name:<24} {g.width:>5}  {state}; layers {', '.join(g.layers)}; "
                         f"consumers {', '.join(g.consumers) or '-'}")
        return "\n".join(lines)

    def kept_mask(self, layout: Layout, keep: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """Which channels of ``layout`` survive when each group named in ``keep`` keeps only those units
        (None when no channel of it goes)."""
        return self.keeper(keep)(layout)

    def keeper(self, keep: Mapping[str, np.ndarray]) -> Callable[[Layout | None], np.ndarray | None]:
        """:meth:`kept_mask` of any layout (None for no layout) with the same ``keep``: what survives of every
        group is worked out once, not once per layout (a candidate reads a few dozen layouts)."""
        touched = np.array([g.name in keep for g in self.all_groups], bool)
        if not touched.any():
            return lambda layout: None
        widths = np.array([g.width for g in self.all_groups])
        offsets = np.concatenate([[0], np.cumsum(widths)[:-1]])
        alive = np.ones(int(widths.sum()), bool)
        for i in np.flatnonzero(touched):
            mask = np.zeros(widths[i], bool)
            mask[np.asarray(keep[self.all_groups[i].name], int)] = True
            alive[offsets[i] : offsets[i] + widths[i]] = mask

        def kept_mask(layout):
            if layout is None or not touched[layout.group].any():
                return None
            return alive[offsets[layout.group] + layout.unit]

        return kept_mask

    def kept(self, keep: Mapping[str, np.ndarray]) -> Structure:
        """The structure of the model :func:`keras_grs.shrink` makes when each group named in ``keep`` keeps only
        those units (sorted, as :func:`keras_grs.surgery.kept_units` returns them), without building or analysing
        it: the groups' widths, and every channel layout without the removed units, the rest renumbered in order.

        Example:
            >>> import keras_grs
            >>> from keras_grs.surgery import kept_units
            >>> parent = keras_grs.models.build("nn1", (140,))
            >>> structure = keras_grs.analyze(parent)
            >>> remove = {"dense1": [0, 5], "dense3": [7]}
            >>> structure.kept(kept_units(structure, remove)) == keras_grs.analyze(keras_grs.shrink(parent, remove))
            True
        """
        position = {g.name: i for i, g in enumerate(self.all_groups)}
        renumbered = {}  # group index -> new unit of each old unit (-1: removed)
        for name, units in keep.items():
            table = np.full(self.all_groups[position[name]].width, -1, np.int64)
            table[np.asarray(units, np.int64)] = np.arange(len(units))
            renumbered[position[name]] = table

        kept_mask = self.keeper(keep)

        def cut(layout):
            alive = kept_mask(layout)
            if alive is None:
                return layout
            group, unit = layout.group[alive], layout.unit[alive].copy()
            for index, table in renumbered.items():
                mine = group == index
                unit[mine] = table[unit[mine]]
            return Layout(group, unit)

        steps = tuple(replace(step, inputs=tuple(cut(x) for x in step.inputs), output=cut(step.output))
                      for step in self.steps)
        groups = tuple(replace(g, width=len(keep[g.name])) if g.name in keep else g for g in self.all_groups)
        return Structure(groups=tuple(g for g in groups if g.pinned is None), layers=self.layers,
                         pinned=tuple(g for g in groups if g.pinned is not None), steps=steps, all_groups=groups)

    def __str__(self) -> str:
        return "x".join(str(w) for w in self.widths) if self.groups else "(no prunable layers)"


def layer_chain(model: keras.Model, accept: tuple = CHAIN_LAYERS) -> list[keras.layers.Layer]:
    """The model's layers in call order, checking that each takes the previous one's output.

    For the code that handles chains only. Raises UnsupportedLayerError for a subclassed model, a multi-input or
    multi-output model, a layer used twice, a merge (Add, Concatenate, ...) or a layer outside ``accept`` (the layer
    classes the caller handles: ``CHAIN_LAYERS``, or ``BATCHED_CHAIN_LAYERS`` for the batched evaluator), so that
    nothing downstream has to guess at the graph.
    """
    graph = _one_input_one_output(model)
    layers = [layer for layer in graph.layers if not isinstance(layer, keras.layers.InputLayer)]
    for op in graph.operations:
        if not isinstance(op, keras.layers.InputLayer):
            _check_accepted(op, accept, "chains only accept")
    previous = graph.inputs[0]
    own = {id(node) for node in _graph_nodes(graph)}
    for layer in layers:
        nodes = [n for n in layer._inbound_nodes if id(n) in own]
        if len(nodes) != 1:
            raise UnsupportedLayerError(
                f"layer {layer.name!r} is called {len(nodes)} times; shared layers are not supported"
            )
        inputs = nodes[0].input_tensors
        if len(inputs) != 1 or inputs[0] is not previous:
            raise UnsupportedLayerError(
                f"layer {layer.name!r} does not take the previous layer's output: branches, residual additions "
                "and concatenations are only supported by analyze and shrink"
            )
        previous = nodes[0].output_tensors[0]
    if previous is not graph.outputs[0]:
        raise UnsupportedLayerError(f"model {model.name!r} is not a chain of layers from its input to its output")
    return layers


def layer_graph(model: keras.Model, accept: tuple, ops: bool = False) -> list[tuple]:
    """The model's layers in topological order, each as (layer, the indices (into this list) of the layers whose
    outputs it takes, -1 for the model's input; its call in the graph): a chain's layer takes ``(i - 1,)``, a
    residual ``Add`` two or more. ``ops``: also take element-wise Keras ops (``x + y``, ``keras.ops.relu6(x)``) whose
    other arguments are scalar constants.

    For the code that handles single-input, single-output graphs of single-output layers, each called once (the
    batched evaluator). Raises UnsupportedLayerError for anything else, or a layer outside ``accept``.
    """
    graph = _one_input_one_output(model)
    producer = {id(graph.inputs[0]): -1}  # tensor -> the index of the layer that makes it
    layers, seen = [], set()
    for node in _graph_nodes(graph):
        op = node.operation
        if isinstance(op, keras.layers.InputLayer):
            continue
        if ops and is_op(op) and kind_of(op, node).role in ("merge", "channelwise"):
            pins = kind_of(op, node).pins
            reason = pins(op, node) if pins else None
            if reason:
                raise UnsupportedLayerError(f"op {op.name!r} ({type(op).__name__}): {reason}")
        else:
            _check_accepted(op, accept, "this accepts", node)
        if id(op) in seen:
            raise UnsupportedLayerError(f"layer {op.name!r} is called more than once; shared layers are not supported")
        if len(node.output_tensors) != 1:
            raise UnsupportedLayerError(f"layer {op.name!r} has {len(node.output_tensors)} outputs")
        missing = [t for t in node.input_tensors if id(t) not in producer]
        if missing or not node.input_tensors:
            raise UnsupportedLayerError(f"layer {op.name!r} takes a tensor made outside the model's graph")
        layers.append((op, tuple(producer[id(t)] for t in node.input_tensors), node))
        seen.add(id(op))
        producer[id(node.output_tensors[0])] = len(layers) - 1
    if not layers or producer.get(id(graph.outputs[0])) != len(layers) - 1:
        raise UnsupportedLayerError(f"model {model.name!r}: its output is not made by its last layer")
    return layers


def _one_input_one_output(model) -> Functional:
    graph = _functional(model)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedLayerError(
            f"model {model.name!r} has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; "
            "this needs one input and one output"
        )
    return graph


def _check_accepted(op, accept: tuple, accepting: str, node=None) -> None:
    """Raise UnsupportedLayerError naming ``op`` unless keras-grs knows it and it is one of ``accept`` (not a
    grouped convolution)."""
    kind_of(op, node)  # an unknown class is named with the supported list
    if not isinstance(op, accept):
        raise UnsupportedLayerError(
            f"layer {op.name!r} of class {type(op).__name__} is not supported here ({accepting} "
            f"{', '.join(sorted({cls.__name__ for cls in accept}))})"
        )
    if isinstance(op, (keras.layers.Conv1D, keras.layers.Conv2D)) and op.groups != 1:
        raise UnsupportedLayerError(f"layer {op.name!r} is a grouped convolution (groups={op.groups})")


def leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of the model but its inputs, in graph order, with nested models replaced by their layers."""
    leaves = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            leaves.extend(leaf_layers(layer))
        elif not isinstance(layer, keras.layers.InputLayer):
            leaves.append(layer)
    return leaves


def _functional(model) -> Functional:
    """The functional graph of a Sequential or Functional model."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a keras.Model, got {type(model).__name__}")
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise UnsupportedLayerError(
                f"Sequential model {model.name!r} has no input shape yet; start it with keras.Input(shape)"
            )
        return graph
    if not isinstance(model, Functional):
        raise UnsupportedLayerError(
            f"{type(model).__name__} is a subclassed model; keras-grs needs a Sequential or Functional model"
        )
    return model


def _graph_nodes(graph: Functional) -> list:
    """The graph's nodes (one call of a layer or op each) in topological order, inputs first."""
    nodes = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):  # private, but the only record of the call graph
        nodes.extend(graph._nodes_by_depth[depth])
    return nodes


class _Builder:
    """Groups under construction: raw ids are created in graph order and joined by merges (union-find)."""

    def __init__(self):
        self.width, self.origin, self.parent, self.reason = [], [], [], {}

    def new(self, width: int, origin: str, reason: str | None = None) -> Layout:
        gid = len(self.width)
        self.width.append(int(width))
        self.origin.append(origin)
        self.parent.append(gid)
        if reason:
            self.reason[gid] = reason
        return Layout(np.full(int(width), gid, np.int64), np.arange(int(width), dtype=np.int64))

    def find(self, gid: int) -> int:
        while self.parent[gid] != gid:
            self.parent[gid] = self.parent[self.parent[gid]]
            gid = self.parent[gid]
        return gid

    def roots(self, layout: Layout) -> np.ndarray:
        return np.array([self.find(int(g)) for g in layout.group], np.int64) if len(layout.group) else layout.group

    def pin(self, layout: Layout, reason: str) -> None:
        for gid in np.unique(layout.group):
            self.reason.setdefault(int(gid), reason)

    def join(self, layouts: list[Layout], reason: str) -> Layout:
        """Element-wise merge of equally wide layouts: unite the groups that meet channel by channel. Channels
        that meet in a different order (or groups of different widths) cannot move together: pinned."""
        base = layouts[0]
        for other in layouts[1:]:
            a, b = self.roots(base), self.roots(other)
            pairs = set(zip(a.tolist(), b.tolist()))
            aligned = np.array_equal(base.unit, other.unit) and all(self.width[x] == self.width[y] for x, y in pairs)
            if not aligned:
                self.pin(base, reason)
                self.pin(other, reason)
                continue
            for x, y in pairs:
                x, y = self.find(x), self.find(y)
                if x != y:
                    self.parent[max(x, y)] = min(x, y)
        return base


def analyze(
    model: keras.Model,
    min_width: int | dict[str, int] = 1,
    frozen: Iterable[str] = (),
    width_multiple: int = 1,
) -> Structure:
    """Find the width groups of a Sequential or Functional Keras model.

    Every layer that produces channels of its own (Dense, Conv, SeparableConv) starts a group; the group follows
    its channels through the graph (see the module docstring) and a residual merge joins the groups it adds. The
    groups that reach the model's output or input, or a layer that mixes channels, are pinned.

    Args:
        model: a built Keras 3 Sequential or Functional model (several inputs and outputs are fine) made of layers
            in :data:`keras_grs.layers.KINDS` and element-wise Keras ops.
        min_width: the smallest width a search may reach, for all groups or per group name.
        frozen: names of groups to pin (never pruned).
        width_multiple: searches should keep every width a multiple of this (recorded on each group).

    Returns:
        A :class:`Structure`. Nothing about the model is changed.

    Raises:
        UnsupportedLayerError: a layer keras-grs cannot prune through (named with its class), a shared layer or a
            subclassed model.
        ValueError: min_width or frozen naming unknown groups, a bad min_width or width_multiple (not a positive
            integer, or larger than a prunable group's width).

    Example:
        >>> from keras_grs import analyze, models
        >>> s = analyze(models.build("nn1", (140,)))
        >>> str(s), [g.name for g in s.groups]
        ('32x16x8', ['dense1', 'dense2', 'dense3'])
    """
    width_multiple = check_width_multiple(width_multiple)
    graph = _functional(model)
    builder, layouts, steps = _Builder(), {}, []
    _walk(graph, builder, layouts, steps, outer=None)
    for tensor in graph.outputs:
        builder.pin(layouts[id(tensor)], "model output")
    counts = Counter(step[0] for step in steps)
    twice = sorted(name for name, n in counts.items() if n > 1)
    if twice:
        raise UnsupportedLayerError(f"layer names {twice} are used twice (in nested models); rename them")
    return _resolve(builder, steps, min_width, frozen, width_multiple, model)


def _walk(graph, builder, layouts, steps, outer):
    """Record every call of ``graph`` (a nested model's graph when ``outer`` holds the layouts of its inputs)."""
    nodes = _graph_nodes(graph)
    calls = {}
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        if calls[id(node.operation)] > 1:
            raise UnsupportedLayerError(f"layer {node.operation.name!r} is called more than once; shared layers "
                                        "are not supported")
    for node in nodes:
        op = node.operation
        if node.is_input or isinstance(op, keras.layers.InputLayer):
            tensor = node.outputs[0]
            if outer is not None:  # a nested model's input is the outer tensor it is called on
                layouts[id(tensor)] = outer[next(i for i, t in enumerate(graph.inputs) if t is tensor)]
                continue
            layouts[id(tensor)] = builder.new(tensor.shape[-1], op.name, "model input")
            steps.append((op.name, "input", (), layouts[id(tensor)]))
            continue
        inputs = [layouts[id(t)] for t in node.input_tensors]
        if isinstance(op, keras.Model):
            inner = _functional(op)
            if len(node.input_tensors) != len(inner.inputs) or len(node.outputs) != len(inner.outputs):
                raise UnsupportedLayerError(f"nested model {op.name!r} is called with another input structure")
            _walk(inner, builder, layouts, steps, outer=inputs)
            for tensor, inner_output in zip(node.outputs, inner.outputs):
                layouts[id(tensor)] = layouts[id(inner_output)]
            continue
        role, output = _step(builder, op, node, inputs)
        for tensor in node.outputs:
            layouts[id(tensor)] = output
        steps.append((op.name, role, tuple(inputs), output))


def _step(builder: _Builder, op, node, inputs: list[Layout]) -> tuple[str, Layout]:
    """The role of one call and the channel layout of its output."""
    kind = kind_of(op, node)
    outputs = node.outputs
    shape = outputs[0].shape
    channels = shape[-1]
    if channels is None:
        raise UnsupportedLayerError(f"layer {op.name!r} has no known channel count (shape {shape})")
    what = f"{op.name} ({type(op).__name__})"
    reason = kind.pins(op, node) if kind.pins else None
    role = "pin" if reason or kind.role == "pin" else kind.role
    if len(outputs) != 1:
        role, reason = "pin", "several outputs"
    if role == "channelwise":
        multiplier = kind.multiplier(op) if kind.multiplier else 1
        layout = inputs[0]
        if multiplier > 1:
            layout = Layout(np.repeat(layout.group, multiplier), np.repeat(layout.unit, multiplier))
        if len(inputs) == 1 and len(layout.group) == channels:
            return role, layout
        role, reason = "pin", "changes the channel count"
    elif role == "reshape":
        before = node.input_tensors[0].shape
        if before[-1] == channels:
            return role, inputs[0]
        positions = np.prod(before[1:-1]) if None not in before[1:-1] else None
        if len(shape) == 2 and positions is not None and positions * before[-1] == channels:
            layout = inputs[0]
            return role, Layout(np.tile(layout.group, int(positions)), np.tile(layout.unit, int(positions)))
        role, reason = "pin", "moves channels"
    elif role == "concat" and (op.axis % len(shape)) == len(shape) - 1:
        return role, Layout(np.concatenate([x.group for x in inputs]), np.concatenate([x.unit for x in inputs]))
    elif role in ("merge", "concat"):
        full = [x for x in inputs if len(x.group) == channels]
        for x in inputs:
            if len(x.group) != channels:
                builder.pin(x, f"{what} broadcasts it over channels")
        if full:
            return role, builder.join(full, f"{what} merges channels in a different order")
        role, reason = "pin", "broadcasts every input"
    elif role == "producer":
        return role, builder.new(channels, op.name)
    # pin: what goes in stays, what comes out is new and fixed
    reason = reason or "mixes channels"
    for x in inputs:
        builder.pin(x, f"{what}: {reason}")
    return "pin", builder.new(channels, op.name, f"{what}: {reason}")


def _resolve(builder, steps, min_width, frozen, width_multiple, model) -> Structure:
    roots = [builder.find(g) for g in range(len(builder.width))]
    order = sorted(set(roots))  # the smallest raw id of a root is its first producer in graph order
    index = {root: i for i, root in enumerate(order)}
    reasons = {}
    for gid in sorted(builder.reason):
        reasons.setdefault(roots[gid], builder.reason[gid])
    names = [builder.origin[root] for root in order]
    lookup = np.array([index[r] for r in roots], np.int64)

    def final(layout):
        return Layout(lookup[layout.group], layout.unit)

    resolved = [Step(name, role, tuple(final(x) for x in ins), final(out)) for name, role, ins, out in steps]
    members = {i: set() for i in range(len(order))}
    for gid, root in enumerate(roots):
        members[index[root]].add(builder.origin[gid])
    carried = {i: [] for i in range(len(order))}
    consumed = {i: [] for i in range(len(order))}
    for step in resolved:
        for i in np.unique(step.output.group):
            carried[int(i)].append(step.name)
        if step.role in ("producer", "pin"):
            for x in step.inputs:
                for i in np.unique(x.group):
                    if step.name not in carried[int(i)]:
                        consumed[int(i)].append(step.name)
    weighted = {layer.name for layer in leaf_layers(model) if layer.weights}
    reshaping = {s.name for s in resolved if s.role == "reshape"}

    prunable_names = [names[i] for i in range(len(order)) if order[i] not in reasons]
    minimums = min_width if isinstance(min_width, dict) else {}
    frozen = list(frozen) if not isinstance(frozen, str) else [frozen]
    for label, requested in (("min_width", minimums), ("frozen", frozen)):
        unknown = sorted(set(requested) - set(names))
        if unknown:
            raise ValueError(f"{label} names unknown groups {unknown}; the groups are {prunable_names}")
    groups = []
    for i, root in enumerate(order):
        name, width = names[i], builder.width[root]
        reason = reasons.get(root) or ("frozen" if name in frozen else None)
        minimum = minimums.get(name, 1) if isinstance(min_width, dict) else int(min_width)
        if reason is None and not 1 <= minimum <= width:
            raise ValueError(f"min_width {minimum} of group {name!r} must be between 1 and its width {width}")
        if reason is None:
            GroupSpec(name, width, minimum, width_multiple)  # the search's rules: a multiple that fits the width
        dependents = [n for n in carried[i] if n not in members[i] and (n in weighted or n in reshaping)]
        dependents = _in_order(resolved, dependents + consumed[i])
        groups.append(WidthGroup(
            name=name, layer=name, dependents=tuple(dependents), width=width, min_width=minimum,
            layers=tuple(carried[i]), consumers=tuple(consumed[i]), width_multiple=width_multiple, pinned=reason,
        ))
    return Structure(
        groups=tuple(g for g in groups if g.pinned is None),
        layers=tuple(s.name for s in resolved if s.role != "input"),
        pinned=tuple(g for g in groups if g.pinned is not None),
        steps=tuple(resolved),
        all_groups=tuple(groups),
    )


def _in_order(steps, names):
    wanted = set(names)
    return [s.name for s in steps if s.name in wanted]
