"""Int8 quantization following the TFLite int8 specification, so that the generated C computes what TensorFlow
Lite's int8 interpreter computes on the same model and calibration data.

- Activations: asymmetric per tensor, int8 with a zero point. The range of each tensor is its smallest and largest
  value over the calibration samples, widened to contain 0; scale = (max - min) / 255 and the zero point is nudged
  to an integer (TFLite's rule: from whichever end, min or max, gives the smaller rounding error).
- Weights: symmetric per output channel, int8 in [-127, 127], zero point 0, scale = max |w| / 127.
- Biases: int32, scale = input scale x weight scale of the channel.
- Requantization: the real factor input scale x weight scale / output scale becomes a 31-bit fixed-point
  multiplier and a power-of-two shift; the C rounds as TFLite's builtin kernels do (saturating rounding doubling
  high multiply, then a divide by a power of two with halves rounded up; its reference kernels round those halves
  away from zero; ``int8_arith.h``).
- A ReLU is a clamp at the output's zero point. Max/average pooling keep their input's parameters (as TFLite
  does); a global average pool is TFLite's MEAN (which
  rescales the mean in float32); sigmoid, tanh and softmax outputs have TFLite's fixed parameters
  (1/256 and -128, 1/128 and 0, 1/256 and -128) and are computed in float from the dequantized input, then
  quantized. Elementwise functions without a kernel of their own (a standalone activation, an unfolded
  BatchNormalization) are 256-entry tables per channel built the same way.

The C keeps float input and output: a ``quantize`` actor first, a ``dequantize`` actor last.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from c_backend import ops as O
from c_backend.ir import c_identifier

QMIN, QMAX = -128, 127
WEIGHT_MAX = 127
# Output units computed together by the int8 Dense/convolution kernel: each word of 4 loaded inputs feeds this many
# accumulators; on ARMv6 each unit then costs two weight words and two SMLAD (two 16-bit MACs each) per 4 inputs.
INT8_BLOCK = 4
FIXED_OUTPUT = {"sigmoid": (1.0 / 256.0, -128), "softmax": (1.0 / 256.0, -128), "tanh": (1.0 / 128.0, 0)}


def round_away(value):
    """Round half away from zero, as C's ``round`` (and TFLite's ``TfLiteRound``) do; numpy rounds half to even."""
    value = np.asarray(value, dtype=np.float64)
    return np.sign(value) * np.floor(np.abs(value) + 0.5)


def activation_params(low: float, high: float) -> tuple[float, int]:
    """(scale, zero point) of an int8 tensor whose real values span [low, high], by TFLite's nudging rule."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if high - low < np.finfo(np.float64).eps:
        return 1.0, 0
    scale = float(np.float32(np.float32(high) - np.float32(low)) / np.float32(QMAX - QMIN))  # TFLite: in float32
    from_min, from_max = QMIN - low / scale, QMAX - high / scale
    error_min, error_max = abs(QMIN) + abs(low / scale), abs(QMAX) + abs(high / scale)
    zero = from_min if error_min < error_max else from_max
    zero_point = QMIN if zero < QMIN else QMAX if zero > QMAX else int(round_away(zero))
    return scale, zero_point


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's fixed-point form of a positive real factor: (multiplier in [2^30, 2^31), shift) with
    real ~= multiplier * 2^(shift - 31)."""
    if real <= 0:
        return 0, 0
    fraction, shift = math.frexp(real)
    multiplier = int(round_away(fraction * (1 << 31)))
    if multiplier == 1 << 31:
        multiplier //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise ValueError(f"a requantization factor of {real} is too large for int8 (scales far apart)")
    return multiplier, shift


def _weights(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel (rows of ``weights``): int8 values and their float32 scales."""
    largest = np.max(np.abs(weights), axis=1)
    scales = np.where(largest > 0, largest / WEIGHT_MAX, 1.0).astype(np.float32)
    quantized = np.clip(round_away(weights / scales.astype(np.float64)[:, None]), -WEIGHT_MAX, WEIGHT_MAX)
    return quantized.astype(np.int64), scales


# Activations of the next Dense layer under which TFLite's converter leaves a linear Dense layer's bias in place
# (found by comparing with its interpreter: moving it there put the C 9 steps off for a ReLU)
KEEPS_BIAS_BEFORE = ("relu", "relu6")


def _move_biases(ops, layers) -> dict:
    """TFLite's converter moves the bias of a Dense layer without activation into the next Dense layer's bias
    (W2 (W1 x + b1) + b2 = W2 (W1 x) + (W2 b1 + b2)), so the tensor between them is calibrated without it: do the
    same. It does so when the next layer has a bias of its own and an activation it does not fuse first
    (:data:`KEEPS_BIAS_BEFORE`). Its optimizer visits the graph from the end, so in a run of linear Dense layers the
    last one receives its predecessor's bias, and a layer whose bias moved on has none to receive one with: the one
    before keeps its own (Dense, Dense, Dense: only the second's moves; four of them: the first's and the third's;
    checked on the converted flatbuffers). Returns the moved biases by the name of the layer that lost them."""
    by_name = {layer.name: layer for layer in layers}
    moved = {}
    for first, second in reversed(list(zip(ops, ops[1:]))):
        alone = not isinstance(first.keras_pre, str) and first.keras_source == first.keras_pre.name  # nothing fused
        if not (first.kind == second.kind == "dense" and first.activation == "linear" and alone):
            continue
        name = second.keras_pre if isinstance(second.keras_pre, str) else second.keras_pre.name
        receives = getattr(by_name.get(name), "use_bias", False) and name not in moved
        if receives and second.activation not in KEEPS_BIAS_BEFORE and np.any(first.raw[1]):
            (w1, b1), (w2, b2) = first.raw, second.raw
            first.raw, second.raw = (w1, np.zeros_like(b1)), (w2, b2 + w2 @ b1)
            moved[first.keras_source] = b1
    return moved


def _ranges(layers, calibration: np.ndarray, ops, moved: dict) -> dict:
    """The calibration range of every layer's output (and of the linear part of layers whose own activation is
    sigmoid, tanh or softmax), running the Keras layers one after another on the samples. Layers in ``moved``
    are measured without the bias that moved on."""
    if calibration.ndim < 2 or len(calibration) == 0:
        raise ValueError("calibration must hold at least one sample (an array of shape (samples, *input shape))")
    expected = tuple(int(d) for d in layers[0].input.shape[1:])
    if tuple(calibration.shape[1:]) != expected:
        raise ValueError(f"calibration samples have shape {calibration.shape[1:]}, the model takes {expected}")
    if not np.all(np.isfinite(calibration)):
        raise ValueError("calibration holds values that are not finite")
    linear_of = {id(op.keras_pre) for op in ops if not isinstance(op.keras_pre, str) and op.activation in FIXED_OUTPUT}
    ranges = {"<input>": (float(calibration.min()), float(calibration.max()))}
    x = calibration
    for layer in layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if id(layer) in linear_of:
            config = {**layer.get_config(), "activation": "linear"}
            linear = type(layer).from_config(config)
            linear.build(x.shape)
            linear.set_weights(layer.get_weights())
            values = keras.ops.convert_to_numpy(linear(x))
            ranges[("linear", layer.name)] = (float(values.min()), float(values.max()))
        x = keras.ops.convert_to_numpy(layer(x, training=False))
        measured = x - moved[layer.name] if layer.name in moved else x
        ranges[layer.name] = (float(measured.min()), float(measured.max()))
    return ranges


def _table(function, channels: int, source: tuple, target: tuple) -> np.ndarray:
    """A table [channel][256] of int8 results of ``function`` (values, channel index) over every int8 input."""
    q = np.arange(QMIN, QMAX + 1, dtype=np.float64)
    real = (q - source[1]) * source[0]
    rows = [function(np.float32(real), c) for c in range(channels)]
    out = np.clip(round_away(np.asarray(rows, dtype=np.float64) / target[0]) + target[1], QMIN, QMAX)
    return out.astype(np.int64).ravel()


def _elementwise(op: O.Op):
    """The function an elementwise op applies, as f(values, channel), in float32 as the float C computes it."""
    if isinstance(op, O.Affine):
        scale, shift = op.scale.astype(np.float32), op.shift.astype(np.float32)
        inner = lambda v, c: v * scale[c] + shift[c]  # noqa: E731
    else:
        inner = lambda v, c: v  # noqa: E731
    activation = op.activation
    if activation == "relu":
        return lambda v, c: np.maximum(inner(v, c), 0)
    if activation == "sigmoid":
        return lambda v, c: 1 / (1 + np.exp(-inner(v, c).astype(np.float64)))
    if activation == "tanh":
        return lambda v, c: np.tanh(inner(v, c))
    return inner


def quantize_ops(name: str, taken: set, layers, ops: list[O.Op], calibration: np.ndarray) -> list[O.Op]:
    """The int8 form of the float operations ``ops`` of model ``name`` (see the module docstring), calibrated on
    ``calibration``; new actors get names not in ``taken``."""
    moved = _move_biases(ops, layers)
    ranges = _ranges(layers, calibration, ops, moved)
    current = activation_params(*ranges["<input>"])
    size = (ops[0].in_size,)
    result = [O.Quantize(
        layer="input", actor=c_identifier(f"{name}_quantize", taken), in_shape=size, out_shape=size,
        out_type="int8_t", input_q=(0.0, 0), output_q=current,
        description=f"the float input quantized to int8 (scale {current[0]:.6g}, zero point {current[1]})",
    )]
    for op in ops:
        source, pre = op.keras_source, op.keras_pre
        int8 = {"in_type": "int8_t", "out_type": "int8_t", "input_q": current, "keras_source": None, "keras_pre": None}
        if op.scratch:  # a convolution's patch holds int8 values now
            int8["scratch"] = ("int8_t", op.scratch[1])
        split = op.activation if op.activation in FIXED_OUTPUT else None
        if op.kind in ("dense", "conv"):
            key = (pre if isinstance(pre, str) else ("linear", pre.name)) if split else source
            output = activation_params(*ranges[key])
            new = op.retyped(O.DenseInt8 if op.kind == "dense" else O.ConvInt8, **int8, raw=None,
                             description=op.description + " (int8)")
            _quantize_weights(new, op.raw, current, output)
        elif op.kind == "pool":
            output = current
            new = op.retyped(O.PoolInt8, **int8, inside=_inside(op, op.p_h, op.p_w),
                             words=max_pool_words(op.mode, op.channels))
        elif op.kind == "global_pool" and op.mode == "max":
            output = current
            new = op.retyped(O.GlobalPoolInt8, **int8)
        elif op.kind == "global_pool":
            output = activation_params(*ranges[source])
            # TFLite's int8 MEAN rescales in float32: round(sum / n * (s_in / s_out) - zp_in * (s_in / s_out)) + zp_out
            ratio = np.float32(current[0]) / np.float32(output[0])
            new = op.retyped(O.GlobalPoolInt8, **int8, ratio=float(ratio),
                             offset=float(np.float32(-current[1]) * ratio))
        elif op.activation == "softmax":  # a standalone softmax
            split, output = None, FIXED_OUTPUT["softmax"]
            new = op.retyped(O.SoftmaxInt8, **{**int8, "scratch": ("float", op.channels)})
        else:  # activation or affine: a table per channel
            output = FIXED_OUTPUT.get(op.activation) or activation_params(*ranges[source])
            tables = op.channels if op.kind == "affine" else 1
            new = op.retyped(O.TableInt8, **int8, table=_table(_elementwise(op), tables, current, output),
                             tables=tables)
            split = None
        new.output_q = output
        result.append(new)
        current = output
        if split:  # sigmoid, tanh or softmax after an int8 kernel: an op of its own, as in TFLite
            new.activation = "linear"
            follow = {"layer": new.layer, "actor": c_identifier(f"{new.actor}_{split}", taken),
                      "in_shape": new.out_shape, "out_shape": new.out_shape, "activation": split, "in_type": "int8_t",
                      "out_type": "int8_t", "input_q": current, "output_q": FIXED_OUTPUT[split],
                      "description": f"{split} on int8 values"}
            if split == "softmax":
                result.append(O.SoftmaxInt8(**follow, scratch=("float", new.channels)))
            else:
                table = _table(_elementwise(O.Activation(**follow)), 1, current, FIXED_OUTPUT[split])
                result.append(O.TableInt8(**follow, table=table, tables=1))
            current = FIXED_OUTPUT[split]
    size = (result[-1].out_size,)
    result.append(O.Dequantize(
        layer="output", actor=c_identifier(f"{name}_dequantize", taken), in_shape=size, out_shape=size,
        in_type="int8_t", input_q=current, output_q=current,
        description=f"the int8 output as float (scale {current[0]:.6g}, zero point {current[1]})",
    ))
    return result


def _quantize_weights(op: O.DenseInt8 | O.ConvInt8, raw, source: tuple, output: tuple) -> None:
    """Int8 weights, the int32 bias with the input's zero point folded in, and the per-channel requantization."""
    weights, bias = raw
    quantized, scales = _weights(weights)
    bias_scales = np.float64(np.float32(source[0])) * scales.astype(np.float64)
    bias_q = round_away(bias / bias_scales).astype(np.int64)
    # sum w * (x - zp) = sum w * x - zp * sum w: the input's zero point costs nothing per multiply-accumulate; padded
    # cells of a convolution hold the zero point, so they add nothing, as TFLite's skipped cells do
    folded = bias_q - source[1] * quantized.sum(axis=1)
    if np.any(np.abs(folded) >= 2 ** 31):
        raise ValueError(f"layer {op.layer!r}: a bias does not fit int32 at the calibrated scales")
    factors = [quantize_multiplier(float(np.float32(source[0])) * float(s) / float(np.float32(output[0])))
               for s in scales]
    # TFLite's first rounding, round(acc * 2^left * m / 2^31), is SMMLAR's round(acc2 * m / 2^32) for
    # acc2 = acc * 2^(1 + left): the factor is folded into each channel's weights and bias here, so the kernels
    # accumulate acc2 directly and requantize without a 64-bit product or a shift before it
    doubling = np.array([1 << (1 + max(shift, 0)) for _, shift in factors], dtype=np.int64)
    quantized, folded = quantized * doubling[:, None], folded * doubling
    if np.any(np.abs(quantized) > 2 ** 15 - 1):
        raise ValueError(f"layer {op.layer!r}: a requantization factor of 128 or more (input scale x weight "
                         "scale / output scale) does not fit the int8 kernels' 16-bit weights")
    if np.any(np.abs(folded) + (1 - QMIN) * np.abs(quantized).sum(axis=1) >= 2 ** 31):
        raise ValueError(f"layer {op.layer!r}: its int32 accumulator could overflow at the calibrated scales")
    right = [max(-shift, 0) for _, shift in factors]
    op.act_min = max(QMIN, output[1]) if op.activation == "relu" else QMIN
    op.act_max = QMAX
    # SMMLAR adds a third operand to the rounded high word: the second rounding's half and the output's zero point
    # times 2^right, so that one shift and one saturation finish the output (halves rounded up, as the plain C does)
    rounding = [(1 << r >> 1) + output[1] * (1 << r) for r in right]
    op.fast_requantize = fast_requantize(op.act_min, output[1]) and all(abs(c) < 2 ** 30 for c in rounding)
    op.blocks, op.weights = _pack(quantized)
    op.bias = folded
    op.multiplier = np.array([m for m, _ in factors], dtype=np.int64)
    op.shift = np.array(right, dtype=np.int64)
    op.rounding = np.array(rounding, dtype=np.int64)
    n = quantized.shape[1]
    if not isinstance(op, O.ConvInt8):
        return
    op.inside = _inside(op, op.k_h, op.k_w)
    # a first convolution's patch of at most 4 values (one word): the kernel reads one record per filter
    # [bias, weights (0, 2), weights (1, 3), multiplier, rounding] with one load-multiple, for two positions at once
    op.small_patch = small_patch(n, op.fast_requantize, op.filters)
    if op.small_patch:
        padded = np.zeros((len(folded), 4), dtype=np.int64)
        padded[:, :n] = quantized
        pairs = [(padded[:, 0] & 0xFFFF) | (padded[:, 2] << 16), (padded[:, 1] & 0xFFFF) | (padded[:, 3] << 16)]
        records = np.stack([folded, *pairs, [m for m, _ in factors], rounding], axis=1)
        op.records = records.ravel()
    # a convolution whose windows never leave the input and whose rows are whole words reads its patch in place, row
    # by row, on ARMv6 (the loop's counter and the step to the next row are immediates of its ARM instructions)
    op.row_walk = row_walk(op.small_patch, op.inside, op.k_w, op.in_c, op.in_w)
    op.columns = columns(op.small_patch, op.inside, (op.k_h, op.k_w), op.in_c, op.s_w, op.filters)


# The kernel variant rules, read by the templates' flags above and by keras_grs.latency's int8 features.
def fast_requantize(act_min: int, output_zero: int) -> bool:
    """Whether the ARMv6 path finishes an output with SMMLAR + SSAT (besides a rounding term below 2^30): under a
    ReLU, where the ARMv6 meter and the latency estimate measured it. Since the C rounds halves up as TFLite's
    builtin kernels do, the form is exact for every layer; the other layers still take the plain requantization."""
    return act_min >= output_zero


def small_patch(patch: int, fast: bool, filters: int) -> bool:
    """Whether a convolution takes the two-position kernel: a patch of at most 4 values, the fast requantization."""
    return patch <= 4 and fast and filters <= 4096


def row_walk(small: bool, inside: bool, k_w: int, in_c: int, in_w: int) -> bool:
    """Whether a convolution reads its windows in place, row by row (else it gathers each patch first)."""
    row = k_w * in_c
    return not small and inside and row % 4 == 0 and row // 4 <= 255 and _arm_immediate((in_w - k_w) * in_c)


def columns(small: bool, inside: bool, kernel: tuple, in_c: int, s_w: int, filters: int) -> bool:
    """Whether a two-position convolution (:func:`small_patch`) walks its rows by column words instead: one input
    channel, 2x2 windows inside the input and side by side (strides 1 along a row), so that a column of two values
    serves the windows on either side of it, and a filter's record up to 4 positions (stores at most 4 x filters
    bytes away: an immediate offset of ARM's STRB)."""
    return small and inside and tuple(kernel) == (2, 2) and in_c == 1 and s_w == 1 and 4 * filters <= 4096


def max_pool_words(mode: str, channels: int) -> bool:
    """Whether an int8 max pooling compares 4 channels at a time (SSUB8 + SEL; templates/kernels/pool_int8.c.j2)."""
    return mode == "max" and channels % 4 == 0


def _inside(op: O.Window, k_h: int, k_w: int) -> bool:
    """Whether every window of a convolution or pooling lies inside the input (no padding to skip or fill)."""
    return op.pad_t == op.pad_l == 0 and (op.out_h - 1) * op.s_h + k_h <= op.in_h \
        and (op.out_w - 1) * op.s_w + k_w <= op.in_w


def _arm_immediate(value: int) -> bool:
    """Whether an ARM data-processing instruction can hold ``value``: 8 bits rotated right by an even amount."""
    return any(((value << r | value >> (32 - r)) & 0xFFFFFFFF) < 256 for r in range(0, 32, 2))


def _pack(quantized: np.ndarray) -> tuple[list[dict], np.ndarray]:
    """Blocks of output units (``INT8_BLOCK`` wide, then the rest) and the ``[units][inputs]`` int8 weights packed as
    the kernel reads them: block by block, group of 4 inputs by group (the last one padded with zeros), unit by unit,
    each group's 4 weights as 16-bit values in the order (0, 2, 1, 3) that SXTB16 gives the inputs, so that one
    SMLAD multiplies a word of two inputs by a word of two weights."""
    units, n = quantized.shape
    groups = -(-n // 4)
    padded = np.zeros((units, groups * 4), dtype=np.int64)
    padded[:, :n] = quantized
    full, rest = divmod(units, INT8_BLOCK)
    blocks = [{"size": INT8_BLOCK, "count": full, "start": 0}] if full else []
    if rest:
        blocks.append({"size": rest, "count": 1, "start": full * INT8_BLOCK})
    packed = [padded[u:u + b["size"]].reshape(b["size"], groups, 4)[:, :, [0, 2, 1, 3]].transpose(1, 0, 2).ravel()
              for b in blocks for u in range(b["start"], b["start"] + b["count"] * b["size"], b["size"])]
    return blocks, np.concatenate(packed)
