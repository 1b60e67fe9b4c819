"""What keras-grs knows about each kind of layer: one entry per kind, read by analysis, surgery and counting.

Every layer class (and every plain Keras op, such as the ``x + 3.0`` of a hard-swish) that keras-grs accepts has one
:class:`Kind`:

* ``role``: what it does to the channels (the last axis) of its input, in the dependency graph:

  ``input``        a model input; its channels are pinned (the data fixes them).
  ``producer``     reads every input channel and writes channels of its own (Dense, Conv*, SeparableConv*): it
                   *consumes* its input's groups (loses the matching input rows) and *starts* a new group.
  ``channelwise``  output channel c depends on input channel c only (BatchNormalization, DepthwiseConv with
                   depth_multiplier 1, pooling, padding, dropout, activations, ops with a scalar constant): the
                   input's groups are carried through. DepthwiseConv with a multiplier m carries each channel into
                   m adjacent output channels.
  ``reshape``      Flatten / Reshape: keeps the channel axis, or spreads it over positions (channel c of (..., C)
                   becomes rows p * C + c), or else moves channels (then it pins).
  ``merge``        element-wise merge (Add, Subtract, Multiply, Average, Maximum, Minimum): the channels of all its
                   inputs must go together, so their groups become one.
  ``concat``       Concatenate: the output's channels are the inputs' channels side by side, each at an offset.
  ``pin``          mixes channels in a way removal would change (LayerNormalization, a channel Softmax, attention,
                   Permute, grouped convolution): its input groups and its output are pinned, never pruned.

* ``slice(layer, weights, kin, kout)``: the layer's weights (a dict by variable name) with only the kept input
  channels ``kin`` and kept output channels ``kout`` (index arrays, None for "all").
* ``macs(layer, nonzero, weights=None)``: multiply-accumulates of one inference (one sample); FLOPs are 2 per MAC.
  ``weights`` (by variable name) stand in for the layer's own: the count of a resized copy of the layer, whose
  positions are the layer's (removing channels never changes them).
* ``resize(config, channels)``: sets the output channel count in a layer config (Dense units, Conv filters, a
  Reshape's target shape), for layers whose config states it.
* ``pins(operation, node)``: a reason (string) why this particular instance pins its channels, or None.
* ``batched``: the batched evaluator's op for the layer (``dense``, ``conv``, ``norm``, ``depthwise``, ``pool``,
  ``gpool``, ``flatten``, ``dropout``, ``activation``), None when a model holding it trains one fit per trial
  (:mod:`keras_grs.evaluate.batched` checks the instance's options).
* ``actor``: the C backend's actor (``dense``, ``conv``, ``depthwise``, ``separable``, ``affine``, ``activation``,
  ``pool``, ``global_pool``, ``pad``, ``crop``, ``merge``, ``concat``, ``op``), ``identity`` for a layer that
  changes nothing in a channels-last buffer at inference (no actor: its output is its input's buffer), None
  when C export refuses it (:mod:`c_backend.ir`).

:func:`kind_of` finds the entry for a layer or op and raises :class:`UnsupportedLayerError` naming the layer and its
class when there is none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import keras
import numpy as np

ROLES = ("input", "producer", "channelwise", "reshape", "merge", "concat", "pin")


class UnsupportedLayerError(ValueError):
    """The model holds a layer (or a connection) that keras-grs cannot prune through."""


@dataclass(frozen=True)
class Kind:
    """The rules of one layer kind (see the module docstring)."""

    role: str
    slice: Callable | None = None
    macs: Callable | None = None
    resize: Callable | None = None
    pins: Callable | None = None
    multiplier: Callable | None = None  # channelwise: output channels per input channel (DepthwiseConv)
    instance: Callable | None = None  # (layer) -> the Kind of this particular instance, when it differs
    batched: str | None = None
    actor: str | None = None


# -- weight slicing rules ------------------------------------------------------------------------------------
def _take(array, index, axis):
    return array if index is None else np.take(array, index, axis=axis)


def _expanded(index, multiplier):
    """Positions of channel c's ``multiplier`` outputs (c * m + j) for the kept channels ``index``."""
    if index is None:
        return None
    return (np.asarray(index)[:, None] * multiplier + np.arange(multiplier)[None, :]).ravel()


def _slice_kernel(layer, weights, kin, kout):
    """Dense and Conv: kernel (..., inputs, outputs) loses input rows and output columns; bias follows outputs."""
    out = dict(weights)
    out["kernel"] = _take(_take(weights["kernel"], kin, -2), kout, -1)
    if "bias" in weights:
        out["bias"] = _take(weights["bias"], kout, 0)
    return out


def _slice_depthwise(layer, weights, kin, kout):
    """DepthwiseConv: its kernel (..., channels, multiplier) loses channels; bias (channels * m) follows."""
    out = dict(weights)
    out["kernel"] = _take(weights["kernel"], kin, -2)
    if "bias" in weights:
        out["bias"] = _take(weights["bias"], kout, 0)
    return out


def _slice_separable(layer, weights, kin, kout):
    """SeparableConv: the depthwise half loses input channels, the pointwise half the rows of their m outputs
    and its own removed filters."""
    out = dict(weights)
    out["depthwise_kernel"] = _take(weights["depthwise_kernel"], kin, -2)
    rows = _expanded(kin, layer.depth_multiplier)
    out["pointwise_kernel"] = _take(_take(weights["pointwise_kernel"], rows, -2), kout, -1)
    if "bias" in weights:
        out["bias"] = _take(weights["bias"], kout, 0)
    return out


RECURRENT = (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN)  # 4, 3 and 1 gate(s) of units


def _slice_recurrent(layer, weights, kin, kout):
    """LSTM, GRU and SimpleRNN: the kernel (inputs, gates x units) loses input rows and, in each gate's block of
    columns, the removed units'; the recurrent kernel (units, gates x units) loses the removed units' rows and
    columns; the bias ((gates x units,), or (2, gates x units) for a GRU with ``reset_after``) their columns."""
    units = weights["recurrent_kernel"].shape[0]  # the weights': a smaller candidate's perhaps
    gates = weights["recurrent_kernel"].shape[1] // units
    columns = None if kout is None else np.concatenate([np.asarray(kout) + g * units for g in range(gates)])
    out = dict(weights)
    out["kernel"] = _take(_take(weights["kernel"], kin, 0), columns, -1)
    out["recurrent_kernel"] = _take(_take(weights["recurrent_kernel"], kout, 0), columns, -1)
    if "bias" in weights:
        out["bias"] = _take(weights["bias"], columns, -1)
    return out


def _slice_per_channel(layer, weights, kin, kout):
    """Per-channel statistics or scales (BatchNormalization, Normalization, LayerScale, PReLU): every weight whose
    last axis is the channel axis loses the removed channels; scalars (a count) stay. The channels are counted on
    the weights, not on the layer: they may be a smaller candidate's (:func:`keras_grs.surgery.surviving_weights`)."""
    if kin is None:
        return dict(weights)
    channels = max((w.shape[-1] for w in weights.values() if w.ndim), default=int(layer.input.shape[-1]))
    return {k: _take(w, kin, -1) if w.ndim and w.shape[-1] == channels else w for k, w in weights.items()}


# -- MAC rules ----------------------------------------------------------------------------------------------
def _count(layer, attribute, nonzero, weights=None):
    kernel = weights[attribute] if weights is not None else keras.ops.convert_to_numpy(getattr(layer, attribute))
    return int(np.count_nonzero(kernel)) if nonzero else int(kernel.size)


def _positions(shape):
    return int(np.prod(shape[1:-1])) if len(shape) > 2 else 1


def _macs_dense(layer, nonzero, weights=None):
    """Each input position (a Dense on a sequence runs at every step) multiplies the whole kernel."""
    return _positions(layer.input.shape) * _count(layer, "kernel", nonzero, weights)


def _macs_conv(layer, nonzero, weights=None):
    """Each output position multiplies the whole kernel (border positions of ``same`` padding in full)."""
    return _positions(layer.output.shape) * _count(layer, "kernel", nonzero, weights)


def _macs_recurrent(layer, nonzero, weights=None):
    """Each time step multiplies the input by the kernel and the previous state by the recurrent kernel."""
    if weights is None:
        weights = {"kernel": keras.ops.convert_to_numpy(layer.cell.kernel),
                   "recurrent_kernel": keras.ops.convert_to_numpy(layer.cell.recurrent_kernel)}
    count = (lambda w: int(np.count_nonzero(w))) if nonzero else (lambda w: int(w.size))
    return int(layer.input.shape[1]) * (count(weights["kernel"]) + count(weights["recurrent_kernel"]))


def _macs_depthwise(layer, nonzero, weights=None):
    return _positions(layer.output.shape) * _count(layer, "kernel", nonzero, weights)


def _macs_separable(layer, nonzero, weights=None):
    """The depthwise half at every output position, then the 1x1 pointwise half at every output position."""
    positions = _positions(layer.output.shape)
    return positions * (_count(layer, "depthwise_kernel", nonzero, weights)
                        + _count(layer, "pointwise_kernel", nonzero, weights))


# -- config rules -------------------------------------------------------------------------------------------
def _set(key):
    def resize(config, channels):
        config[key] = int(channels)

    return resize


def _resize_noise_shape(config, channels):
    """A Dropout's (or AlphaDropout's) ``noise_shape`` names the channel count when the mask is drawn per channel
    (a SpatialDropout written as ``Dropout(noise_shape=(None, 1, C))``): it changes with them, or the pruned layer
    cannot run."""
    shape = config.get("noise_shape")
    if shape is not None and len(shape) > 1 and shape[-1] not in (None, 1):
        config["noise_shape"] = (*shape[:-1], int(channels))


def _resize_reshape(config, channels):
    shape = list(config["target_shape"])
    if shape[-1] != -1:
        shape[-1] = int(channels)
    config["target_shape"] = tuple(shape)


# -- instance checks (a reason to pin) ----------------------------------------------------------------------
def _channel_axis(axis, rank):
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return [a % rank for a in axes] == [rank - 1]


def _pins_grouped(layer, node):
    return f"grouped convolution (groups={layer.groups})"


def _conv_instance(layer):
    """A Conv with ``groups`` > 1 and one input channel per group is a depthwise convolution (ConvNeXt writes its
    depthwise convolutions so): channel-wise, each channel feeding filters / groups adjacent outputs. Other grouped
    convolutions pin their channels."""
    groups = getattr(layer, "groups", 1)
    if groups == 1:
        return None
    if layer.kernel.shape[-2] == 1:
        return GROUPED_DEPTHWISE
    return GROUPED


def _slice_grouped_depthwise(layer, weights, kin, kout):
    """Kernel (..., 1, channels * m): the outputs of removed channels go, the single input slice stays."""
    return _slice_kernel(layer, weights, None, kout)


def _resize_grouped(config, channels):
    multiplier = config["filters"] // config["groups"]
    config["filters"], config["groups"] = int(channels), int(channels) // multiplier


def _grouped_multiplier(layer):
    return int(layer.filters // layer.groups)


def _pins_axis(layer, node):
    """BatchNormalization / Normalization: per-channel only when they normalize the channel axis."""
    if _channel_axis(layer.axis, len(node.output_tensors[0].shape)):
        return None
    return f"normalizes axis {layer.axis}, not the channel axis"


def _pins_softmax(layer, node):
    axis = getattr(layer, "axis", -1)
    if _channel_axis(axis, len(node.output_tensors[0].shape)):
        return "softmax over the channel axis"
    return None


def _pins_activation(layer, node):
    name = getattr(layer.activation, "__name__", "")
    if name in ("softmax", "log_softmax"):
        return f"{name} over the channel axis"
    return None


def _pins_rescaling(layer, node):
    if np.ndim(layer.scale) or np.ndim(layer.offset):
        return "per-channel scale or offset"
    return None


def _pins_normalization(layer, node):
    if getattr(layer, "input_mean", None) is not None:
        return "mean and variance given as constants"
    return _pins_axis(layer, node)


def _pins_op(op, node):
    """A Keras op is channel-wise when every argument besides its one tensor is a scalar constant."""
    args = list(node.arguments.args) + list(node.arguments.kwargs.values())
    for value in args:
        if isinstance(value, keras.KerasTensor):
            continue
        if np.ndim(value) != 0:
            return "an op with a non-scalar constant"
    return None


def _multiplier(layer):
    return int(layer.depth_multiplier)


PRODUCER_CONV = Kind("producer", _slice_kernel, _macs_conv, _set("filters"), instance=_conv_instance, batched="conv",
                     actor="conv")
GROUPED_DEPTHWISE = Kind("channelwise", _slice_grouped_depthwise, _macs_conv, _resize_grouped,
                         multiplier=_grouped_multiplier, actor="depthwise")
GROUPED = Kind("pin", macs=_macs_conv, pins=_pins_grouped, actor="conv")  # C refuses it, naming the groups
CARRY = Kind("channelwise")
PER_CHANNEL = Kind("channelwise", _slice_per_channel)
MERGE = Kind("merge", actor="merge")
PIN = Kind("pin")


def _carry(batched=None, actor=None, resize=None) -> Kind:
    return replace(CARRY, batched=batched, actor=actor, resize=resize)


L = keras.layers
SEPARABLE = Kind("producer", _slice_separable, _macs_separable, _set("filters"), batched="separable",
                 actor="separable")
DEPTHWISE = Kind("channelwise", _slice_depthwise, _macs_depthwise, multiplier=_multiplier, batched="depthwise",
                 actor="depthwise")
KINDS: dict[type, Kind] = {
    L.InputLayer: Kind("input", actor="identity"),
    L.Dense: Kind("producer", _slice_kernel, _macs_dense, _set("units"), batched="dense", actor="dense"),
    L.Conv1D: PRODUCER_CONV,
    L.Conv2D: PRODUCER_CONV,
    L.Conv3D: replace(PRODUCER_CONV, batched=None, actor=None),
    L.SeparableConv1D: SEPARABLE,
    L.SeparableConv2D: SEPARABLE,
    L.DepthwiseConv1D: DEPTHWISE,
    L.DepthwiseConv2D: DEPTHWISE,
    **{cls: Kind("producer", _slice_recurrent, _macs_recurrent, _set("units"), batched="recurrent")
       for cls in RECURRENT},
    L.BatchNormalization: Kind("channelwise", _slice_per_channel, pins=_pins_axis, batched="norm", actor="affine"),
    L.Normalization: Kind("channelwise", _slice_per_channel, pins=_pins_normalization, batched="input",
                          actor="affine"),
    L.PReLU: replace(PER_CHANNEL, batched="prelu"),
    L.Activation: Kind("channelwise", pins=_pins_activation, batched="activation", actor="activation"),
    L.Softmax: Kind("channelwise", pins=_pins_softmax),
    L.Rescaling: Kind("channelwise", pins=_pins_rescaling, batched="input", actor="affine"),
    L.ReLU: _carry("activation", "activation"),
    L.Dropout: _carry("dropout", "identity", _resize_noise_shape),
    L.Identity: _carry(actor="identity"),
    **{cls: _carry("dropout", "identity") for cls in (L.SpatialDropout1D, L.SpatialDropout2D)},
    **{cls: _carry("pool", "pool") for cls in (
        L.MaxPooling1D, L.MaxPooling2D, L.AveragePooling1D, L.AveragePooling2D)},
    **{cls: _carry("gpool", "global_pool") for cls in (
        L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalAveragePooling1D, L.GlobalAveragePooling2D)},
    **{cls: _carry("pad", "pad") for cls in (L.ZeroPadding1D, L.ZeroPadding2D)},
    **{cls: _carry("crop", "crop") for cls in (L.Cropping1D, L.Cropping2D)},
    **{cls: _carry("activation") for cls in (L.LeakyReLU, L.ELU)},
    # identity at inference: the C backend leaves them out, as it does Dropout
    **{cls: _carry("noise", "identity") for cls in (L.GaussianNoise, L.GaussianDropout)},
    **{cls: _carry(actor="identity") for cls in (L.SpatialDropout3D, L.ActivityRegularization)},
    L.AlphaDropout: _carry(actor="identity", resize=_resize_noise_shape),
    **{cls: CARRY for cls in (
        L.MaxPooling3D, L.AveragePooling3D, L.GlobalMaxPooling3D,
        L.GlobalAveragePooling3D, L.ZeroPadding3D, L.Cropping3D, L.UpSampling3D, L.RepeatVector,
    )},
    **{cls: _carry("upsample") for cls in (L.UpSampling1D, L.UpSampling2D)},
    L.Flatten: Kind("reshape", batched="flatten", actor="identity"),
    L.Reshape: Kind("reshape", resize=_resize_reshape, actor="identity", batched="reshape"),
    **{cls: MERGE for cls in (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)},
    L.Concatenate: Kind("concat", actor="concat"),
    L.LayerNormalization: replace(PIN, batched="layernorm"),
    **{cls: PIN for cls in (
        L.GroupNormalization, L.UnitNormalization, L.MultiHeadAttention, L.Attention,
        L.AdditiveAttention, L.Permute, L.Dot,
    )},
}


def _register_application_layers():
    """Layers defined inside keras.applications (ConvNeXt, InceptionResNetV2), known by their behaviour."""
    try:
        from keras.src.applications import convnext, inception_resnet_v2
    except ImportError:  # pragma: no cover - a Keras without these applications
        return
    KINDS[convnext.LayerScale] = Kind("channelwise", _slice_per_channel, resize=_set("projection_dim"))
    KINDS[convnext.StochasticDepth] = CARRY  # identity at inference, a per-sample scale in training
    KINDS[inception_resnet_v2.CustomScaleLayer] = replace(MERGE, actor=None)  # inputs[0] + inputs[1] * scale


_register_application_layers()

# Plain Keras ops (keras.ops.* applied to symbolic tensors inside a functional model), by class name: element-wise,
# so channel-wise with scalar constants and a merge when two tensors meet.
ELEMENTWISE_OPS = frozenset({
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum", "Power", "Negative", "Abs",
    "Exp", "Log", "Sqrt", "Square", "Tanh", "Clip", "Relu", "Relu6", "Sigmoid", "HardSigmoid", "HardSilu", "Silu",
    "Gelu", "Elu", "Selu", "Softplus", "Softsign", "LeakyRelu", "Celu",
})
OP_CHANNELWISE = Kind("channelwise", pins=_pins_op, actor="op")
OP_MERGE = replace(MERGE, actor="op")


def is_op(operation) -> bool:
    """True for a plain Keras op (not a Layer) recorded in a functional graph."""
    return not isinstance(operation, keras.layers.Layer)


def kind_of(operation, node=None) -> Kind:
    """The :class:`Kind` of a layer or Keras op; ``node`` (its call in the graph) tells a channel-wise op from a
    merge. Raises UnsupportedLayerError naming the layer and its class when keras-grs does not know it."""
    if isinstance(operation, keras.Model):
        raise UnsupportedLayerError(
            f"layer {operation.name!r} is a nested model ({type(operation).__name__}); flatten it into one model first"
        )
    if getattr(operation, "data_format", "channels_last") != "channels_last":
        raise UnsupportedLayerError(
            f"layer {operation.name!r} uses data_format={operation.data_format!r}; only channels_last is supported"
        )
    kind = KINDS.get(type(operation))
    if kind is not None:
        return (kind.instance(operation) or kind) if kind.instance else kind
    if is_op(operation) and type(operation).__name__ in ELEMENTWISE_OPS:
        if node is not None and len(node.input_tensors) > 1:
            return OP_MERGE
        return OP_CHANNELWISE
    what = "op" if is_op(operation) else "layer"
    raise UnsupportedLayerError(
        f"{what} {operation.name!r} of class {type(operation).__name__} is not supported (keras-grs does not know "
        f"how its channels depend on its input's); supported layers: {supported_names()}"
    )


def output_kernel(layer) -> np.ndarray:
    """The kernel whose last axis is a producer's output units (Dense/Conv ``kernel``, SeparableConv
    ``pointwise_kernel``; a recurrent layer's kernel and recurrent kernel, each gate's block of columns as rows of
    its own): what a weight-magnitude criterion reads."""
    if kind_of(layer).role != "producer":
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) produces no units of its own")
    if isinstance(layer, RECURRENT):
        return gated_kernel(*(keras.ops.convert_to_numpy(w) for w in (layer.cell.kernel, layer.cell.recurrent_kernel)))
    name = "pointwise_kernel" if hasattr(layer, "pointwise_kernel") else "kernel"
    return keras.ops.convert_to_numpy(getattr(layer, name))


def gated_kernel(kernel, recurrent) -> np.ndarray:
    """A recurrent layer's kernel (inputs, gates x units) and recurrent kernel (units, gates x units) as one
    (rows, units) array, each gate's block of columns as rows of its own (:func:`output_kernel`)."""
    units = recurrent.shape[0]
    return np.concatenate([np.reshape(kernel, (-1, units)), np.reshape(recurrent, (-1, units))])


def supported_names() -> str:
    return ", ".join(sorted({cls.__name__ for cls in KINDS}))
