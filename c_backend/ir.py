"""The intermediate description of a model for C generation: one typed operation per actor (``c_backend.ops``),
with shapes, weights as arrays, activation and storage form, and the edges of the dataflow graph (which operations
each one reads, and the FIFO of each edge). Templates only lay these out.

The model's functional graph is walked in topological order (``keras_grs.structure``'s walk). Fusions, only into
an operation whose output nothing else reads: an Activation/ReLU layer joins the operation that writes its input
when that one has no activation yet; a BatchNormalization directly after a Dense/Conv/DepthwiseConv without
activation is folded into its weights; in float32, a max/average pooling with windows that do not overlap joins
the convolution that writes its input (:func:`_fuse_pooling`). Dropout, Flatten, Reshape, Identity and InputLayer
change nothing in a channels-last buffer and produce no actor: their consumers read their input's buffer.
"""

from __future__ import annotations

import keras
import numpy as np

from collections import Counter

from c_backend import ops as O
from keras_grs.layers import is_op, kind_of
from keras_grs.structure import UnsupportedLayerError, _functional, _graph_nodes, analyze, layer_chain

ACTIVATIONS = ("linear", "relu", "relu6", "sigmoid", "tanh", "softmax", "silu", "hard_sigmoid", "hard_silu")
INT8_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax")
C_KEYWORDS = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else", "enum", "extern",
    "float", "for", "goto", "if", "inline", "int", "long", "register", "restrict", "return", "short", "signed",
    "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void", "volatile", "while", "main",
}
FUSES_ACTIVATION = (O.Dense, O.Conv, O.Depthwise, O.Affine)
FOLDS_BATCHNORM = (O.Dense, O.Conv, O.Depthwise)
# Plain Keras ops in a functional graph, by class name: element-wise on two tensors (a merge), with one tensor and
# a scalar (a scale-and-shift), or an activation of one tensor.
OP_MERGES = {"Add": "add", "Subtract": "subtract", "Multiply": "multiply", "Maximum": "maximum", "Minimum": "minimum"}
OP_SCALAR = ("Add", "Subtract", "Multiply", "Divide", "TrueDivide")
OP_ACTIVATIONS = {"Relu": "relu", "Relu6": "relu6", "Sigmoid": "sigmoid", "Tanh": "tanh", "Silu": "silu",
                  "HardSigmoid": "hard_sigmoid", "HardSilu": "hard_silu"}
MERGES = {keras.layers.Add: "add", keras.layers.Subtract: "subtract", keras.layers.Multiply: "multiply",
          keras.layers.Average: "average", keras.layers.Maximum: "maximum", keras.layers.Minimum: "minimum"}
SPARSE_DENSITY = 0.5  # sparse="auto" stores a Dense layer sparsely at or below this density
# Output units computed together by the float Dense kernel: each loaded input feeds this many accumulators. Eight
# accumulators, eight weights and the input fill 17 of the VFP's 32 single registers on ARMv6.
DENSE_BLOCK = 8
# A float convolution whose patch holds at most SMALL_PATCH values (a first convolution over one or three channels)
# computes a group of output positions at once (:func:`position_group`): each loaded weight serves the whole group,
# and the group's patches stay in registers across the filters. Without pooling, POSITION_GROUP positions; with a
# fused pooling, the positions of one pooling window (at most MAX_POOL_GROUP).
SMALL_PATCH = 12
POSITION_GROUP = 4
MAX_POOL_GROUP = 9


def c_identifier(name: str, taken: set[str] | None = None) -> str:
    """A valid, unused C identifier made from ``name`` (anything else becomes ``_``)."""
    text = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in str(name)) or "m"
    if text[0].isdigit():
        text = f"m_{text}"
    if text in C_KEYWORDS or text.startswith("lide_c"):
        text = f"{text}_"
    if taken is not None:
        base, n = text, 2
        while text in taken:
            text = f"{base}_{n}"
            n += 1
        taken.add(text)
    return text


def _activation_call(layer, node) -> str | None:
    """The activation a layer or op call applies on its own (an Activation or ReLU layer, ``keras.ops.relu6(x)``),
    or None when it is something else."""
    if isinstance(layer, (keras.layers.Activation, keras.layers.ReLU)):
        return _activation(layer)
    name = type(layer).__name__
    if is_op(layer) and name in OP_ACTIVATIONS and len(node.arguments.args) == 1 and not node.arguments.kwargs:
        return OP_ACTIVATIONS[name]
    return None


def _activation(layer) -> str:
    if isinstance(layer, keras.layers.ReLU):
        six = layer.max_value is not None and float(layer.max_value) == 6.0
        if (layer.max_value is not None and not six) or float(layer.negative_slope) != 0 or float(layer.threshold) != 0:
            raise UnsupportedLayerError(f"layer {layer.name!r}: only a plain ReLU or ReLU6 is supported in C")
        return "relu6" if six else "relu"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", "linear")
    if name not in ACTIVATIONS:
        raise UnsupportedLayerError(
            f"layer {layer.name!r} uses activation {name!r}; C export supports {', '.join(ACTIVATIONS)}"
        )
    return name


def _padding(size_in, size_out, kernel, stride, padding) -> int:
    """Zeros before the first row (or column) of the input: none for ``valid``, all ``kernel - 1`` for a causal
    Conv1D, and for ``same`` half of what the output needs (the smaller half, as Keras)."""
    if padding == "valid":
        return 0
    if padding == "causal":
        return kernel - 1
    return max((size_out - 1) * stride + kernel - size_in, 0) // 2


def _as_2d(shape):
    """(H, W, C) for 2-D layers, (1, L, C) for 1-D ones."""
    return (1, *shape) if len(shape) == 2 else tuple(shape)


def describe(model, name: str, precision="float32", sparse="auto", calibration=None) -> list[O.Op]:
    """The operations (actors) of ``model`` in topological order, wired into a dataflow graph.

    Each operation's ``sources`` are the operations whose outputs it reads (None: the model input), in the order of
    its layer's inputs; ``in_fifos``/``out_fifos`` are the FIFOs of its edges (see :func:`wire`). A chain of layers
    gives a chain of actors: actor i reads FIFO i and writes FIFO i + 1. See the module docstring for the fusions.
    """
    if precision not in ("float32", "int8"):
        raise ValueError(f"precision must be 'float32' or 'int8', got {precision!r}")
    if sparse not in ("auto", "never", "always"):
        raise ValueError(f"sparse must be 'auto', 'never' or 'always', got {sparse!r}")
    analyze(model)  # refuses unknown layers, shared layers and subclassed models, naming them
    if precision == "int8" and calibration is None:
        raise ValueError("precision='int8' needs calibration data: export(..., calibration=x_sample)")
    if precision == "int8":
        try:
            layers = layer_chain(model)
        except UnsupportedLayerError as error:
            raise UnsupportedLayerError(
                f"precision='int8' exports chains of layers only: {error}; export this model in float32"
            ) from None
    ops = _graph_ops(model, name, {name})
    if precision == "int8":
        from c_backend.quantize import quantize_ops

        for op in ops:
            if op.activation not in INT8_ACTIVATIONS:
                raise UnsupportedLayerError(
                    f"layer {op.keras_source!r}: activation {op.activation!r} has no int8 form; "
                    f"int8 supports {', '.join(INT8_ACTIVATIONS)}"
                )
        ops = quantize_ops(name, {name, *(op.actor for op in ops)}, layers, ops,
                           np.asarray(calibration, dtype="float32"))
        for i, op in enumerate(ops):  # the int8 actors (with quantize and dequantize) form a chain
            op.sources = [i - 1 if i else None]
        return wire(ops)
    return wire([_finish(op, sparse) for op in _fuse_pooling(ops)])


def wire(ops: list[O.Op]) -> list[O.Op]:
    """Give every edge of the graph a FIFO of one token (a pointer to the producer's output buffer): one per input
    of each operation, numbered in operation order, then one for the model output (the last FIFO). A producer
    read by several operations writes its pointer into each of their FIFOs. Sets ``in_fifos``, ``out_fifos`` and
    the C names of the ports (``in``/``out`` for one, ``in0``, ``in1``, ... for several) on each operation."""
    for op in ops:
        op.out_fifos = []
    fifo = 0
    for op in ops:
        op.in_fifos = []
        for source in op.sources:
            op.in_fifos.append(fifo)
            if source is not None:
                ops[source].out_fifos.append(fifo)
            fifo += 1
    ops[-1].out_fifos.append(fifo)  # the model output
    for op in ops:
        op.in_ports = _ports("in", len(op.in_fifos))
        op.out_ports = _ports("out", len(op.out_fifos))
        op.in_vars = _ports("x", len(op.in_fifos))
    return ops


def pooling_fuses(conv: O.Op | None, pool: O.Op, readers: int) -> bool:
    """Whether the float32 ``pool`` joins ``conv``, the op writing its input, which ``readers`` ops read: a
    max/average pooling whose input only a convolution writes and only the pooling reads, with windows that do not
    overlap (strides at least the window, so no convolution output is computed twice), after a convolution without
    softmax (which must see the whole position) and not already fused. The export (:func:`_fuse_pooling`) and the
    latency estimate (``keras_grs.latency``, through :func:`fused_convolutions`) decide by it."""
    return type(pool) is O.Pool and type(conv) is O.Conv and readers == 1 and conv.pool is None \
        and conv.activation != "softmax" and pool.s_h >= pool.p_h and pool.s_w >= pool.p_w


def small_patch(patch: int, activation: str) -> bool:
    """Whether a float32 convolution with ``patch`` values per position and this activation runs the kernel that
    computes several positions at once (:func:`position_group`); the latency estimate reads the same rule."""
    return patch <= SMALL_PATCH and activation != "softmax"


def position_group(op: O.Conv) -> int:
    """The output positions the float32 kernel of ``op`` computes together (0: one at a time, the patch kernel).

    A small patch (:func:`small_patch`) groups ``POSITION_GROUP`` consecutive positions, or with a fused pooling the
    positions of one pooling window, when every window lies inside the convolution's output (no pooling padding)
    and holds at most ``MAX_POOL_GROUP`` of them; other fused poolings keep the patch kernel, which skips the cells
    in the padding.

    Example:
        >>> from c_backend.ops import Conv
        >>> op = Conv(layer="c", actor="m_c", in_shape=(6, 6, 1), out_shape=(5, 5, 4), in_h=6, in_w=6, out_h=5,
        ...           out_w=5, in_c=1, k_h=2, k_w=2, filters=4)
        >>> position_group(op), position_group(Conv(**{**op.__dict__, "in_c": 4}))
        (4, 0)
    """
    if not small_patch(op.k_h * op.k_w * op.in_c, op.activation):
        return 0
    pool = op.pool
    if pool is None:
        return POSITION_GROUP
    inside = pool.pad_t == 0 and pool.pad_l == 0 and (pool.out_h - 1) * pool.s_h + pool.p_h <= op.out_h \
        and (pool.out_w - 1) * pool.s_w + pool.p_w <= op.out_w
    window = pool.p_h * pool.p_w
    return window if inside and window <= MAX_POOL_GROUP else 0


def filters_together(group: int, patch: int, filters: int) -> int:
    """Filters the grouped kernel's scalar form (the ARM1176's VFP) computes in one pass: two, so that twice the
    accumulators hide the VFP's multiply-accumulate latency, where the group's patches, the accumulators and a pair
    of weights fit the 32 single registers and the accumulators the 30 operands of one asm statement (two each);
    else one."""
    return 2 if filters > 1 and group * patch + 2 * group + 2 <= 32 and 2 * group <= 8 else 1


def fused_convolutions(model) -> dict[str, O.Conv]:
    """The float32 convolution ops of ``model``'s export that take a pooling in (:func:`pooling_fuses`), by the
    name of the layer each comes from; empty for a model the C backend cannot export. The pooling is ``.pool``.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3, name="c"),
        ...                           keras.layers.MaxPooling2D(2, name="p"), keras.layers.Flatten()])
        >>> fused = fused_convolutions(model)
        >>> fused["c"].pool.layer, (fused["c"].out_h, fused["c"].pool.out_h)
        ('p', (4, 2))
    """
    try:
        ops = _graph_ops(model, "m", {"m"})
    except UnsupportedLayerError:
        return {}
    return {op.layer: op for op in _fuse_pooling(ops) if type(op) is O.Conv and op.pool is not None}


def _fuse_pooling(ops: list[O.Op]) -> list[O.Op]:
    """Float32: a pooling joins the convolution that writes its input when :func:`pooling_fuses` says so
    (``Conv.pool``). The actor then writes the pooled output: the pre-pool tensor gets no buffer, no FIFO and no
    pass of its own."""
    readers = Counter(source for op in ops for source in op.sources)
    index, kept = {}, []
    for i, op in enumerate(ops):
        source = op.sources[0] if len(op.sources) == 1 else None
        conv = ops[source] if source is not None else None
        if pooling_fuses(conv, op, readers[source]):
            conv.pool, conv.out_shape = op, op.out_shape
            conv.scratch = ("float", conv.scratch[1] + conv.filters)  # the patch, then one position's outputs
            conv.description += f", then {op.description} (fused)"
            index[i] = index[source]
            continue
        index[i] = len(kept)
        kept.append(op)
    for op in kept:
        op.sources = [None if source is None else index[source] for source in op.sources]
    return kept


def _ports(stem, count):
    return [stem] if count == 1 else [f"{stem}{i}" for i in range(count)]


def _graph_ops(model, name, taken) -> list[O.Op]:
    """The float operations of the model's graph, fused, with their ``sources``."""
    graph = _functional(model)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedLayerError(
            f"model {model.name!r} has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; "
            "C export needs one input and one output"
        )
    nodes = [n for n in _graph_nodes(graph) if not (n.is_input or isinstance(n.operation, keras.layers.InputLayer))]
    for node in nodes:
        if isinstance(node.operation, keras.Model):
            raise UnsupportedLayerError(f"layer {node.operation.name!r} is a nested model; flatten it into one model "
                                        "for C export")
        if len(node.outputs) != 1:
            raise UnsupportedLayerError(f"layer {node.operation.name!r} has {len(node.outputs)} outputs")
    # The buffer a tensor lives in: layers that change nothing in a channels-last buffer alias their input's.
    buffer = {id(graph.inputs[0]): id(graph.inputs[0])}
    for node in nodes:
        out = node.outputs[0]
        buffer[id(out)] = buffer[id(node.input_tensors[0])] if _actor(node.operation, node) == "identity" else id(out)
    reads = Counter(buffer[id(t)] for node in nodes if _actor(node.operation, node) != "identity"
                    for t in node.input_tensors)
    reads[buffer[id(graph.outputs[0])]] += 1
    producer = {id(graph.inputs[0]): None}  # buffer -> index of the op that writes it (None: the model input)
    ops: list[O.Op] = []

    def emit(node, op, sources=None):
        op.sources = sources if sources is not None else [producer[buffer[id(t)]] for t in node.input_tensors]
        ops.append(op)
        producer[id(node.outputs[0])] = len(ops) - 1

    for node in nodes:
        layer = node.operation
        if _actor(layer, node) == "identity":
            continue
        source = buffer[id(node.input_tensors[0])]
        # only an op whose output nothing else reads may take this layer's work into itself
        previous = ops[producer[source]] if producer[source] is not None and reads[source] == 1 else None
        fused = _fuse(layer, node, previous)
        if fused:
            producer[id(node.outputs[0])] = producer[source]
            continue
        for k, op in enumerate(_translate(layer, node, name, taken)):
            emit(node, op, None if k == 0 else [len(ops) - 1])  # a SeparableConv's second half reads its first
    if not ops:
        raise UnsupportedLayerError("the model computes nothing that needs an actor")
    last = producer[buffer[id(graph.outputs[0])]]
    if last != len(ops) - 1:  # cannot happen in a graph whose every node leads to the output, but say so if it does
        raise UnsupportedLayerError(f"model {model.name!r}: the output is not computed last")
    return ops


def _fuse(layer, node, previous) -> bool:
    """Fold ``layer`` into ``previous`` (the op writing its input, read by nothing else) when the chain rules allow:
    an activation into an op without one, a BatchNormalization into a Dense/Conv/Depthwise without activation."""
    if previous is None:
        return False
    activation = _activation_call(layer, node)
    if activation is not None:
        if previous.activation == "linear" and isinstance(previous, FUSES_ACTIVATION):
            previous.activation = activation
            previous.description += f", then {activation}"
            previous.keras_pre, previous.keras_source = previous.keras_source, layer.name
            return True
        return False
    if isinstance(layer, keras.layers.BatchNormalization):
        in_shape = tuple(int(d) for d in node.input_tensors[0].shape[1:])
        if isinstance(previous, FOLDS_BATCHNORM) and previous.activation == "linear" \
                and previous.out_shape == in_shape:
            scale, shift = _bn_affine(layer)
            previous.raw = (previous.raw[0] * scale[:, None], previous.raw[1] * scale + shift)
            previous.description += ", BatchNormalization folded in"
            previous.keras_source = layer.name
            return True
    return False


def _actor(operation, node=None) -> str | None:
    """The actor of a layer or op by keras-grs' table of layer kinds (``identity``: none, the buffer is passed on;
    None: no C translation)."""
    try:
        return kind_of(operation, node).actor
    except UnsupportedLayerError:
        return None


def _translate(layer, node, name, taken) -> list[O.Op]:
    """The ops of one layer call: one, or two for a SeparableConv (depthwise, then pointwise reading it)."""
    # a plain Keras op outside the table still gets _keras_op's word on what it would need
    translate = TRANSLATIONS.get(_actor(layer, node)) or (_keras_op if is_op(layer) else None)
    if translate is None:
        raise UnsupportedLayerError(f"layer {layer.name!r} ({type(layer).__name__}) has no C translation")
    in_shape = tuple(int(d) for d in node.input_tensors[0].shape[1:])
    out_shape = tuple(int(d) for d in node.outputs[0].shape[1:])
    ops = translate(layer, node, name, taken, in_shape, out_shape)
    return ops if isinstance(ops, list) else [ops]


def _activation_actor(layer, node, name, taken, in_shape, out_shape):
    activation = _activation(layer)
    return _op(O.Activation, layer, name, taken, in_shape, out_shape, activation=activation,
               description=f"{activation} on {int(np.prod(out_shape))} values")


def _affine_actor(layer, node, name, taken, in_shape, out_shape):
    """BatchNormalization, Normalization and Rescaling as one scale and shift per channel."""
    L, channels = keras.layers, out_shape[-1]
    if isinstance(layer, L.BatchNormalization):
        scale, shift = _bn_affine(layer)
        what = "BatchNormalization"
    elif isinstance(layer, L.Normalization):
        scale, shift = _normalization_affine(layer, channels)
        what = "Normalization"
    else:
        scale = np.broadcast_to(np.asarray(layer.scale, np.float64), (channels,))
        shift = np.broadcast_to(np.asarray(layer.offset, np.float64), (channels,))
        what = "Rescaling"
    return _op(O.Affine, layer, name, taken, in_shape, out_shape, scale=np.array(scale, np.float64),
               shift=np.array(shift, np.float64), description=f"{what} on {channels} channels")


def _dense_actor(layer, node, name, taken, in_shape, out_shape):
    kernel, bias = _kernel_bias(layer)
    return _op(O.Dense, layer, name, taken, in_shape, out_shape, activation=_activation(layer),
               inputs=in_shape[-1], units=out_shape[-1], description=f"Dense {in_shape[-1]} -> {out_shape[-1]}",
               raw=(kernel.T.copy(), bias))  # [units][inputs]


def _depthwise_actor(layer, node, name, taken, in_shape, out_shape):
    return _depthwise(layer, name, taken, in_shape, out_shape)


def _separable_actor(layer, node, name, taken, in_shape, out_shape):
    _no_dilation(layer)
    depthwise = _depthwise(layer, name, taken, in_shape, out_shape, suffix="_depthwise")
    middle = (*out_shape[:-1], depthwise.channels)
    pointwise = _conv(layer, name, taken, middle, out_shape, layer.pointwise_kernel, strides=(1, 1),
                      padding="valid")
    pointwise.description = "pointwise " + pointwise.description
    return [depthwise, pointwise]


def _conv_actor(layer, node, name, taken, in_shape, out_shape):
    if layer.groups != 1:  # a depthwise one (one input channel per group) is the depthwise actor's
        raise UnsupportedLayerError(f"layer {layer.name!r} is a grouped convolution (groups={layer.groups}); "
                                    "C export supports depthwise ones (one input channel per group) only")
    return _conv(layer, name, taken, in_shape, out_shape, layer.kernel, layer.strides, layer.padding)


def _pool_actor(layer, node, name, taken, in_shape, out_shape):
    mode = "max" if "Max" in type(layer).__name__ else "avg"
    (ih, iw, c), (oh, ow, _) = _as_2d(in_shape), _as_2d(out_shape)
    pool = tuple(np.atleast_1d(layer.pool_size))
    strides = tuple(np.atleast_1d(layer.strides))
    (ph, pw), (sh, sw) = ((1, pool[0]), (1, strides[0])) if len(pool) == 1 else (pool, strides)
    return _op(O.Pool, layer, name, taken, in_shape, out_shape, mode=mode,
               in_h=ih, in_w=iw, out_h=oh, out_w=ow, p_h=ph, p_w=pw, s_h=sh, s_w=sw,
               pad_t=_padding(ih, oh, ph, sh, layer.padding), pad_l=_padding(iw, ow, pw, sw, layer.padding),
               description=f"{mode} pooling {ph}x{pw}, output {oh}x{ow}x{c}")


def _global_pool_actor(layer, node, name, taken, in_shape, out_shape):
    mode = "max" if "Max" in type(layer).__name__ else "avg"
    return _op(O.GlobalPool, layer, name, taken, in_shape, out_shape, mode=mode,
               spatial=int(np.prod(in_shape[:-1])), description=f"global {mode} pooling of {in_shape[-1]} channels")


def _shift_actor(cls, what, edges):
    """ZeroPadding and Cropping both move the input by whole rows and columns: padding writes it at an offset,
    cropping reads from one."""
    def translate(layer, node, name, taken, in_shape, out_shape):
        (top, _), (left, _) = getattr(layer, edges) if len(in_shape) == 3 else ((0, 0), getattr(layer, edges))
        (ih, iw, c), (oh, ow, _) = _as_2d(in_shape), _as_2d(out_shape)
        return _op(cls, layer, name, taken, in_shape, out_shape, in_h=ih, in_w=iw,
                   out_h=oh, out_w=ow, top=int(top), left=int(left),
                   description=f"{what} {ih}x{iw} -> {oh}x{ow} ({c} channels)")

    return translate


def _merge_actor(layer, node, name, taken, in_shape, out_shape):
    return _merge(layer, node, name, taken, out_shape)


def _concat_actor(layer, node, name, taken, in_shape, out_shape):
    if layer.axis % (len(out_shape) + 1) != len(out_shape):
        raise UnsupportedLayerError(f"layer {layer.name!r} concatenates on axis {layer.axis}; C export "
                                    "supports the channel (last) axis only")
    widths = [int(t.shape[-1]) for t in node.input_tensors]
    # its input size counts every input, as the output does
    return _op(O.Concat, layer, name, taken, out_shape, out_shape, widths=widths,
               description=f"concatenation of {' + '.join(map(str, widths))} channels")


def _keras_op(op, node, name, taken, in_shape, out_shape) -> O.Op:
    """A plain Keras op: an activation, an element-wise op on two tensors (a merge), or one with a scalar constant
    (a scale and shift per channel, as hard-swish's ``x + 3.0`` and ``* (1 / 6)``)."""
    kind = type(op).__name__
    activation = _activation_call(op, node)
    if activation is not None:
        return _op(O.Activation, op, name, taken, in_shape, out_shape, activation=activation,
                   description=f"{activation} on {int(np.prod(out_shape))} values")
    if kind in OP_MERGES and len(node.input_tensors) > 1:
        return _merge(op, node, name, taken, out_shape, OP_MERGES[kind])
    args = list(node.arguments.args)
    constants = [a for a in args if not isinstance(a, keras.KerasTensor)]
    if kind in OP_SCALAR and len(args) == 2 and len(constants) == 1 and np.ndim(constants[0]) == 0 \
            and not node.arguments.kwargs:
        c, tensor_first = float(constants[0]), isinstance(args[0], keras.KerasTensor)
        affine = {"Add": (1.0, c), "Multiply": (c, 0.0), "Subtract": (1.0, -c) if tensor_first else (-1.0, c)}
        if tensor_first and c != 0:  # x / c; c / x is no scale and shift
            affine["Divide"] = affine["TrueDivide"] = (1.0 / c, 0.0)
        if kind in affine:
            (scale, shift), channels = affine[kind], out_shape[-1]
            return _op(O.Affine, op, name, taken, in_shape, out_shape, scale=np.full(channels, scale),
                       shift=np.full(channels, shift),
                       description=f"{kind} with the constant {c:g}")
    raise UnsupportedLayerError(f"op {op.name!r} ({kind}) has no C translation; write it as a layer")


# the translation of each actor of keras_grs.layers' table (Kind.actor)
TRANSLATIONS = {
    "activation": _activation_actor, "affine": _affine_actor, "dense": _dense_actor, "conv": _conv_actor,
    "depthwise": _depthwise_actor, "separable": _separable_actor, "pool": _pool_actor,
    "global_pool": _global_pool_actor, "pad": _shift_actor(O.Pad, "zero padding", "padding"),
    "crop": _shift_actor(O.Crop, "cropping", "cropping"), "merge": _merge_actor, "concat": _concat_actor,
    "op": _keras_op,
}


def _channel_axis_only(layer):
    rank = len(layer.input.shape)
    if [a % rank for a in np.atleast_1d(layer.axis)] != [rank - 1]:
        raise UnsupportedLayerError(f"layer {layer.name!r} normalizes axis {layer.axis}; C export supports the "
                                    "channel (last) axis only")


def _normalization_affine(layer, channels):
    """A Normalization layer at inference: (x - mean) / max(sqrt(variance), epsilon), or its inverse."""
    _channel_axis_only(layer)
    mean = np.broadcast_to(keras.ops.convert_to_numpy(layer.mean).astype(np.float64).reshape(-1), (channels,))
    variance = keras.ops.convert_to_numpy(layer.variance).astype(np.float64).reshape(-1)
    deviation = np.broadcast_to(np.maximum(np.sqrt(variance), keras.backend.epsilon()), (channels,))
    if layer.invert:
        return deviation, mean
    return 1.0 / deviation, -mean / deviation


def _no_dilation(layer):
    if any(d != 1 for d in np.atleast_1d(layer.dilation_rate)):
        raise UnsupportedLayerError(f"layer {layer.name!r}: dilated convolutions are not supported in C")


def _conv(layer, name, taken, in_shape, out_shape, kernel, strides, padding):
    """A Conv1D/2D (or a SeparableConv's pointwise half) as a ``conv`` op."""
    _no_dilation(layer)
    kernel, bias = _kernel_bias(layer, kernel)
    if kernel.ndim == 3:
        kernel = kernel[None]
    (ih, iw, ic), (oh, ow, f) = _as_2d(in_shape), _as_2d(out_shape)
    kh, kw = kernel.shape[:2]
    strides = tuple(np.atleast_1d(strides))
    sh, sw = (1, strides[0]) if len(strides) == 1 else strides
    return _op(O.Conv, layer, name, taken, in_shape, out_shape, activation=_activation(layer),
               in_h=ih, in_w=iw, in_c=ic, out_h=oh, out_w=ow, filters=f, k_h=kh, k_w=kw, s_h=sh, s_w=sw,
               pad_t=_padding(ih, oh, kh, sh, padding), pad_l=_padding(iw, ow, kw, sw, padding),
               scratch=("float", kh * kw * ic),
               description=f"Conv {kh}x{kw}, {ic} -> {f} channels, output {oh}x{ow}",
               raw=(np.transpose(kernel, (3, 0, 1, 2)).reshape(f, -1).copy(), bias))  # [filter][kh][kw][c]


def _depthwise(layer, name, taken, in_shape, out_shape, suffix=""):
    """A DepthwiseConv (any multiplier), a depthwise grouped Conv, or a SeparableConv's depthwise half (no bias, no
    activation of its own): output channel c * m + j reads input channel c only."""
    _no_dilation(layer)
    separable = bool(suffix)
    kernel = layer.depthwise_kernel if separable else layer.kernel
    kernel = keras.ops.convert_to_numpy(kernel).astype(np.float64)
    if kernel.ndim == 3:
        kernel = kernel[None]
    (ih, iw, ic), (oh, ow, _) = _as_2d(in_shape), _as_2d(out_shape)
    kh, kw = kernel.shape[:2]
    channels = kernel.shape[2] * kernel.shape[3]  # (kh, kw, C, m) and a grouped (kh, kw, 1, C * m): c * m + j
    multiplier = channels // ic
    strides = tuple(np.atleast_1d(layer.strides))
    sh, sw = (1, strides[0]) if len(strides) == 1 else strides
    bias = np.zeros(channels) if separable or not layer.use_bias else \
        keras.ops.convert_to_numpy(layer.bias).astype(np.float64)
    return _op(O.Depthwise, layer, name, taken, in_shape, (*out_shape[:-1], channels), actor_name=layer.name + suffix,
               activation="linear" if separable else _activation(layer),
               in_h=ih, in_w=iw, in_c=ic, out_h=oh, out_w=ow, multiplier=multiplier, k_h=kh, k_w=kw, s_h=sh, s_w=sw,
               pad_t=_padding(ih, oh, kh, sh, layer.padding), pad_l=_padding(iw, ow, kw, sw, layer.padding),
               description=f"depthwise conv {kh}x{kw}, {ic} channels x {multiplier}, output {oh}x{ow}",
               raw=(kernel.reshape(kh * kw, channels).T.copy(), bias))  # [output channel][kh * kw]


def _merge(layer, node, name, taken, out_shape, mode=None):
    """An element-wise merge; an input of one value per channel ((1, 1, C): a squeeze-and-excitation gate) is
    broadcast over the positions."""
    channels, size = out_shape[-1], int(np.prod(out_shape))
    broadcast = []
    for tensor in node.input_tensors:
        shape = tuple(int(d) for d in tensor.shape[1:])
        if int(np.prod(shape)) == size and shape[-1] == channels:
            broadcast.append(False)
        elif int(np.prod(shape)) == channels and shape[-1] == channels:
            broadcast.append(True)
        else:
            raise UnsupportedLayerError(f"layer {layer.name!r} broadcasts an input of shape {shape} to {out_shape}; "
                                        "C export broadcasts one value per channel only")
    mode = mode or MERGES[type(layer)]
    return _op(O.Merge, layer, name, taken, out_shape, out_shape, mode=mode, broadcast=broadcast,
               description=f"{mode} of {len(broadcast)} inputs"
               + (" (one broadcast per channel)" if any(broadcast) else ""))


def _op(cls, layer, model_name, taken, in_shape, out_shape, actor_name=None, **fields) -> O.Op:
    return cls(layer=c_identifier(layer.name), actor=c_identifier(f"{model_name}_{actor_name or layer.name}", taken),
               in_shape=tuple(in_shape), out_shape=tuple(out_shape), keras_source=layer.name, keras_pre=layer, **fields)


def _kernel_bias(layer, kernel=None):
    kernel = keras.ops.convert_to_numpy(layer.kernel if kernel is None else kernel).astype(np.float64)
    bias = keras.ops.convert_to_numpy(layer.bias).astype(np.float64) if layer.use_bias else np.zeros(kernel.shape[-1])
    return kernel, bias


def _bn_affine(layer):
    """A BatchNormalization at inference as a per-channel scale and shift."""
    _channel_axis_only(layer)
    mean = keras.ops.convert_to_numpy(layer.moving_mean).astype(np.float64)
    variance = keras.ops.convert_to_numpy(layer.moving_variance).astype(np.float64)
    gamma = keras.ops.convert_to_numpy(layer.gamma).astype(np.float64) if layer.scale else np.ones_like(mean)
    beta = keras.ops.convert_to_numpy(layer.beta).astype(np.float64) if layer.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + layer.epsilon)
    return scale, beta - mean * scale


def _finish(op: O.Op, sparse: str) -> O.Op:
    """The op with its weights in the order its kernel reads them (a sparse Dense op when ``sparse`` says so)."""
    op.keras_source = op.keras_pre = None
    if not isinstance(op, O.Weighted):
        return op
    (weights, bias), op.raw = op.raw, None
    op.bias = bias
    nonzero = int(np.count_nonzero(weights))
    density = nonzero / weights.size
    if isinstance(op, O.Dense) and (sparse == "always" or (sparse == "auto" and density <= SPARSE_DENSITY)):
        rows, columns = np.nonzero(weights)
        return op.retyped(
            O.SparseDense, row_start=np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=weights.shape[0]))]),
            column=columns, nonzero_values=weights[rows, columns], nonzero=nonzero, density=density,
            index_type="unsigned short" if weights.shape[1] <= 65535 else "int",
            description=op.description + f" (sparse, {nonzero} non-zero weights)")
    if isinstance(op, O.Conv) and position_group(op):  # per filter its weights, then its bias
        op.group, op.scratch = position_group(op), None  # the patches live in registers
        op.together = filters_together(op.group, op.k_h * op.k_w * op.in_c, op.filters)
        op.weights = np.concatenate([weights, bias[:, None]], axis=1).ravel()
    elif isinstance(op, (O.Dense, O.Conv)):  # a convolution is a Dense layer applied to each gathered patch
        op.blocks, op.weights = _dense_blocks(weights)
    else:  # depthwise: read tap by tap, each tap's weights for every output channel side by side
        op.blocks, op.weights = _blocks(op.channels), weights.T.ravel()  # channels computed together
    return op


def _dense_blocks(weights: np.ndarray) -> tuple[list[dict], np.ndarray]:
    """Blocks of output units (``DENSE_BLOCK`` wide, then the rest), and the ``[units][inputs]`` weights packed in
    the order the kernel reads them: block by block, input by input, the block's units side by side."""
    blocks = _blocks(weights.shape[0])
    packed = [weights[u:u + b["size"]].T.ravel() for b in blocks
              for u in range(b["start"], b["start"] + b["count"] * b["size"], b["size"])]
    return blocks, np.concatenate(packed)


def _blocks(units: int) -> list[dict]:
    """``units`` in blocks of ``DENSE_BLOCK`` (``count`` of them from ``start``), then one block of the rest."""
    full, rest = divmod(units, DENSE_BLOCK)
    blocks = [{"size": DENSE_BLOCK, "count": full, "start": 0}] if full else []
    if rest:
        blocks.append({"size": rest, "count": 1, "start": full * DENSE_BLOCK})
    return blocks
