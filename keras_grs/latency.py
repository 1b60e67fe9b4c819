"""An estimate of a model's inference time on the Raspberry Pi Zero, as keras-grs's generated C would run it.

No compiler and no emulator are needed: each layer becomes the actor the C backend would make of it, described by a
few shape features (multiply-accumulates, output elements, gathered patch elements, ...), and its cycles are a linear
function of them, one set of coefficients per actor kind and precision. The coefficients are fitted by
``benchmarks/latency_model.py`` (``make bench-latency``) to the ARMv6 meter (``c_backend.armv6``: instructions counted
under ``qemu-arm -cpu arm1176`` and timed by its cycle model ``estimate_cycles``) on random layers, and stored in
``latency_pi_zero.json`` next to this file. The result is therefore an *estimate of an estimate*: the meter's cycle
model (ARM1176 at 1 GHz, assumptions in docs/c_backend.md) reproduced from shapes alone; how far it is from the
meter is reported in ``benchmarks/results/latency_model.md``.

The actors (as ``c_backend.ir`` forms them):

* ``dense`` and ``conv`` (Conv1D/2D, a convolution is a dense kernel on each gathered patch): MACs, the kernel's
  passes over the inputs (the float kernel computes ``DENSE_BLOCK`` = 8 output units per pass), the accumulators a
  narrower last block lacks per pass (it waits on the VFP's latency), gathered patch elements and kernel taps
  (conv), output elements (and those normalized by a fused softmax, Dense), and a constant per actor. DepthwiseConv and SeparableConv are
  priced as convolutions of one input channel per output channel (not calibrated separately); at int8 they, and grouped
  convolutions, raise ValueError: c_backend has no int8 kernel for them.
* a float32 convolution that takes in the pooling after it (``c_backend.ir.pooling_fuses``, the export's own rule):
  the convolution features count only the outputs some pooling window covers (the others are never computed), plus
  the values folded into a pooled output in registers (max: compare and conditional move; average: add) and the
  pooled outputs a ReLU after a max pooling or an average's division passes over once; the pooling makes no actor.
* a float32 convolution with a small patch (``c_backend.ir.small_patch``, ``position_group``) computes a group of
  positions at once (a fused pooling's window, else 4 in a row): its own features, the group's MACs, the latency
  its too few accumulators leave exposed, its passes (``filters_together``), the weights and biases loaded once per
  group and filter, the outputs computed (each folded or stored), the patch cells read and its own constant.
* ``pool`` (max/average, global included): reads of windows inside the input (unrolled, no bounds checks), reads
  of windows crossing the padding (checked cell by cell) and, for an average, their outputs (divided by the count of
  cells inside), output elements, a constant.
* int8 ``dense`` and ``conv`` follow the kernel variant the C backend chooses (``c_backend.quantize``'s rules): the
  SMLAD loop's iterations per block of ``INT8_BLOCK`` = 4 outputs and per output unit (per word of 4 inputs), the
  units of the partial last word, the blocks, and outputs requantized the fast way (SMMLAR + SSAT, under a ReLU) or
  exactly (``int8_arith_requantize``); a convolution adds its gathered patch or, read in place, its window rows, or
  takes the two-position kernel of patches of at most 4 values (pairs of positions, filters per pair, cells
  gathered) or, for 2x2 windows of one channel side by side, its column-word form (runs of up to 4 positions of a
  row, filters per run, outputs, column words made).
* int8 ``pool`` follows ``pool_int8.c.j2``: when every window lies inside the input the compiler drops the bounds
  checks and an average divides by a constant; when some window crosses the padding every cell of every window is
  checked, so the cells read are ``checked_reads``, the window rows and cells passed over are counted, and an
  average calls the library's integer division once per output (``divisions``). The window's row and column loops
  run as loops when longer than 2 steps (``looped_rows``, ``looped_cells``; gcc unrolls 2 steps whole). A max
  pooling over a multiple of 4 channels reads words (SSUB8 + SEL), each cell checked (``word_checks``) when a window
  crosses the padding.
* ``exp``: one ``expf`` per element for a softmax, sigmoid, tanh, silu output (the softmax's library calls).
* ``elementwise``: an actor that touches each element once (an unfolded BatchNormalization, an Activation that
  cannot be fused, a merge, a concatenation).
* ``quantize`` / ``dequantize`` (int8 only): the model's input and output conversions.
* ``graph``: the scheduler, FIFOs and output copy: a constant and a constant per actor.

Layers that make no actor (Dropout, Flatten, Reshape, InputLayer, a BatchNormalization folded into the Dense/Conv
before it, an activation fused into it) cost nothing. Sparse storage after EUP thresholding is not modelled: the
estimate is for dense storage, which is what the structured search produces.

Example:
    >>> import keras_grs
    >>> estimate = keras_grs.estimate_latency(keras_grs.models.build("nn2", (140,)))
    >>> estimate.ms > 0 and estimate.layers[0].layer == "dense1"
    True
"""

from __future__ import annotations

import json
import math
import weakref
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import keras
import numpy as np

from keras_grs.structure import leaf_layers

TARGETS = ("pi-zero",)
DTYPES = ("float32", "int8")
COEFFICIENTS = Path(__file__).with_name("latency_pi_zero.json")
CLOCK_HZ = 1e9  # the Pi Zero's ARM1176 at 1 GHz
DENSE_BLOCK = 8  # output units per pass of the float kernel (c_backend.ir.DENSE_BLOCK)
# The data cache rule of c_backend.armv6.estimate_cycles: beyond the 16 KB L1, every 32-byte line of the
# inference's data misses once, at 30 cycles.
CACHE_BYTES, LINE_BYTES, MISS_CYCLES = 16 * 1024, 32, 30
# An int8 model's instance besides its buffers (actor contexts, FIFOs, the graph), as the meter counts it: about
# this much, plus this much per actor (read off generated int8 executables' symbols). Without it, models just over
# the 16 KB cache were priced without their misses (-42% and -49% on two fitted models); the float count is left as
# fitted (adding it there moved the float checks 0.3-1.2 points away from the meter).
INSTANCE_BYTES, ACTOR_BYTES = 200, 64

# The features of each actor kind, in the order of its coefficients in the data file (float32; int8 replaces some).
FEATURES = {
    "dense": ("macs", "block_passes", "narrow_passes", "outputs", "softmax_outputs", "actor"),
    "conv": ("macs", "block_passes", "narrow_passes", "gathered", "taps", "outputs", "max_folds", "avg_folds",
             "pooled_outputs", "group_macs", "group_narrow", "group_passes", "group_weights", "group_outputs",
             "group_cells", "group_actor", "actor"),
    "pool": ("reads", "edge_reads", "edge_divisions", "outputs", "actor"),
    "exp": ("elements", "actor"),
    "elementwise": ("elements", "actor"),
    "quantize": ("elements", "actor"),
    "dequantize": ("elements", "actor"),
    "graph": ("model", "actors"),
}
INT8_BLOCK = 4  # output units per block of the int8 kernels (c_backend.quantize.INT8_BLOCK)
_INT8_KERNEL = ("groups", "unit_groups", "tail_units", "blocks", "fast_outputs", "exact_outputs")
INT8_FEATURES = {
    **FEATURES,
    "dense": (*_INT8_KERNEL, "actor"),
    "conv": (*_INT8_KERNEL, "gathered", "taps", "window_rows", "pairs", "pair_filters", "pair_cells", "column_runs",
             "column_filters", "column_outputs", "column_cells", "actor"),
    "pool": ("reads", "checked_reads", "skipped_rows", "skipped_cells", "looped_rows", "looped_cells", "word_reads",
             "word_checks", "avg_outputs", "divisions", "outputs", "actor"),
}


def features(dtype: str) -> dict:
    """The feature names of each actor kind at ``dtype``, in the order of the coefficients."""
    return INT8_FEATURES if check_dtype(dtype) == "int8" else FEATURES

POOLING = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.AveragePooling1D,
           keras.layers.AveragePooling2D)  # windowed poolings (global ones: _global_pooling)
NO_ACTOR = (keras.layers.InputLayer, keras.layers.Dropout, keras.layers.SpatialDropout1D,
            keras.layers.SpatialDropout2D, keras.layers.Flatten, keras.layers.Reshape, keras.layers.Identity,
            keras.layers.GaussianNoise, keras.layers.GaussianDropout, keras.layers.AlphaDropout)
EXP_ACTIVATIONS = ("softmax", "sigmoid", "tanh", "silu", "swish", "elu", "selu", "softplus", "gelu")
FUSING = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


@dataclass(frozen=True)
class Actor:
    """One actor of the estimate: the layer it comes from, its kind, its features and its estimated cycles."""

    layer: str
    kind: str
    features: dict
    cycles: float

    @property
    def ms(self) -> float:
        return self.cycles / CLOCK_HZ * 1e3


@dataclass(frozen=True)
class Latency:
    """What :func:`estimate_latency` returns: the total and its parts (cycles at 1 GHz; ``ms`` = cycles / 1e6)."""

    target: str
    dtype: str
    layers: list = field(default_factory=list)  # Actor per actor, in graph order
    graph_cycles: float = 0.0  # scheduler, FIFOs, output copy
    memory_cycles: float = 0.0  # data cache misses (only when the data exceed the L1 cache)

    @property
    def cycles(self) -> float:
        return sum(a.cycles for a in self.layers) + self.graph_cycles + self.memory_cycles

    @property
    def ms(self) -> float:
        return self.cycles / CLOCK_HZ * 1e3

    def by_layer(self) -> dict[str, float]:
        """Estimated milliseconds per layer name (a layer's actors summed)."""
        result: dict[str, float] = {}
        for actor in self.layers:
            result[actor.layer] = result.get(actor.layer, 0.0) + actor.ms
        return result


def check_target(target) -> str:
    if target not in TARGETS:
        raise ValueError(f"unknown latency target {target!r}; choose one of {', '.join(TARGETS)}")
    return target


def check_dtype(dtype) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} for the latency estimate; choose one of {', '.join(DTYPES)}")
    return dtype


@lru_cache(maxsize=None)
def coefficients(target: str = "pi-zero") -> dict:
    """The fitted coefficients of ``target``: ``{dtype: {kind: [one per FEATURES[kind]]}}`` plus ``meta``."""
    check_target(target)
    data = json.loads(COEFFICIENTS.read_text())
    for dtype in DTYPES:
        fitted = data.get("meta", {}).get("features", {}).get(dtype, {})
        for kind, names in features(dtype).items():
            values = data.get(dtype, {}).get(kind)
            if values is None or len(values) != len(names) or fitted.get(kind) != list(names):
                raise ValueError(f"{COEFFICIENTS.name} has no {len(names)} coefficients for {dtype} {kind} "
                                 f"({', '.join(names)}); re-run make bench-latency")
    return data


def _shape(tensor) -> tuple[int, ...]:
    return tuple(int(d) for d in tensor.shape[1:])


def _blocks(units: int) -> int:
    return math.ceil(units / DENSE_BLOCK)


def _narrow(units: int) -> int:
    """Accumulators the last block lacks: a block of fewer than ``DENSE_BLOCK`` units cannot hide the VFP's
    multiply-accumulate latency, so each of its passes waits about that many cycles."""
    rest = units % DENSE_BLOCK
    return DENSE_BLOCK - rest if rest else 0


def _producer(layer):
    """The layer whose output ``layer`` reads (single input), or None."""
    try:
        return layer.input._keras_history.operation
    except AttributeError:
        return None


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation or "linear"))


def _exp(layer, elements):
    return ("exp", {"elements": elements, "actor": 1})


def _conv_features(positions, taps, in_channels, filters, macs):
    patch = taps * in_channels
    return {**dict.fromkeys(FEATURES["conv"], 0), "macs": macs, "block_passes": positions * patch * _blocks(filters),
            "narrow_passes": positions * patch * _narrow(filters), "gathered": positions * patch,
            "taps": positions * taps, "outputs": positions * filters, "actor": 1}


def _grouped_conv(groups, group, patch, filters):
    """The features of the float32 kernel computing ``group`` positions at once, ``groups`` times (only these): its
    MACs, and per step over the patch the accumulators a pass lacks to hide the VFP's multiply-accumulate latency
    (8 cycles; a pass holds ``group`` x ``filters_together`` of them), its passes (each waits once for the VFP before
    its compares), weights and biases loaded, outputs computed (folded or stored), patch cells read, and a constant
    of its own."""
    from c_backend.ir import filters_together

    computed, together = groups * group, filters_together(group, patch, filters)
    passes = groups * math.ceil(filters / together)
    return {**dict.fromkeys(FEATURES["conv"], 0), "group_macs": computed * patch * filters,
            "group_narrow": passes * patch * max(0, DENSE_BLOCK - group * together), "group_passes": passes,
            "group_weights": groups * filters * (patch + 1), "group_outputs": computed * filters,
            "group_cells": computed * patch, "group_actor": 1}


def _plain_conv(positions, taps, in_channels, filters, activation):
    """A float32 convolution without a fused pooling: the grouped kernel for a small patch, else the patch kernel."""
    from c_backend.ir import POSITION_GROUP, small_patch

    patch = taps * in_channels
    if small_patch(patch, activation):
        return _grouped_conv(math.ceil(positions / POSITION_GROUP), POSITION_GROUP, patch, filters)
    return _conv_features(positions, taps, in_channels, filters, positions * patch * filters)


def _covered(size, pool, stride, pad, pooled) -> int:
    """Convolution rows (or columns) some window of a pooling covers: windows do not overlap when fused, so each
    covered row is counted once."""
    return sum(1 for o in range(pooled) for p in range(pool) if 0 <= o * stride + p - pad < size)


def _fused_conv(op) -> dict:
    """The features of a float32 convolution op with a fused pooling (``op.pool``), as its C kernel runs: the
    convolution at the covered positions only, each covered position after a window's first folded into the pooled
    output, and one more pass over the pooled outputs for a ReLU after a max pooling or an average's division."""
    from c_backend.ir import position_group

    pool = op.pool
    group = position_group(op)
    if group:
        return _grouped_conv(pool.out_h * pool.out_w, group, op.k_h * op.k_w * op.in_c, op.filters)
    cells = _covered(op.out_h, pool.p_h, pool.s_h, pool.pad_t, pool.out_h) * \
        _covered(op.out_w, pool.p_w, pool.s_w, pool.pad_l, pool.out_w)
    pooled = pool.out_h * pool.out_w
    taps = op.k_h * op.k_w
    features = _conv_features(cells, taps, op.in_c, op.filters, cells * taps * op.in_c * op.filters)
    folds = (cells - pooled) * op.filters
    late_pass = pool.mode == "avg" or op.activation == "relu"
    return {**features, "max_folds": folds if pool.mode == "max" else 0,
            "avg_folds": folds if pool.mode == "avg" else 0,
            "pooled_outputs": pooled * op.filters if late_pass else 0}


def _io(layer, shapes=None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``layer``'s input and output shapes (no batch axis): its own, or those ``shapes`` gives it (see
    :func:`estimate_latency`)."""
    if shapes is not None and layer.name in shapes:
        return tuple(shapes[layer.name][0]), tuple(shapes[layer.name][1])
    inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
    return _shape(inputs[0]), _shape(layer.output)  # a merge's inputs: the first (its features read the output)


def _weight_sizes(layer, shapes=None) -> int:
    if shapes is not None and layer.name in shapes:
        return sum(int(np.prod(shape)) for shape in shapes[layer.name][2])
    return sum(int(np.prod(w.shape)) for w in layer.weights)


def _window_cells(layer, shapes=None) -> tuple[list[list[int]], tuple[int, ...], int]:
    """A windowed pooling's windows against its input, with the C backend's padding (``c_backend.ir._padding``):
    per spatial axis, for each output index, the cells of its window that lie inside the input; the pool size per
    axis and the channels."""
    from c_backend.ir import _padding

    in_shape, out_shape = _io(layer, shapes)
    pool, strides = tuple(np.atleast_1d(layer.pool_size)), tuple(np.atleast_1d(layer.strides))
    inside = []
    for size_in, size_out, p, s in zip(in_shape[:-1], out_shape[:-1], pool, strides):
        pad = _padding(size_in, size_out, p, s, layer.padding)
        inside.append([sum(1 for k in range(p) if 0 <= o * s + k - pad < size_in) for o in range(size_out)])
    return inside, pool, out_shape[-1]


def _edge_outputs(layer, shapes=None) -> int:
    """The outputs of a float pooling whose windows cross its padding (the C kernel's slow path, bounds checked
    per cell and channel)."""
    inside, pool, channels = _window_cells(layer, shapes)
    whole = math.prod(sum(1 for cells in axis if cells == p) for axis, p in zip(inside, pool))
    return math.prod(len(axis) for axis in inside) * channels - whole * channels


def _fast(activation: str) -> bool:
    """Whether an int8 kernel requantizes the fast way: ``c_backend.quantize.fast_requantize`` with the clamp a
    ReLU sets (the output's zero point) or none (-128, below the zero point of a range holding negative values)."""
    from c_backend.quantize import QMIN, fast_requantize

    zero = 0  # the zero point is calibrated; any one above -128 decides alike
    return fast_requantize(zero if activation == "relu" else QMIN, zero)


def _int8_kernel(positions, inputs, units, fast) -> dict:
    """The SMLAD kernel's features: per block of ``INT8_BLOCK`` units and word of 4 inputs one loop iteration, per
    unit and word two SMLAD and a load-multiple half, the partial last word in C, the requantization per output."""
    words, partial = divmod(inputs, 4)
    blocks = math.ceil(units / INT8_BLOCK)
    outputs = positions * units
    return {"groups": positions * words * blocks, "unit_groups": positions * words * units,
            "tail_units": outputs if partial else 0, "blocks": positions * blocks,
            "fast_outputs": outputs if fast else 0, "exact_outputs": 0 if fast else outputs}


def _window(layer):
    """A convolution's geometry as the C backend's 2-D form: input (h, w, c), output (h, w), kernel, strides."""
    in_shape, out_shape = _shape(layer.input), _shape(layer.output)
    if len(in_shape) == 2:  # Conv1D: one row
        in_shape, out_shape = (1, *in_shape), (1, *out_shape)
    kernel, strides = tuple(layer.kernel_size), tuple(layer.strides)
    if len(kernel) == 1:
        kernel, strides = (1, *kernel), (1, *strides)
    return in_shape, out_shape[:2], kernel, strides


def _conv_int8(layer, in_channels, fast) -> tuple[dict, bool]:
    """An int8 convolution's features for the variant ``c_backend.quantize`` picks, and whether it is the
    two-position kernel (it keeps records, not the per-filter arrays)."""
    from c_backend.quantize import columns, row_walk, small_patch

    (in_h, in_w, _), (out_h, out_w), (k_h, k_w), (s_h, s_w) = _window(layer)
    filters, positions, patch = int(layer.filters), out_h * out_w, k_h * k_w * in_channels
    inside = (out_h - 1) * s_h + k_h <= in_h and (out_w - 1) * s_w + k_w <= in_w
    zero = dict.fromkeys(INT8_FEATURES["conv"], 0)
    if small_patch(patch, fast, filters) and columns(True, inside, (k_h, k_w), in_channels, s_w, filters):
        runs = out_h * math.ceil(out_w / 4)
        return {**zero, "column_runs": runs, "column_filters": runs * filters, "column_outputs": positions * filters,
                "column_cells": out_h * (out_w + 1), "actor": 1}, True  # each column of a row made once
    if small_patch(patch, fast, filters):
        pairs = math.ceil(positions / 2)
        return {**zero, "pairs": pairs, "pair_filters": pairs * filters, "pair_cells": 2 * pairs * patch,
                "actor": 1}, True
    walk = row_walk(False, inside, k_w, in_channels, in_w)
    gathered = {"window_rows": positions * k_h} if walk else {"gathered": positions * patch,
                                                               "taps": positions * k_h * k_w}
    return {**zero, **_int8_kernel(positions, patch, filters, fast), **gathered, "actor": 1}, False


def _global_pooling(layer) -> bool:
    return type(layer).__name__.startswith("Global") and "Pooling" in type(layer).__name__


# Convolutions c_backend exports in float32 only (its int8 chains refuse them): no int8 features to price.
INT8_REFUSED = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv1D,
                keras.layers.SeparableConv2D)


def _int8_layer_actors(layer) -> list[tuple[str, dict]] | None:
    """The int8 actors of a Dense, a plain convolution or a pooling (None: as at float32)."""
    activation = _activation_name(layer)
    tail = [_exp(layer, int(np.prod(_shape(layer.output))))] if activation in EXP_ACTIVATIONS else []
    if isinstance(layer, keras.layers.Dense):
        units = int(layer.units)
        positions = int(np.prod(_shape(layer.output))) // units
        features = _int8_kernel(positions, int(layer.input.shape[-1]), units, _fast(activation))
        return [("dense", {**features, "actor": 1}), *tail]
    if isinstance(layer, INT8_REFUSED) or int(getattr(layer, "groups", 1)) != 1:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}): the C backend has no int8 kernel for "
                         "depthwise, separable or grouped convolutions (precision='int8' refuses them); "
                         "estimate this model at dtype='float32'")
    if type(layer) in (keras.layers.Conv1D, keras.layers.Conv2D):
        in_channels = int(layer.input.shape[-1])
        return [("conv", _conv_int8(layer, in_channels, _fast(activation))[0]), *tail]
    pooling = isinstance(layer, POOLING)
    if pooling or _global_pooling(layer):
        from c_backend.quantize import max_pool_words

        elements = int(np.prod(_shape(layer.output)))
        average = "Average" in type(layer).__name__
        zero = dict.fromkeys(INT8_FEATURES["pool"], 0)
        if not pooling:  # global: every input value once, a float rescale per output (no division)
            return [("pool", {**zero, "reads": int(np.prod(_shape(layer.input))), "outputs": elements, "actor": 1})]
        reads, skipped_rows, skipped_cells = _pool_cells(layer)
        checked = bool(skipped_rows or skipped_cells)  # some window crosses the padding: the bounds-checked loop
        window = elements * int(np.prod(layer.pool_size))
        if max_pool_words("max" if not average else "avg", int(layer.output.shape[-1])):
            return [("pool", {**zero, "word_reads": reads // 4, "word_checks": window // 4 if checked else 0,
                              "outputs": elements, "actor": 1})]
        # gcc -O2 unrolls a loop of 2 steps whole and keeps a longer one: per window row, per cell of a row
        pool = np.atleast_1d(layer.pool_size)
        rows = window // int(pool[-1]) if len(pool) > 1 and pool[0] > 2 else 0
        cells = reads + skipped_cells if pool[-1] > 2 else 0
        return [("pool", {**zero, "checked_reads" if checked else "reads": reads, "skipped_rows": skipped_rows,
                          "skipped_cells": skipped_cells, "looped_rows": rows, "looped_cells": cells,
                          "avg_outputs": elements if average else 0,
                          "divisions": elements if average and checked else 0, "outputs": elements, "actor": 1})]
    return None


def _pool_cells(layer) -> tuple[int, int, int]:
    """An int8 pooling's window cells as its C loop visits them, over all outputs and channels: the cells read
    (inside the input), the window rows skipped whole (above or below the input) and, in the rows read, the cells
    skipped (left or right of it)."""
    inside, pool, channels = _window_cells(layer)
    if len(pool) == 1:  # a 1-D pooling: one row, wholly inside
        inside, pool = [[1], *inside], (1, *pool)
    rows, columns = inside
    return (int(sum(rows) * sum(columns) * channels),
            int(sum(pool[0] - r for r in rows) * len(columns) * channels),
            int(sum(rows) * sum(pool[1] - c for c in columns) * channels))


def layer_actors(layer, dtype: str = "float32", shapes=None) -> list[tuple[str, dict]]:
    """The actors the C backend makes of ``layer`` at ``dtype``, as ``(kind, features)`` pairs (empty: no actor);
    ``shapes``: as for :func:`estimate_latency` (float32 only)."""
    if isinstance(layer, NO_ACTOR):
        return []
    if dtype == "int8":
        int8 = _int8_layer_actors(layer)
        if int8 is not None:
            return int8
    in_shape, out_shape = _io(layer, shapes)
    elements = int(np.prod(out_shape))
    activation = _activation_name(layer)
    tail = [_exp(layer, elements)] if activation in EXP_ACTIVATIONS else []
    if isinstance(layer, keras.layers.Dense):
        inputs, units = in_shape[-1], out_shape[-1]  # units: the output's channels
        positions = elements // units
        features = {"macs": positions * inputs * units, "block_passes": positions * inputs * _blocks(units),
                    "narrow_passes": positions * inputs * _narrow(units), "outputs": elements,
                    "softmax_outputs": elements if activation == "softmax" else 0, "actor": 1}
        return [("dense", features), *tail]
    if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        channels, filters = in_shape[-1] * int(layer.depth_multiplier), out_shape[-1]
        positions = elements // filters
        taps = int(np.prod(layer.kernel_size))
        depthwise = _conv_features(positions, taps, 1, channels, positions * taps * channels)
        pointwise = _plain_conv(positions, 1, channels, filters, activation)
        return [("conv", depthwise), ("conv", pointwise), *tail]
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        channels = out_shape[-1]
        positions = elements // channels
        taps = int(np.prod(layer.kernel_size))
        return [("conv", _conv_features(positions, taps, 1, channels, positions * taps * channels)), *tail]
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
        filters, in_channels = out_shape[-1], in_shape[-1] // int(getattr(layer, "groups", 1))
        positions = elements // filters
        taps = int(np.prod(layer.kernel_size))
        return [("conv", _plain_conv(positions, taps, in_channels, filters, activation)), *tail]
    if isinstance(layer, POOLING):
        window = int(np.prod(layer.pool_size))
        edge = _edge_outputs(layer, shapes)
        average = "Average" in type(layer).__name__
        return [("pool", {"reads": (elements - edge) * window, "edge_reads": edge * window,
                          "edge_divisions": edge if average else 0,
                          "outputs": elements, "actor": 1})]
    if _global_pooling(layer):
        return [("pool", {"reads": int(np.prod(in_shape)), "edge_reads": 0, "edge_divisions": 0,
                          "outputs": elements, "actor": 1})]
    producer = _producer(layer)
    after_linear = isinstance(producer, FUSING) and _activation_name(producer) == "linear"
    if isinstance(layer, keras.layers.BatchNormalization) and after_linear:
        return []  # folded into the producer's weights
    if isinstance(layer, (keras.layers.Activation, keras.layers.ReLU, keras.layers.Softmax)):
        name = "softmax" if isinstance(layer, keras.layers.Softmax) else _activation_name(layer)
        if isinstance(layer, keras.layers.ReLU):
            name = "relu"
        exp = [_exp(layer, elements)] if name in EXP_ACTIVATIONS else []
        return exp if after_linear else [("elementwise", {"elements": elements, "actor": 1}), *exp]
    return [("elementwise", {"elements": elements, "actor": 1}), *tail]


def _price(kind: str, values: dict, table: dict, dtype: str) -> float:
    return float(sum(c * values[name] for c, name in zip(table[kind], features(dtype)[kind])))


def estimate_latency(model: keras.Model, target: str = "pi-zero", dtype: str = "float32", shapes=None) -> Latency:
    """Estimated inference time of ``model`` exported as C (``c_backend.export``) on ``target``, one sample.

    Args:
        model: a built Keras model (Sequential or functional).
        target: ``pi-zero`` (Raspberry Pi Zero's ARM1176 at 1 GHz, VFP single precision).
        dtype: ``float32`` (the default export) or ``int8`` (``precision="int8"``: quantize and dequantize actors
            at the ends, integer kernels).
        shapes: float32 only: price another model of ``model``'s topology whose layers differ only in their
            channel counts (a pruning candidate not built as a Keras model): per layer name, its input shape, output
            shape (no batch axis) and weight shapes; layers not named keep ``model``'s.

    Returns:
        A :class:`Latency`: ``.ms`` and ``.cycles`` in total, ``.layers`` one :class:`Actor` per actor (layer name,
        kind, features, cycles), ``.by_layer()`` milliseconds per layer. An estimate from shapes (see the module
        docstring and docs/c_backend.md for its error against the meter).

    Example:
        >>> import keras_grs
        >>> big = keras_grs.estimate_latency(keras_grs.models.build("nn1", (140,)))
        >>> small = keras_grs.estimate_latency(keras_grs.models.build("nn2", (140,)), dtype="int8")
        >>> small.ms < big.ms
        True
    """
    check_target(target)
    return price(actors_of(model, dtype, shapes), coefficients(target)[dtype], target, dtype)


def price(plan: Actors, table: dict, target: str = "pi-zero", dtype: str = "float32") -> Latency:
    """The :class:`Latency` of the actors ``plan`` with the coefficients ``table`` (one precision's, as in the
    data file); :func:`estimate_latency` with the stored coefficients, the calibration with fresh ones."""
    priced = [Actor(a.layer, a.kind, a.features, _price(a.kind, a.features, table, dtype)) for a in plan.actors]
    graph = _price("graph", {"model": 1, "actors": plan.count}, table, dtype)
    memory = (plan.data_bytes // LINE_BYTES) * MISS_CYCLES if plan.data_bytes > CACHE_BYTES else 0
    return Latency(target, dtype, priced, graph, float(memory))


@dataclass(frozen=True)
class Actors:
    """What :func:`actors_of` finds: the actors (cycles not yet priced), how many the scheduler visits, and the
    bytes of weights and buffers one inference touches."""

    actors: list
    count: int
    data_bytes: int


def actors_of(model: keras.Model, dtype: str = "float32", shapes=None) -> Actors:
    """The actors of ``model`` exported at ``dtype``, with their features (what the coefficients multiply);
    ``shapes``: as for :func:`estimate_latency`."""
    check_dtype(dtype)
    if shapes is not None and dtype != "float32":
        raise ValueError(f"shapes are only taken at float32, not at {dtype}")
    if not isinstance(model, keras.Model):
        raise TypeError(f"the latency estimate needs a keras.Model, got {type(model).__name__}")
    weight_bytes = 1 if dtype == "int8" else 4
    actors: list[Actor] = []
    data_bytes = 4 * sum(int(np.prod(_shape(t))) for t in model.inputs)
    if dtype == "int8":
        elements = sum(int(np.prod(_shape(t))) for t in model.inputs)
        actors.append(Actor("input", "quantize", {"elements": elements, "actor": 1}, 0.0))
    fused, pools = {}, set()
    if dtype == "float32":  # the export's own pooling fusion (int8 keeps its pooling actors)
        from c_backend.ir import c_identifier, fused_convolutions

        fused = fused_convolutions(model) if shapes is None else _template_fusions(model)
        pools = {op.pool.layer for op in fused.values()}
        if shapes is not None:  # the fused convolution's channels are the resized layer's; its positions stay
            layers = {c_identifier(layer.name): layer for layer in leaf_layers(model)}
            fused = {name: replace(op, in_c=_io(layers[name], shapes)[0][-1], filters=_io(layers[name], shapes)[1][-1])
                     for name, op in fused.items()}
    for layer in leaf_layers(model):
        made = layer_actors(layer, dtype, shapes)
        if fused or pools:
            name = c_identifier(layer.name)
            if name in pools:
                made = []  # computed inside the convolution before it
            elif name in fused:  # the conv actor (a SeparableConv's pointwise half: its last one) takes it in
                last = max(i for i, (kind, _) in enumerate(made) if kind == "conv")
                made[last] = ("conv", _fused_conv(fused[name]))
        for kind, values in made:
            actors.append(Actor(layer.name, kind, values, 0.0))
        if dtype == "int8":
            data_bytes += _int8_bytes(layer, made)
        else:
            data_bytes += _weight_sizes(layer, shapes) * weight_bytes
        if not isinstance(layer, NO_ACTOR) and not (fused and c_identifier(layer.name) in fused):
            data_bytes += int(np.prod(_io(layer, shapes)[1])) * weight_bytes  # a fused pooling's input: no buffer
    if dtype == "int8":
        elements = sum(int(np.prod(_shape(t))) for t in model.outputs)
        actors.append(Actor("output", "dequantize", {"elements": elements, "actor": 1}, 0.0))
    # A float softmax runs inside its Dense actor; an int8 one is an actor of its own.
    count = sum(1 for a in actors if a.kind != "exp" or dtype == "int8")
    if dtype == "int8":
        data_bytes += INSTANCE_BYTES + ACTOR_BYTES * count
    return Actors(actors, count, data_bytes)


_FUSIONS = weakref.WeakKeyDictionary()


def _template_fusions(model: keras.Model) -> dict:
    """``fused_convolutions(model)`` for a model whose resized copies are priced from their shapes: which
    convolution takes which pooling in depends on the layers alone, so a search asks the C backend (which reads
    every weight) once per template, not once per candidate."""
    from c_backend.ir import fused_convolutions

    if model not in _FUSIONS:
        _FUSIONS[model] = fused_convolutions(model)
    return _FUSIONS[model]


def _int8_bytes(layer, made) -> int:
    """The constant data of ``layer``'s int8 actors, as the C backend stores them: 16-bit weights padded to words of
    4 inputs, per output unit an int32 bias and multiplier, a shift byte and (fast requantization) an int32
    rounding term; the two-position convolution's 20-byte records per filter and 12 bytes per pair (no pairs in
    its column-word form); a 256-byte
    table per channel of an unfolded BatchNormalization (one for a standalone activation)."""
    kinds = [kind for kind, _ in made]
    if kinds[:1] in (["dense"], ["conv"]) and (isinstance(layer, keras.layers.Dense)
                                               or type(layer) in (keras.layers.Conv1D, keras.layers.Conv2D)):
        values = made[0][1]
        units = int(layer.units) if isinstance(layer, keras.layers.Dense) else int(layer.filters)
        if values.get("column_runs"):
            return 20 * units
        if values.get("pairs"):
            return 20 * units + 12 * values["pairs"]
        inputs = int(np.prod(layer.kernel.shape[:-1]))
        fast = values["fast_outputs"] > 0
        return 2 * units * 4 * math.ceil(inputs / 4) + units * (9 + (4 if fast else 0))
    if kinds[:1] == ["elementwise"]:
        channels = int(layer.output.shape[-1]) if isinstance(layer, keras.layers.BatchNormalization) else 1
        return 256 * channels
    return sum(int(np.prod(w.shape)) for w in layer.weights)


def format_ms(value) -> str:
    """Estimated milliseconds as the reports print them (``-`` when unknown)."""
    return "-" if value is None else f"{value:.4f}"


def latency_ms(model: keras.Model, target: str = "pi-zero", dtype: str = "float32", shapes=None) -> float:
    """``estimate_latency(model, target, dtype, shapes).ms``: the figure the search and the reports record."""
    return estimate_latency(model, target, dtype, shapes).ms
