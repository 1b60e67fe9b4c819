"""The intermediate description of a model for C generation: one operation per actor, with shapes, weights
(already formatted as C literals), activation and storage form. Templates only lay these out.

Fusions: an Activation/ReLU layer joins the operation before it when that one has no activation yet; a
BatchNormalization directly after a Dense/Conv layer without activation is folded into its weights; Dropout,
Flatten and InputLayer change nothing in a channels-last buffer and produce no actor.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_grs.structure import UnsupportedLayerError, analyze, layer_chain

ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax")
C_KEYWORDS = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else", "enum", "extern",
    "float", "for", "goto", "if", "inline", "int", "long", "register", "restrict", "return", "short", "signed",
    "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void", "volatile", "while", "main",
}
FUSES_ACTIVATION = ("dense", "conv", "affine")
SPARSE_DENSITY = 0.5  # sparse="auto" stores a Dense layer sparsely at or below this density
# Output units computed together by the float Dense kernel: each loaded input feeds this many accumulators. Eight
# accumulators, eight weights and the input fill 17 of the VFP's 32 single registers on ARMv6.
DENSE_BLOCK = 8


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


def c_float(value) -> str:
    value = float(np.float32(value))
    if not np.isfinite(value):
        raise ValueError(f"a weight is not finite ({value}); the model cannot be exported")
    text = format(value, ".9g")
    if "e" not in text and "." not in text:
        text += ".0"
    return text + "f"


def _activation(layer) -> str:
    if isinstance(layer, keras.layers.ReLU):
        if layer.max_value is not None or float(layer.negative_slope) != 0 or float(layer.threshold) != 0:
            raise UnsupportedLayerError(f"layer {layer.name!r}: only a plain ReLU is supported in C")
        return "relu"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", "linear")
    if name not in ACTIVATIONS:
        raise UnsupportedLayerError(
            f"layer {layer.name!r} uses activation {name!r}; C export supports {', '.join(ACTIVATIONS)}"
        )
    return name


def _padding(size_in, size_out, kernel, stride, padding) -> int:
    if padding == "valid":
        return 0
    return max((size_out - 1) * stride + kernel - size_in, 0) // 2


def _as_2d(shape):
    """(H, W, C) for 2-D layers, (1, L, C) for 1-D ones."""
    return (1, *shape) if len(shape) == 2 else tuple(shape)


def describe(model, name: str, precision="float32", sparse="auto", calibration=None) -> list[dict]:
    """The operations (actors) of ``model``, in order. See the module docstring for the fusions."""
    if precision not in ("float32", "int8"):
        raise ValueError(f"precision must be 'float32' or 'int8', got {precision!r}")
    if sparse not in ("auto", "never", "always"):
        raise ValueError(f"sparse must be 'auto', 'never' or 'always', got {sparse!r}")
    analyze(model)  # refuses unsupported layers and graphs, naming them
    layers = layer_chain(model)
    taken = {name}
    if precision == "int8" and calibration is None:
        raise ValueError("precision='int8' needs calibration data: export(..., calibration=x_sample)")
    ops: list[dict] = []
    for layer in layers:
        in_shape = tuple(int(d) for d in layer.input.shape[1:])
        out_shape = tuple(int(d) for d in layer.output.shape[1:])
        if isinstance(layer, (keras.layers.Dropout, keras.layers.Flatten, keras.layers.InputLayer)):
            continue
        if isinstance(layer, (keras.layers.Activation, keras.layers.ReLU)):
            activation = _activation(layer)
            previous = ops[-1] if ops else None
            if previous is not None and previous["activation"] == "linear" and previous["kind"] in FUSES_ACTIVATION:
                previous["activation"] = activation
                previous["description"] += f", then {activation}"
                previous["_pre"], previous["_source"] = previous["_source"], layer.name
                continue
            ops.append(_op(layer, name, taken, "activation", in_shape, out_shape, activation=activation,
                           description=f"{activation} on {int(np.prod(out_shape))} values"))
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            scale, shift = _bn_affine(layer)
            previous = ops[-1] if ops else None
            if previous is not None and previous["kind"] in ("dense", "conv") and previous["activation"] == "linear" \
                    and previous["out_shape"] == in_shape:
                previous["raw"] = (previous["raw"][0] * scale[:, None], previous["raw"][1] * scale + shift)
                previous["description"] += ", BatchNormalization folded in"
                previous["_source"] = layer.name
                continue
            ops.append(_op(layer, name, taken, "affine", in_shape, out_shape, activation="linear",
                           scale=[c_float(v) for v in scale], shift=[c_float(v) for v in shift],
                           description=f"BatchNormalization on {out_shape[-1]} channels"))
            continue
        if isinstance(layer, keras.layers.Dense):
            kernel, bias = _kernel_bias(layer)
            op = _op(layer, name, taken, "dense", in_shape, out_shape, activation=_activation(layer),
                     inputs=in_shape[-1], units=out_shape[-1],
                     description=f"Dense {in_shape[-1]} -> {out_shape[-1]}")
            op["raw"] = (kernel.T.copy(), bias)  # [units][inputs]
            ops.append(op)
            continue
        if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
            if any(d != 1 for d in np.atleast_1d(layer.dilation_rate)):
                raise UnsupportedLayerError(f"layer {layer.name!r}: dilated convolutions are not supported in C")
            kernel, bias = _kernel_bias(layer)
            if kernel.ndim == 3:
                kernel = kernel[None]
            (ih, iw, ic), (oh, ow, f) = _as_2d(in_shape), _as_2d(out_shape)
            kh, kw = kernel.shape[:2]
            strides = tuple(np.atleast_1d(layer.strides))
            sh, sw = (1, strides[0]) if len(strides) == 1 else strides
            op = _op(layer, name, taken, "conv", in_shape, out_shape, activation=_activation(layer),
                     in_h=ih, in_w=iw, in_c=ic, out_h=oh, out_w=ow, filters=f, k_h=kh, k_w=kw, s_h=sh, s_w=sw,
                     pad_t=_padding(ih, oh, kh, sh, layer.padding), pad_l=_padding(iw, ow, kw, sw, layer.padding),
                     scratch=("float", kh * kw * ic),
                     description=f"Conv {kh}x{kw}, {ic} -> {f} channels, output {oh}x{ow}")
            op["raw"] = (np.transpose(kernel, (3, 0, 1, 2)).reshape(f, -1).copy(), bias)  # [filter][kh][kw][c]
            ops.append(op)
            continue
        if isinstance(layer, (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D,
                              keras.layers.AveragePooling1D, keras.layers.AveragePooling2D)):
            mode = "max" if "Max" in type(layer).__name__ else "avg"
            (ih, iw, c), (oh, ow, _) = _as_2d(in_shape), _as_2d(out_shape)
            pool = tuple(np.atleast_1d(layer.pool_size))
            strides = tuple(np.atleast_1d(layer.strides))
            (ph, pw), (sh, sw) = ((1, pool[0]), (1, strides[0])) if len(pool) == 1 else (pool, strides)
            ops.append(_op(layer, name, taken, "pool", in_shape, out_shape, activation="linear", mode=mode,
                           in_h=ih, in_w=iw, out_h=oh, out_w=ow, p_h=ph, p_w=pw, s_h=sh, s_w=sw,
                           pad_t=_padding(ih, oh, ph, sh, layer.padding), pad_l=_padding(iw, ow, pw, sw, layer.padding),
                           description=f"{mode} pooling {ph}x{pw}, output {oh}x{ow}x{c}"))
            continue
        if isinstance(layer, (keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
                              keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D)):
            mode = "max" if "Max" in type(layer).__name__ else "avg"
            ops.append(_op(layer, name, taken, "global_pool", in_shape, out_shape, activation="linear", mode=mode,
                           spatial=int(np.prod(in_shape[:-1])),
                           description=f"global {mode} pooling of {in_shape[-1]} channels"))
            continue
        raise UnsupportedLayerError(f"layer {layer.name!r} ({type(layer).__name__}) has no C translation")
    if not ops:
        raise UnsupportedLayerError("the model computes nothing that needs an actor")
    if precision == "int8":
        from c_backend.quantize import quantize_ops

        return quantize_ops(name, taken, layers, ops, np.asarray(calibration, dtype="float32"))
    for op in ops:
        _finish(op, precision, sparse)
    return ops


def _op(layer, model_name, taken, kind, in_shape, out_shape, **fields) -> dict:
    actor = c_identifier(f"{model_name}_{layer.name}", taken)
    channels = int(out_shape[-1])
    return {
        "kind": kind,
        "layer": c_identifier(layer.name),
        "actor": actor,
        "prefix": actor.upper(),
        "in_size": int(np.prod(in_shape)),
        "out_size": int(np.prod(out_shape)),
        "positions": int(np.prod(out_shape)) // channels,
        "channels": channels,
        "out_shape": tuple(out_shape),
        # for int8 calibration: the layer whose output this op produces, and the one before its activation
        "_source": layer.name,
        "_pre": layer,
        "in_type": "float",
        "out_type": "float",
        "scratch": None,  # (C type, count) of a work buffer the actor needs, kept in the model's context
        **fields,
    }


def _kernel_bias(layer):
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    bias = keras.ops.convert_to_numpy(layer.bias).astype(np.float64) if layer.use_bias else np.zeros(kernel.shape[-1])
    return kernel, bias


def _bn_affine(layer):
    mean = keras.ops.convert_to_numpy(layer.moving_mean).astype(np.float64)
    variance = keras.ops.convert_to_numpy(layer.moving_variance).astype(np.float64)
    gamma = keras.ops.convert_to_numpy(layer.gamma).astype(np.float64) if layer.scale else np.ones_like(mean)
    beta = keras.ops.convert_to_numpy(layer.beta).astype(np.float64) if layer.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + layer.epsilon)
    return scale, beta - mean * scale


def _finish(op: dict, precision: str, sparse: str) -> None:
    op.pop("_source")
    op.pop("_pre")
    raw = op.pop("raw", None)
    if raw is None:
        return
    weights, bias = raw
    op["bias"] = [c_float(v) for v in bias]
    nonzero = int(np.count_nonzero(weights))
    density = nonzero / weights.size
    if op["kind"] == "dense" and (sparse == "always" or (sparse == "auto" and density <= SPARSE_DENSITY)):
        op["kind"] = "dense_sparse"
        rows, columns = np.nonzero(weights)
        op["row_start"] = [str(v) for v in np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=weights.shape[0]))])]
        op["column"] = [str(v) for v in columns]
        op["nonzero_values"] = [c_float(v) for v in weights[rows, columns]]
        op["nonzero"] = nonzero
        op["density"] = density
        op["index_type"] = "unsigned short" if weights.shape[1] <= 65535 else "int"
        op["description"] += f" (sparse, {nonzero} non-zero weights)"
        return
    if op["kind"] in ("dense", "conv"):  # a convolution is a Dense layer applied to each gathered patch
        op["blocks"], packed = _dense_blocks(weights)
        op["weights"] = [c_float(v) for v in packed]
        return
    op["weights"] = [c_float(v) for v in weights.ravel()]


def _dense_blocks(weights: np.ndarray) -> tuple[list[dict], np.ndarray]:
    """Blocks of output units (``DENSE_BLOCK`` wide, then the rest), and the ``[units][inputs]`` weights packed in
    the order the kernel reads them: block by block, input by input, the block's units side by side."""
    units = weights.shape[0]
    full, rest = divmod(units, DENSE_BLOCK)
    blocks = [{"size": DENSE_BLOCK, "count": full, "start": 0}] if full else []
    if rest:
        blocks.append({"size": rest, "count": 1, "start": full * DENSE_BLOCK})
    packed = [weights[u:u + b["size"]].T.ravel() for b in blocks
              for u in range(b["start"], b["start"] + b["count"] * b["size"], b["size"])]
    return blocks, np.concatenate(packed)
