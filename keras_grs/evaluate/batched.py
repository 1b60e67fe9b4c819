"""The batched evaluator: several candidates trained together in one compiled computation.

Small models spend almost all of ``model.fit``'s time on per-step Python dispatch, not arithmetic. This evaluator
trains every job of a batch (the candidates of a GRS step, the attempts of a JGRS phase) at once: their weights are
stacked along a leading candidate axis at the largest widths seen so far, units a candidate does not have are
masked to zero, and the fit runs in XLA-compiled calls of many epochs each: every epoch's mini-batches, its
validation and the choice of the epoch whose weights are kept (a host loop around each epoch cost a third of a
100-epoch nn1 search). A call runs as many epochs as take about a second, so that Ctrl-C is seen soon, and one
epoch when an EarlyStopping decides between epochs; the number is an argument of the one program, which any number
of epochs reuses. Because the padded shapes only grow, a whole search usually runs on one or two compiled
programs. A compiled fit keeps about one core busy, so a batch is cut into groups of a fixed number of slots (a
search step's candidates shared by the ``workers``, two by default) trained side by side in threads. Each
candidate keeps its own weights, dropout masks, batch order and optimizer state; loss, optimizer (with its
schedule and weight decay), regularizers, class or sample weights, epochs, batch size, per-epoch shuffling
and the epoch rule (the best or the last epoch) are those of the keras path, written once in
:mod:`keras_grs.evaluate.training`. The chosen epoch's weights are copied back into each job's (physically smaller)
model and saved to its checkpoint, so trials look exactly like the keras evaluator's.

Each Dense/Conv layer is one batched product of the candidates' inputs (a convolution's image patches) with their
stacked kernels; each candidate's slice of it is rounded alike however many candidates share the batch, which the
resume guarantee below needs (:func:`_matmul`). What a small CNN's epoch spends its time on
(``benchmarks/results/conv_profile.md``) shaped two shortcuts: a model's first convolution reads the same samples
every epoch, so their patches are taken once per fit and each batch gathers its rows; a max pooling after a
Dense/Conv layer runs before its bias, activation and mask (the same values, on a quarter of them), its window
maximum with a one-select gradient. Dropout masks are Philox draws, every candidate's in one fused expression
(:mod:`keras_grs.evaluate.philox`: the numbers ``tf.random.stateless_uniform`` gives, about a fifth of a small MLP's
training time less than one draw per candidate; masks from a cheaper elementwise hash were not shown to train like
one fit per candidate: ``benchmarks/results/evaluator_parity.md``).

Supported: chains and graphs (one input, one output, each layer called once) of Dense (at every position of a
sequence or an image too: a 1x1 convolution), Conv1D/Conv2D (channels last,
no groups; dilated or not, a Conv1D's causal padding too; with or without bias), BatchNormalization of their units
(its moments over a batch's real samples, its moving statistics updated by each training step and used for
validation, as Keras' layer does), DepthwiseConv1D/2D of their units (depth multiplier 1), SeparableConv1D/2D of
their units (the same depthwise op, then a 1x1 Conv op), max/average pooling, global pooling (keeping its axes or
not), ZeroPadding and Cropping, UpSampling1D/2D (nearest), Flatten, a Reshape to one axis or of size-1 positions,
Dropout, SpatialDropout1D/2D (or a Dropout with their ``noise_shape``, or one draw per sample), GaussianNoise and
GaussianDropout (added noise masked off the padded units again),
Activation, ReLU, LeakyReLU and ELU layers (any element-wise activation of ``keras.activations``, by Keras' own
function; one that is not zero at zero only on a Dense/Conv layer, whose padded units are masked after it), PReLU
layers of Dense/Conv units (their alpha trained), LayerNormalization over the channels (each candidate's own),
LSTM, GRU (either ``reset_after``) and SimpleRNN layers over a sequence (returning the last state or every step's,
forwards or backwards, without dropout or state kept between batches: :func:`_recurrent`),
element-wise merges (a residual Add; the padded channels are zero in every input, so in the result),
element-wise Keras ops written in the graph (``x + y``, ``x * 0.5``: Keras' op on the candidates' tensors, its
padded channels masked again) and Concatenates of Dense/Conv units (each input's channels padded to its own width,
side by side; a job's weights are placed there by :meth:`BatchedEvaluator._rows`), ending in the output layer, and
starting with any Rescaling, Normalization and Reshape layers (:attr:`_Plan.prefix`: the data goes through them
first, so flat features read as a sequence or an image train batched); the
losses, optimizers and regularizers :mod:`~keras_grs.evaluate.training` lists; trained by the default ``fit``
(EarlyStopping as the only callback, no HyperModel ``fit`` of its own), with ``val_accuracy`` (maximized),
``val_loss`` (minimized), the ``val_<name>`` of a ``keras.metrics.AUC`` the model is compiled with (maximized; its
counts over the whole validation split, :class:`~keras_grs.evaluate.training.Score`) or of a mean absolute, mean
squared or root mean squared error it is compiled with (minimized) as the objective. Anything
else falls back to :class:`KerasEvaluator`, said once in a warning and recorded per trial (the tuner writes
:meth:`BatchedEvaluator.supports`'s reason to ``evaluation.json``).
"""

from __future__ import annotations

import collections
import functools
import math
import os
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from keras_grs.evaluate.base import check_epoch_score
from keras_grs.evaluate.candidate import Candidate, measure, realized, template_of
from keras_grs.evaluate.keras import KerasEvaluator
from keras_grs.evaluate.philox import stateless_uniform
from keras_grs.evaluate.training import (
    Loss, Optimizer, Score, UnsupportedForBatching, check_weighting, penalty, read_loss, read_optimizer,
    read_regularizer, read_scores, sample_weights,
)
from keras_grs.checkpoint import CheckpointLayout, LayoutError
from keras_grs.files import save_weights, write_checkpoint
from keras_grs.search.engine import keyed_rng
from keras_grs.layers import RECURRENT, is_op, kind_of
from keras_grs.structure import BATCHED_GRAPH_LAYERS, MERGE_LAYERS, UnsupportedLayerError, analyze, layer_graph

# activations computed across a tensor's channels: with padded channels they would read the padding (a hidden layer's
# softmax), so a model using one is trained one fit per candidate
CHANNEL_MIXING = {"softmax", "log_softmax", "glu", "sparsemax"}
# element-wise activations that never decrease: a max pooling may come before them (_pooled_after)
MONOTONE = {"relu", "relu6", "linear", "tanh", "sigmoid", "elu", "selu", "leaky_relu", "softplus", "softsign",
            "hard_sigmoid", "hard_tanh", "celu", "log_sigmoid", "exponential"}
FIT_ARGUMENTS = {"epochs", "batch_size", "validation_data", "verbose", "callbacks", "shuffle", "class_weight",
                 "sample_weight"}
# what an EarlyStopping may watch here (and the objective's score, an AUC: training.read_scores), in "auto" mode
MONITORED = {"val_accuracy": "max", "val_loss": "min", "loss": "min"}
PATCH_BYTES = 256 * 2**20  # the most the first convolution's patches of a training set may take (_input_patches)
EPOCH_INDEX_BYTES = 64 * 2**20  # the most the batch orders of one call of the compiled fit may take (_train)
MAX_EPOCHS_PER_CALL = 64  # the most epochs one call of the compiled fit can run
CALL_SECONDS = 1.0  # about how long one call of the compiled fit lasts: how soon a Ctrl-C is seen (_train)
WORKERS_VARIABLE = "KERAS_GRS_WORKERS"  # the default of BatchedEvaluator(workers=...) when set
# groups trained side by side by default, one core each (this machine's two; more groups than cores take turns)
DEFAULT_WORKERS = 2
SHARED_PROGRAMS = 8  # the compiled fits kept for later evaluators in this process, least recently used dropped
MIN_SLOTS = 1  # the fewest candidate slots a compiled fit has (see BatchedEvaluator._fix_slots)


@dataclass
class _Op:
    """One step of the computation. ``kind``: dense, conv, norm (a BatchNormalization of Dense/Conv units),
    depthwise (a DepthwiseConv of those units), pool, gpool, flatten, dropout, activation, pad, crop, upsample,
    merge (an element-wise merge layer: a residual ``Add``), op (an element-wise Keras op written in the graph) or
    concat (its inputs' channels side by side)."""

    kind: str
    activation: str = "linear"  # a name of keras.activations, or "logits" for the output layer
    window: tuple = ()  # conv kernel size, pool size or an upsampling's factors
    strides: tuple = ()
    padding: str = "valid"
    pooling: str = ""  # MAX/AVG
    rate: float = 0.0
    spatial: tuple = ()  # for a Dense after a Flatten: the spatial shape that was flattened
    bias: bool = True
    penalties: tuple = ()  # kernel (l1, l2), bias (l1, l2): the layer's regularizers
    epsilon: float = 0.0  # a norm's
    momentum: float = 0.0  # a norm's: of its moving mean and variance
    merge: str = ""  # a merge's: add, subtract, multiply, average, maximum or minimum
    inputs: tuple = (-1,)  # the ops whose outputs it takes (-1: the model's input); a chain's op n takes (n - 1,)
    # its input's last axis: the Dense/Conv ops (their index among them; -1: the model's input channels) whose units
    # sit there side by side, each padded to its width (several after a Concatenate)
    channels: tuple = (-1,)
    margins: tuple = ()  # a pad's or crop's: (before, after) per spatial axis
    keepdims: bool = False  # a gpool's: keeps the spatial axes (as ones), as in a squeeze-and-excitation block
    # an element-wise Keras op's ("op"): its class, arguments (each tensor as its index among the op's inputs) and
    # configuration, as text; and the op with its arguments to call (not part of the key: ops of one class, arguments
    # and configuration compute alike)
    arguments: tuple = ()
    operation: object = field(default=None, compare=False)
    activation_args: tuple = ()  # the activation's keyword arguments as (name, value) pairs (a ReLU's max_value)
    whole_channels: bool = False  # a dropout's: drops a sample's channel at every position (SpatialDropout)
    whole_samples: bool = False  # a dropout's: drops a sample's every value (stochastic depth)
    noise: str = ""  # a noise op's: additive (GaussianNoise) or multiplicative (GaussianDropout)
    dilation: tuple = ()  # a conv's dilation rate per spatial axis (empty: 1 on each)
    # a recurrent op's: its cell (lstm, gru or simple), the gates' activation, a GRU's reset_after, whether it
    # returns every step's state or the last one, whether it reads the steps backwards, its recurrent kernel's
    # regularizer (l1, l2)
    cell: str = ""
    recurrent_activation: str = ""
    reset_after: bool = False
    sequences: bool = False
    backwards: bool = False
    recurrent_penalties: tuple = ()
    # a recurrent op's dropout: ``rate`` of its inputs, ``recurrent_rate`` of its state, each mask drawn once per
    # sequence, one per gate (``dropout_masks``) or one for all
    recurrent_rate: float = 0.0
    dropout_masks: int = 1

    @property
    def weighted(self):
        """An op with a kernel, a bias and units of its own: the width groups' (Dense, Conv, recurrent)."""
        return self.kind in ("dense", "conv", "recurrent")

    @property
    def projection(self):
        """A Dense/Conv op: one product, then its bias and activation (which may be fused or pooled after)."""
        return self.kind in ("dense", "conv")

    @property
    def gates(self):
        """A recurrent op's blocks of units in its kernel's columns (Keras' order: i, f, c, o; z, r, h)."""
        return {"lstm": 4, "gru": 3}.get(self.cell, 1)

    def key(self):
        return (self.kind, self.activation, self.activation_args, self.window, self.strides, self.padding,
                self.pooling, self.rate, self.spatial, self.bias, self.penalties, self.epsilon, self.momentum,
                self.merge, self.inputs, self.channels, self.margins, self.keepdims, self.arguments,
                self.whole_channels, self.whole_samples, self.noise, self.dilation, self.cell,
                self.recurrent_activation, self.reset_after, self.sequences, self.backwards, self.recurrent_penalties,
                self.recurrent_rate, self.dropout_masks)


@dataclass(frozen=True)
class _Problem:
    """The shape of one fit, which a compiled program is built for (with the plan)."""

    k: int  # candidate slots
    widths: tuple  # the padded widths of the weighted layers
    input_shape: tuple
    n_batches: int
    batch: int
    shared: bool  # every candidate trains on the same batches (no shuffling), which the first layer exploits
    n_samples: int
    patched: bool  # the samples are the first convolution's patches (_input_patches)
    score: Score  # the objective: what each epoch's validation scores and the best epoch maximizes (or minimizes)
    reported: tuple  # the other AUC and error metrics the model is compiled with (Scores), recorded beside it
    epoch_score: str  # which epoch's weights are kept: best, best_latest or last
    capacity: int  # the most epochs one call runs


@dataclass(frozen=True)
class _FitInputs:
    """A fit's data as tensors (the samples or the first convolution's patches, labels, loss weights, each batch's
    size and its real rows), with its sample count, batches and input shape."""

    input_shape: tuple
    n_samples: int
    n_batches: int
    patched: bool
    samples: object
    y: object
    x_val: object
    y_val: object
    weights: object
    counts: object
    present: object

    @classmethod
    def make(cls, plan, fit_args, fit_kwargs, units, input_shape, batch, shuffle) -> _FitInputs:
        x = _preprocessed(plan.prefix, np.asarray(fit_args[0]).astype("float32").reshape(-1, *input_shape))
        y = plan.loss.labels(fit_args[1], units)
        x_val, y_val = fit_kwargs["validation_data"][:2]
        x_val = _preprocessed(plan.prefix, np.asarray(x_val).astype("float32").reshape(-1, *input_shape))
        input_shape = tuple(int(d) for d in x.shape[1:])  # what the first op reads (a Reshape may have changed it)
        y_val = plan.loss.labels(y_val, units)
        n_batches = math.ceil(len(x) / batch)
        # the first convolution's patches once for the whole fit (else the samples): each batch gathers its rows
        patches, val_patches = _input_patches(plan.ops, x), _input_patches(plan.ops, x_val)
        patched = patches is not None and val_patches is not None
        # per sample: its loss weight (class or sample weight; 0 for the padding of the last batch), and per
        # batch: how many real samples it has (Keras divides a batch's weighted sum by its size)
        weights = sample_weights(fit_args[1], fit_kwargs)
        real = (np.arange(n_batches * batch) < len(x)).reshape(n_batches, batch)  # False: the last batch's padding
        return cls(
            input_shape=input_shape, n_samples=len(x), n_batches=n_batches, patched=patched,
            samples=patches if patched else tf.constant(x), y=tf.constant(y),
            x_val=val_patches if patched else tf.constant(x_val), y_val=tf.constant(y_val),
            weights=tf.constant(np.ones(len(x), "float32") if weights is None else weights),
            counts=tf.constant(np.minimum(batch, len(x) - batch * np.arange(n_batches)).astype("float32")),
            present=tf.constant((real[:, None, :] if shuffle else real).astype("float32")))


@dataclass(frozen=True)
class _FitData:
    """What every group of one batch trains with: the compiled fit, its problem and plan, and the data
    (:class:`_FitInputs`)."""

    problem: _Problem
    fit: object
    plan: object
    in_channels: int
    epochs: int
    shuffle: bool
    callbacks: tuple
    inputs: _FitInputs


CHANNEL_KINDS = ("norm", "depthwise", "prelu", "layernorm")  # ops with per-channel parameters, in _Offsets' order


@dataclass(frozen=True)
class _Offsets:
    """Where each op's parameters start in the program's list. In order: each Dense/Conv/recurrent layer's kernel
    and bias, each norm's gamma and beta, each depthwise op's kernel and bias, each PReLU's alpha, each layer
    norm's gamma and beta, each recurrent op's recurrent kernel (all trained by the optimizer), then each norm's
    moving mean and variance (updated by the training steps): ``norms``, ``depthwise``, ``prelus``, ``layernorms``,
    ``recurrents`` and ``moving`` are the indices of the first of each part, ``moving`` also the count of trained
    parameters."""

    norms: int
    depthwise: int
    prelus: int
    layernorms: int
    recurrents: int
    moving: int

    @classmethod
    def of(cls, ops) -> _Offsets:
        norms = 2 * sum(op.weighted for op in ops)
        depthwise = norms + 2 * sum(op.kind == "norm" for op in ops)
        prelus = depthwise + 2 * sum(op.kind == "depthwise" for op in ops)
        layernorms = prelus + sum(op.kind == "prelu" for op in ops)
        recurrents = layernorms + 2 * sum(op.kind == "layernorm" for op in ops)
        return cls(norms, depthwise, prelus, layernorms, recurrents,
                   recurrents + sum(op.kind == "recurrent" for op in ops))


@dataclass(frozen=True)
class _Plan:
    """What one compiled program needs to know of a model: its ops (in topological order), its loss and its
    optimizer; ``names``, the layer of each op (not part of the program: models of other names share it); ``ties``,
    the Dense/Conv ops whose units a merge adds together (their padded widths must match); ``prefix``, the
    Rescaling, Normalization and Reshape layers the model starts with, which the data goes through once, before any
    training (not part of the program either: it takes their outputs)."""

    ops: tuple
    loss: Loss
    optimizer: Optimizer
    names: tuple = ()
    ties: tuple = ()
    prefix: tuple = ()  # the preprocessing layers at the model's input, applied to the data first (_preprocessed)

    def key(self):
        return tuple(op.key() for op in self.ops), self.loss, self.optimizer

    @property
    def offsets(self) -> _Offsets:
        return _Offsets.of(self.ops)


def _weighted(layer, name) -> dict:
    """Bias and regularizers of a Dense/Conv/recurrent layer, or UnsupportedForBatching for what the op cannot
    reproduce."""
    extras = [k for k in ("activity_regularizer", "kernel_constraint", "bias_constraint")
              if getattr(layer, k, None) is not None]
    if extras:
        raise UnsupportedForBatching(f"{name} with {', '.join(extras)}")
    return {"bias": layer.use_bias, "penalties": (*read_regularizer(layer.kernel_regularizer, f"{name} kernel_regularizer"),
                                                  *read_regularizer(layer.bias_regularizer, f"{name} bias_regularizer"))}


def _dense_op(layer, name, flattened):
    positions = len(layer.input.shape) - 2
    if positions:  # a Dense on a sequence or an image: each position's channels by the kernel, a 1x1 convolution
        return _Op("conv", layer.activation.__name__, (1,) * positions, (1,) * positions, "valid",
                   **_weighted(layer, name))
    return _Op("dense", layer.activation.__name__, spatial=flattened, **_weighted(layer, name))


def _recurrent_op(layer, name, flattened):
    """An LSTM, GRU or SimpleRNN layer over a sequence (batch, steps, features), returning the last state or every
    step's; what its cells do between steps that the op cannot reproduce (dropout, state kept across batches) is
    named."""
    cell = layer.cell
    if len(layer.input.shape) != 3:
        raise UnsupportedForBatching(f"{name} on inputs of shape {tuple(layer.input.shape[1:])}")
    _check_options(layer, name, stateful=(False,), return_state=(False,))
    rates = {k: float(getattr(cell, k, 0.0)) for k in ("dropout", "recurrent_dropout")}
    whole = [f"{k}={rate}" for k, rate in rates.items() if rate >= 1.0]
    if whole:  # Keras' LSTM and GRU then drop nothing, its SimpleRNN everything
        raise UnsupportedForBatching(f"{name} with {', '.join(whole)} (the batched path takes rates below 1)")
    weighted = _weighted(layer, name)  # the layer's bias, kernel and bias regularizers and constraints, as a Dense's
    if layer.recurrent_constraint is not None:
        raise UnsupportedForBatching(f"{name} with recurrent_constraint")
    kind = "lstm" if isinstance(layer, keras.layers.LSTM) else "gru" if isinstance(layer, keras.layers.GRU) else \
        "simple"
    gates = getattr(cell, "recurrent_activation", None)
    return _Op("recurrent", cell.activation.__name__, cell=kind, recurrent_activation=gates.__name__ if gates else "",
               reset_after=bool(getattr(cell, "reset_after", False)), sequences=bool(layer.return_sequences),
               backwards=bool(layer.go_backwards),
               recurrent_penalties=read_regularizer(layer.recurrent_regularizer, f"{name} recurrent_regularizer"),
               rate=rates["dropout"], recurrent_rate=rates["recurrent_dropout"],
               # Keras' implementation 1 of an LSTM or GRU cell (which a recurrent dropout selects) draws one mask per
               # gate, for the inputs and for the state; implementation 2 and a SimpleRNN one for all
               dropout_masks=int(getattr(cell, "dropout_mask_count", None) or 1), **weighted)


def _check_options(layer, name, **allowed) -> None:
    """Raise UnsupportedForBatching naming each option of ``layer`` whose value is not among ``allowed``'s."""
    wrong = [f"{option}={getattr(layer, option)!r}" for option, values in allowed.items()
             if getattr(layer, option, values[0]) not in values]
    if wrong:
        wanted = "; ".join(f"{option} {' or '.join(map(repr, values))}" for option, values in allowed.items())
        raise UnsupportedForBatching(f"{name} with {', '.join(wrong)} (the batched path takes {wanted})")


CHANNELS_LAST = {"data_format": ("channels_last",)}


def _conv_op(layer, name, flattened):
    padding = ("valid", "same", "causal") if isinstance(layer, keras.layers.Conv1D) else ("valid", "same")
    _check_options(layer, name, **CHANNELS_LAST, groups=(1,), padding=padding)
    dilation = tuple(int(d) for d in layer.dilation_rate)
    return _Op("conv", layer.activation.__name__, tuple(layer.kernel_size), tuple(layer.strides), layer.padding,
               dilation=dilation if any(d != 1 for d in dilation) else (), **_weighted(layer, name))


def _pooling(layer) -> str:
    return "MAX" if "Max" in type(layer).__name__ else "AVG"


def _pool_op(layer, name, flattened):
    _check_options(layer, name, **CHANNELS_LAST, padding=("valid", "same"))
    return _Op("pool", window=tuple(layer.pool_size), strides=tuple(layer.strides), padding=layer.padding.upper(),
               pooling=_pooling(layer))


def _global_pool_op(layer, name, flattened):
    _check_options(layer, name, **CHANNELS_LAST)
    return _Op("gpool", pooling=_pooling(layer), keepdims=bool(layer.keepdims))


def _margins_op(layer, name, flattened):
    """A ZeroPadding or Cropping layer: its (before, after) per spatial axis."""
    _check_options(layer, name, **CHANNELS_LAST)
    margins = layer.padding if kind_of(layer).batched == "pad" else layer.cropping
    margins = (margins,) if isinstance(margins[0], int) else margins  # a 1-D layer's one pair
    return _Op(kind_of(layer).batched, margins=tuple((int(a), int(b)) for a, b in margins))


def _upsample_op(layer, name, flattened):
    """An UpSampling layer: each position repeated ``size`` times along its axis (nearest neighbour)."""
    _check_options(layer, name, **CHANNELS_LAST, interpolation=("nearest",))
    size = layer.size if isinstance(layer.size, (tuple, list)) else (layer.size,)
    return _Op("upsample", window=tuple(int(s) for s in size))


def _norm_op(layer, name, flattened):
    _check_options(layer, name, axis=(-1, len(layer.input.shape) - 1), center=(True,), scale=(True,),
                   renorm=(False,), trainable=(True,))
    extras = [k for k in ("beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint")
              if getattr(layer, k, None) is not None]
    if extras:
        raise UnsupportedForBatching(f"{name} with {', '.join(extras)}")
    return _Op("norm", epsilon=float(layer.epsilon), momentum=float(layer.momentum))


def _prelu_op(layer, name, flattened):
    """A PReLU: ``max(x, 0) - alpha * max(-x, 0)``, its alpha (one per channel, or per position and channel) trained
    with the model's; ``window`` holds alpha's shape before its channel axis."""
    extras = [k for k in ("alpha_regularizer", "alpha_constraint") if getattr(layer, k, None) is not None]
    if extras:
        raise UnsupportedForBatching(f"{name} with {', '.join(extras)}")
    rank = len(layer.input.shape)
    if layer.shared_axes is not None and any(a % rank == rank - 1 for a in layer.shared_axes):
        raise UnsupportedForBatching(f"{name} with one alpha shared by every channel (shared_axes={layer.shared_axes})")
    return _Op("prelu", window=tuple(int(d) for d in layer.alpha.shape[:-1]))


def _layernorm_op(layer, name, flattened):
    """A LayerNormalization over the channel axis, with its gamma and beta (Keras' defaults): normalised over each
    candidate's own channels, the padded ones left out (:func:`_layer_normalize`)."""
    _check_options(layer, name, axis=(-1, len(layer.input.shape) - 1, [-1], [len(layer.input.shape) - 1]),
                   center=(True,), scale=(True,), rms_scaling=(False,), trainable=(True,))
    extras = [k for k in ("beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint")
              if getattr(layer, k, None) is not None]
    if extras:
        raise UnsupportedForBatching(f"{name} with {', '.join(extras)}")
    if flattened:
        raise UnsupportedForBatching(f"{name} of flattened units (the batched path normalises over channels)")
    return _Op("layernorm", epsilon=float(layer.epsilon))


def _check_depthwise(layer, name, constraints) -> None:
    """What a DepthwiseConv or SeparableConv may have for its depthwise part to be an op: UnsupportedForBatching
    naming the rest."""
    _check_options(layer, name, **CHANNELS_LAST, depth_multiplier=(1,),
                   dilation_rate=((1,) * len(layer.kernel_size),), padding=("valid", "same"))
    extras = [k for k in ("activity_regularizer", *constraints) if getattr(layer, k, None) is not None]
    if extras:
        raise UnsupportedForBatching(f"{name} with {', '.join(extras)}")


def _depthwise_op(layer, name, flattened):
    _check_depthwise(layer, name, ("depthwise_constraint", "bias_constraint"))
    penalties = (*read_regularizer(layer.depthwise_regularizer, f"{name} depthwise_regularizer"),
                 *read_regularizer(layer.bias_regularizer, f"{name} bias_regularizer"))
    return _Op("depthwise", layer.activation.__name__, tuple(layer.kernel_size), tuple(layer.strides), layer.padding,
               bias=layer.use_bias, penalties=penalties)


def _separable_ops(layer, name, flattened):
    """A SeparableConv as two ops: its depthwise part (no bias, no activation), then its pointwise part as a 1x1
    Conv op with the layer's bias and activation."""
    _check_depthwise(layer, name, ("depthwise_constraint", "pointwise_constraint", "bias_constraint"))
    depthwise = _Op("depthwise", window=tuple(layer.kernel_size), strides=tuple(layer.strides), padding=layer.padding,
                    bias=False, penalties=(*read_regularizer(layer.depthwise_regularizer,
                                                             f"{name} depthwise_regularizer"), 0.0, 0.0))
    ones = (1,) * len(layer.kernel_size)
    pointwise = _Op("conv", layer.activation.__name__, ones, ones, "valid", bias=layer.use_bias,
                    penalties=(*read_regularizer(layer.pointwise_regularizer, f"{name} pointwise_regularizer"),
                               *read_regularizer(layer.bias_regularizer, f"{name} bias_regularizer")))
    return depthwise, pointwise


def _noise_op(layer, name, flattened):
    """GaussianNoise (``rate``: its stddev, added) or GaussianDropout (``rate``: its rate, a factor of mean 1)."""
    if isinstance(layer, keras.layers.GaussianNoise):
        return _Op("noise", rate=float(layer.stddev), noise="additive")
    return _Op("noise", rate=float(layer.rate), noise="multiplicative")


def _input_op(layer, name, flattened):
    raise UnsupportedForBatching(f"{name} other than at the model's input (the batched path passes the data through "
                                 "the preprocessing layers the model starts with, once)")


def _unit_reshape(layer) -> _Op | None:
    """The op of a Reshape or Flatten that only adds or removes positions of size 1, the channels staying last
    (``(1, 1, C)`` to ``(C,)``: keras.applications' MobileNet head; ``(C,)`` to ``(1, 1, C)``: a squeeze-and-excitation
    block's), or None."""
    source, target = tuple(layer.input.shape[1:]), tuple(layer.output.shape[1:])
    if math.prod(source[:-1]) == 1 and math.prod(target[:-1]) == 1 and source[-1] == target[-1]:
        return _Op("reshape", window=tuple(int(d) for d in target[:-1]))
    return None


def _reshape_op(layer, name, flattened):
    unit = _unit_reshape(layer)
    if unit is not None:
        return unit
    if len(layer.target_shape) == 1:  # to one axis: the positions and channels in Flatten's order
        return _Op("flatten")
    raise UnsupportedForBatching(f"{name} to {tuple(layer.target_shape)} other than at the model's input (the batched "
                                 "path reshapes the data before training; between layers only to one axis, as a "
                                 "Flatten, or adding or removing positions of size 1)")


def _flatten_op(layer, name, flattened):
    return _unit_reshape(layer) or _Op("flatten")


def _dropout_op(layer, name, flattened):
    if isinstance(layer, (keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D)):
        _check_options(layer, name, **CHANNELS_LAST)
        return _Op("dropout", rate=float(layer.rate), whole_channels=True)
    if layer.noise_shape is None:
        return _Op("dropout", rate=float(layer.rate))
    # a noise_shape: the whole mask (None or the input's size on every axis), one draw per sample and channel
    # broadcast over the positions (None, 1, ..., channels), which is what a SpatialDropout draws, or one draw per
    # sample (None, 1, ..., 1): the stochastic depth (drop connect) of EfficientNet's and ConvNeXt's residual blocks
    shape, dims = tuple(layer.noise_shape), tuple(layer.input.shape)
    full = [n is None or (d is not None and n == d) for n, d in zip(shape, dims)]
    if len(shape) == len(dims) and shape[0] is None:
        if all(full):
            return _Op("dropout", rate=float(layer.rate))
        if full[-1] and all(n == 1 for n in shape[1:-1]):
            return _Op("dropout", rate=float(layer.rate), whole_channels=True)
        if all(n == 1 for n in shape[1:]):
            return _Op("dropout", rate=float(layer.rate), whole_samples=True)
    raise UnsupportedForBatching(f"{name} with noise_shape={shape} (the batched path takes the whole mask, one draw "
                                 "per sample and channel: (None, 1, ..., channels), or one per sample: (None, 1, "
                                 "..., 1))")


def _activation_op(layer, name, flattened):
    if isinstance(layer, keras.layers.ReLU):
        maximum = None if layer.max_value is None else float(layer.max_value)
        arguments = (("negative_slope", float(layer.negative_slope)), ("max_value", maximum),
                     ("threshold", float(layer.threshold)))
        return _Op("activation", "relu", activation_args=arguments)
    if isinstance(layer, keras.layers.LeakyReLU):
        return _Op("activation", "leaky_relu", activation_args=(("negative_slope", float(layer.negative_slope)),))
    if isinstance(layer, keras.layers.ELU):
        return _Op("activation", "elu", activation_args=(("alpha", float(layer.alpha)),))
    return _Op("activation", layer.activation.__name__)


def _activate(op, x):
    """``op``'s activation of ``x``: Keras' own function, so that the batched path computes what the layer does."""
    if op.activation == "linear":
        return x
    return keras.activations.get(op.activation)(x, **dict(op.activation_args))


def _zero_at_zero(op) -> bool:
    """Whether ``op``'s activation keeps a masked (zero) unit zero."""
    return float(np.asarray(_activate(op, tf.zeros((1,))))[0]) == 0.0


def _monotone(op) -> bool:
    """Whether ``op``'s activation never decreases."""
    args = dict(op.activation_args)
    return op.activation in MONOTONE and args.get("negative_slope", 0.0) >= 0 and args.get("alpha", 1.0) >= 0


def _is_weighted(layer) -> bool:
    return kind_of(layer).batched in ("dense", "conv", "separable", "recurrent")


# the op of each batched kind of keras_grs.layers' table (Kind.batched)
_OP_BUILDERS = {"dense": _dense_op, "conv": _conv_op, "norm": _norm_op, "depthwise": _depthwise_op, "pool": _pool_op,
                "gpool": _global_pool_op, "flatten": _flatten_op, "dropout": _dropout_op,
                "activation": _activation_op, "pad": _margins_op, "crop": _margins_op, "separable": _separable_ops,
                "input": _input_op, "reshape": _reshape_op, "prelu": _prelu_op,
                "layernorm": _layernorm_op, "noise": _noise_op, "upsample": _upsample_op,
                "recurrent": _recurrent_op}
MERGES = {"add": tf.add, "subtract": tf.subtract, "multiply": tf.multiply, "maximum": tf.maximum,
          "minimum": tf.minimum}  # and average; each keeps the padded channels (zero in every input) zero


def _keras_op(operation, node) -> _Op:
    """An element-wise Keras op of the graph (``x + y``, ``keras.ops.relu6(x + 3)``): called as recorded, its
    tensors replaced."""
    tensors = {id(t): i for i, t in enumerate(node.input_tensors)}

    def placeholder(value):
        return ("tensor", tensors[id(value)]) if isinstance(value, keras.KerasTensor) else value

    # an element-wise op's arguments are its tensors and scalars (keras_grs.layers: _pins_op), none nested
    arguments = (tuple(placeholder(a) for a in node.arguments.args),
                 {key: placeholder(v) for key, v in node.arguments.kwargs.items()})
    try:
        config = {k: v for k, v in operation.get_config().items() if k != "name"}
    except Exception as error:  # an op whose configuration cannot be read cannot be told from another
        raise UnsupportedForBatching(f"op {operation.name!r} ({type(operation).__name__}): {error}") from None
    return _Op("op", arguments=(type(operation).__name__, repr(arguments), repr(sorted(config.items()))),
               operation=(operation, arguments))


def _op_of(layer, name, spread, node=None) -> _Op:
    if is_op(layer):
        return _keras_op(layer, node)
    if isinstance(layer, MERGE_LAYERS):
        return _Op("merge", merge=type(layer).__name__.lower())
    if isinstance(layer, keras.layers.Concatenate):
        if layer.axis not in (-1, len(layer.output.shape) - 1):
            raise UnsupportedForBatching(f"{name} of axis {layer.axis} (the batched path joins channels, the last "
                                         "axis)")
        return _Op("concat")
    build = _OP_BUILDERS.get(kind_of(layer).batched)
    if build is None:
        raise UnsupportedForBatching(f"layer {type(layer).__name__}")
    return build(layer, name, spread)


def _plan(model) -> _Plan:
    """The model as a :class:`_Plan`, or raise UnsupportedForBatching naming what is not supported."""
    if not model.compiled:
        raise UnsupportedForBatching("the model is not compiled")
    optimizer = read_optimizer(model.optimizer)
    try:
        graph = layer_graph(model, BATCHED_GRAPH_LAYERS, ops=True)
    except UnsupportedLayerError as error:  # a layer it has no op for, a shared layer, several inputs or outputs
        raise UnsupportedForBatching(str(error)) from None
    readers = collections.Counter(j for _, inputs, _ in graph for j in inputs)
    ops, names, ties = [], [], []
    # per op (-1: the model's input), what its output is: the op it is (a fused activation is its Dense/Conv op),
    # its channels, the positions a Flatten spread over them (for the Dense that reads them) and whether its last
    # axis holds Dense/Conv units
    op_of, channels, spread, units = {-1: -1}, {-1: (-1,)}, {-1: ()}, {-1: False}
    n_weighted = 0
    prefix = []
    for i, (layer, inputs, node) in enumerate(graph):
        name = f"{type(layer).__name__} {layer.name!r}"
        if (not is_op(layer) and kind_of(layer).batched in ("input", "reshape") and len(prefix) == i
                and readers[inputs[0]] == 1):
            # a preprocessing layer or Reshape the model starts with: fixed (nothing in it trains, nothing is
            # pruned), so applied to the data once; anywhere else, _input_op and _reshape_op refuse it
            prefix.append(layer)
            op_of[i] = -1
            continue
        sources = tuple(op_of[j] for j in inputs)
        first = sources[0]
        op = _op_of(layer, name, spread[first], node)
        channelwise = isinstance(op, tuple) or op.kind in ("norm", "depthwise", "prelu")  # of Dense/Conv units
        if channelwise and (not units[first] or -1 in channels[first]):
            raise UnsupportedForBatching(f"{name} not after a Dense or Conv layer (only pooling, dropout, "
                                         "activations, merges and channel-wise layers may come between)")
        if isinstance(op, tuple):  # a SeparableConv: its depthwise op first, then its pointwise op reads it
            depthwise, op = op
            depthwise.inputs, depthwise.channels = sources, channels[first]
            d = len(ops)
            ops.append(depthwise)
            names.append(layer.name)
            channels[d], spread[d], units[d] = channels[first], (), True
            sources, first = (d,), d
        op.inputs, op.channels = sources, channels[first]
        if (op.kind == "op" or op.noise == "additive") and spread[first] and -1 not in channels[first]:
            raise UnsupportedForBatching(f"{'op ' * (op.kind == 'op')}{name} on flattened units (the batched path "
                                         "masks its padded channels again, which it can only do before a Flatten)")
        if op.kind in ("merge", "op"):
            if len({(len(channels[s]), spread[s]) for s in sources}) != 1:
                raise UnsupportedForBatching(f"{name} of inputs whose channels come from different layouts")
            ties += [tuple(sorted({channels[s][c] for s in sources} - {-1})) for c in range(len(op.channels))]
        if op.kind == "concat":
            if not all(units[s] and not spread[s] and -1 not in channels[s] for s in sources):
                raise UnsupportedForBatching(f"{name} of other than Dense/Conv units (the batched path concatenates "
                                             "the channels of Dense and Conv layers)")
            op.channels = sum((channels[s] for s in sources), ())
        if (op.kind == "activation" and first >= 0 and ops[first].projection and ops[first].activation == "linear"
                and readers[inputs[0]] == 1):
            # fused, so that masked units stay exactly zero
            ops[first].activation, ops[first].activation_args = op.activation, op.activation_args
            op_of[i] = first
            continue
        n = op_of[i] = len(ops)
        channels[n] = (n_weighted,) if op.weighted else op.channels
        spread[n] = tuple(int(d) for d in layer.input.shape[1:-1]) if op.kind == "flatten" else \
            () if op.kind in ("dense", "concat", "recurrent") else spread[first]
        units[n] = op.weighted or op.kind == "concat" or (all(units[s] for s in sources) and op.kind != "flatten")
        n_weighted += op.weighted
        ops.append(op)
        names.append(layer.name)
    if op_of[len(graph) - 1] == len(ops) - 1:
        _fold_output_tail(ops, names)
        op_of[len(graph) - 1] = len(ops) - 1
    last = len(ops) - 1
    if not ops[last].projection or op_of[len(graph) - 1] != last:
        raise UnsupportedForBatching("output: needs a Dense or Conv layer (with its activation) last")
    positions = tuple(model.outputs[0].shape[1:-1])
    if math.prod(positions) != 1:
        raise UnsupportedForBatching(f"output of shape {tuple(model.outputs[0].shape[1:])} (the batched path scores "
                                     "one output vector per sample)")
    loss = read_loss(model, ops[last].activation)
    if loss.on_outputs and ops[last].activation_args:
        raise UnsupportedForBatching(f"loss {loss.name} on an output activation with options "
                                     f"({dict(ops[last].activation_args)})")
    if loss.on_outputs and ops[last].activation in CHANNEL_MIXING - {"softmax"}:
        raise UnsupportedForBatching(f"loss {loss.name} on a {ops[last].activation} output")
    ops[last].activation = "logits"
    for op in ops[:last]:
        if op.weighted or op.kind in ("activation", "depthwise"):
            for activation in filter(None, (op.activation, op.recurrent_activation)):
                try:
                    keras.activations.get(activation)
                except ValueError:
                    raise UnsupportedForBatching(f"activation {activation!r} (not one of keras.activations)") from None
                if activation in CHANNEL_MIXING:
                    raise UnsupportedForBatching(f"activation {activation!r} on a hidden layer (it mixes channels)")
            # a Dense/Conv/depthwise op masks its units after its activation; a standalone activation must keep
            # the masked (zero) units zero
            if op.kind == "activation" and not _zero_at_zero(op):
                raise UnsupportedForBatching(f"activation {op.activation!r} as a layer of its own (it is not zero at "
                                             "zero, so padded units would not stay zero)")
    return _Plan(tuple(ops), loss, optimizer, tuple(names), tuple(tie for tie in set(ties) if len(tie) > 1),
                 tuple(prefix))


def _fold_output_tail(ops, names) -> None:
    """Fold the Reshapes of size-1 positions and the activation that end a model after its last Dense/Conv op into
    that op (keras.applications' MobileNet ends in a 1x1 Conv, ``Reshape((classes,))`` and a softmax): the
    activation becomes the op's (when it has none of its own), and the forward's output drops the positions of size
    1. Only a chain each of whose ops is the only reader of the one before; anything else is left as it is."""
    tail = len(ops)
    while (tail > 1 and ops[tail - 1].kind in ("reshape", "activation") and ops[tail - 1].inputs == (tail - 2,)
           and sum(tail - 2 in op.inputs for op in ops) == 1):
        tail -= 1
    if tail == len(ops) or not ops[tail - 1].projection:
        return
    activations = [op for op in ops[tail:] if op.kind == "activation"]
    if len(activations) > 1 or (activations and ops[tail - 1].activation != "linear"):
        return
    if activations:
        ops[tail - 1].activation = activations[0].activation
        ops[tail - 1].activation_args = activations[0].activation_args
    del ops[tail:], names[tail:]


def _preprocessed(prefix, x):
    """``x`` through the model's preprocessing layers (:attr:`_Plan.prefix`), computed by the layers themselves."""
    for layer in prefix:
        x = np.asarray(layer(x), dtype="float32")
    return x


def _signature(plan, model):
    return plan.key(), tuple(int(d) for d in model.input_shape[1:])


def _kernel_prefix(op):
    """The kernel's leading dimensions before its (input channels, output channels)."""
    return op.window if op.kind == "conv" else op.spatial


class BatchedEvaluator:
    """Train all jobs of a batch together (see the module docstring); fall back to the keras evaluator otherwise.

    Args:
        objective: a keras-tuner Objective (``val_accuracy``).
        hypermodel: the tuner's HyperModel; one with its own ``fit`` is trained by the keras evaluator.
        executions_per_trial: more than 1 is handled by the keras evaluator.
        seed: seed of shuffling and dropout. Each candidate draws its own batch order and dropout masks from
            (seed, its :attr:`Job.key`), and the masks of its units do not depend on the padding, so a candidate
            trains the same in any batch, in any slot, in a fresh process or late in a long one: a run killed and
            resumed takes its uninterrupted twin's decisions.
        workers: how many groups of candidates train at once, each in its own thread (default: the environment
            variable ``KERAS_GRS_WORKERS``, else 2, or 1 on one core). A batch is cut into groups of a fixed number
            of slots (:meth:`_fix_slots`), trained side by side: one compiled fit keeps about one core busy. More
            workers than cores take turns. XLA rounds a convolution's products a little differently for another
            number of slots (a Dense layer's between one and more): a search repeats bit for bit with the same
            ``workers``.
    """

    def __init__(self, objective, hypermodel=None, executions_per_trial=1, seed=0, epoch_score="best", workers=None):
        self.objective = objective
        self.hypermodel = hypermodel
        self.executions_per_trial = executions_per_trial
        self.epoch_score = check_epoch_score(epoch_score)
        self.fallback = KerasEvaluator(objective, hypermodel, executions_per_trial, epoch_score=epoch_score)
        self.seed = seed
        self.workers = check_workers(workers)
        self._warned = False
        self._calls = 0
        self._capacity = None  # the widths the stacked weights are padded to
        self._slots = 0  # the candidates one compiled fit trains, fixed once (see _fix_slots)
        self._compiled = {}
        self._epochs_per_call = {}  # _Problem -> the epochs a call ran in about CALL_SECONDS last time
        self._layouts = {}  # topology -> CheckpointLayout (None: Keras saves those models itself)
        self._plans = weakref.WeakKeyDictionary()  # template -> its _Plan, while the template lives: see _plan_of
        self._scores = weakref.WeakKeyDictionary()  # template -> (objective's Score, the Scores reported)

    batches = True  # the tuner hands it every pending trial at once
    takes_candidates = True  # trains a keras_grs.evaluate.candidate.Candidate without building its model
    # a files.BackgroundWriter that finishes the checkpoints (fsync, rename, digest) off the training path; its
    # owner joins it before reporting the trials complete. None: each checkpoint is whole when evaluate returns.
    writer = None
    arrays_checkpoints = True  # False: every checkpoint by Keras' save_weights (the benchmark's "before")

    def pad_to(self, model) -> None:
        """Pad every batch to at least ``model``'s widths (the search's initial model): its candidates are never
        wider, so every batch of the search has the same padded shape. The padding changes the order in which a
        layer's sums are rounded; padded to what the process happened to train before, a candidate would train
        (very slightly) differently in a resumed process than in an uninterrupted one. A model it cannot batch is
        ignored (the keras evaluator trains those)."""
        try:
            graph = layer_graph(model, BATCHED_GRAPH_LAYERS, ops=True)
        except UnsupportedLayerError:
            return
        widths = [int(layer.output.shape[-1]) for layer, _, _ in graph if _is_weighted(layer)]
        if self._capacity is not None and len(self._capacity) == len(widths):
            widths = [max(a, b) for a, b in zip(widths, self._capacity)]
        self._capacity = widths
        # a GRS step: a candidate per width group the search shrinks: of a chain, every layer but the output; a
        # graph's merges join layers into one group
        chain = all(inputs == (i - 1,) for i, (_, inputs, _) in enumerate(graph))
        self._fix_slots(len(widths) - 1 if chain else max(1, len(analyze(model).groups)))

    def _fix_slots(self, candidates) -> None:
        """Fix, once, the number of candidates a compiled fit trains: ``candidates`` (a step of the search) shared
        by the workers. Batches are cut into groups of that many slots and never change it: XLA rounds a product
        slightly differently for another number of slots (a convolution's for any other, a Dense layer's between
        one slot and more, see :func:`_matmul`), and with the slots fixed a candidate trains alike in any batch and
        in a resumed process (the twin guarantee above). A model with one or two width groups (with two workers)
        trains one candidate a slot: a step is one group per candidate, each on its own core, with no padding slot
        (a GRU's step 1.7x, a two-layer LSTM's 1.9x faster than two slots)."""
        if not self._slots:
            self._slots = max(MIN_SLOTS, math.ceil(candidates / self.workers))

    def supports(self, jobs, fit_kwargs):
        """Why these jobs cannot be trained together (a string), or None when they can."""
        try:
            self._check(jobs, fit_kwargs)
        except (UnsupportedForBatching, TypeError) as reason:
            return str(reason)
        return None

    def _check(self, jobs, fit_kwargs):
        """The jobs' plan, the objective's :class:`Score` and the other validation scores to record
        (:func:`~keras_grs.evaluate.training.read_scores`), or UnsupportedForBatching naming why not."""
        if not self.objective.name.startswith("val_"):
            raise UnsupportedForBatching(f"objective {self.objective.name} ({self.objective.direction})")
        if self.executions_per_trial != 1:
            raise UnsupportedForBatching("executions_per_trial > 1")
        if self.hypermodel is not None and type(self.hypermodel).fit is not keras_tuner.HyperModel.fit:
            raise UnsupportedForBatching("the HyperModel has its own fit()")
        extra = sorted(name for name in set(fit_kwargs) - FIT_ARGUMENTS if fit_kwargs[name] is not None)
        if extra:
            raise UnsupportedForBatching(f"fit arguments {extra}")
        validation = fit_kwargs.get("validation_data")
        if validation is not None and len(validation) > 2 and validation[2] is not None:
            raise UnsupportedForBatching("validation sample weights")
        check_weighting(fit_kwargs)
        # a candidate's layers are its parent's: the candidates of one step share one template, read once
        templates = {id(template_of(job.model)): template_of(job.model) for job in jobs}
        plans = [(self._plan_of(template), template) for template in templates.values()]
        if len({_signature(plan, template) for plan, template in plans}) != 1:
            raise UnsupportedForBatching("jobs differ")
        plan, template = plans[0]
        if plan.optimizer.ema and self.epoch_score == "last":  # the last epoch's checkpoint is the moving average
            raise UnsupportedForBatching("an optimizer with use_ema and epoch_score='last'")
        if template not in self._scores:  # read once per template, as its plan
            self._scores[template] = read_scores(template, self.objective, plan.loss, int(template.output_shape[-1]))
        score, reported = self._scores[template]
        others = [c for c in fit_kwargs.get("callbacks") or () if not _batchable_early_stopping(c, score, reported)]
        if others:
            names = sorted({type(callback).__name__ for callback in others})
            raise UnsupportedForBatching(f"callbacks {names}")
        return plan, score, reported

    def _plan_of(self, template) -> _Plan:
        """The template's plan, read once per template (a step's ``supports`` and ``evaluate`` both ask, and a
        structure is the template of every step until the next one is accepted); forgotten with the template."""
        if template not in self._plans:
            self._plans[template] = _plan(template)
        return self._plans[template]

    def evaluate(self, jobs, fit_args, fit_kwargs):
        if not all(job.train for job in jobs):
            return self._fall_back(jobs, fit_args, fit_kwargs)
        try:
            plan, score, reported = self._check(jobs, fit_kwargs)
            units = int(template_of(jobs[0].model).output_shape[-1])
            for labels in (fit_args[1], (fit_kwargs.get("validation_data") or (None, None))[1]):
                if labels is not None:  # labels the loss cannot read alike in every batch (a hinge's 0, -1, 1)
                    plan.loss.labels(labels, units)
        except (UnsupportedForBatching, TypeError) as reason:
            if not self._warned:
                warnings.warn(f"one fit per trial instead of batched evaluation: {reason}",
                              stacklevel=2)
                self._warned = True
            return self._fall_back(jobs, fit_args, fit_kwargs)
        self._calls += 1
        return self._train(jobs, plan, score, reported, fit_args, fit_kwargs)

    def _fall_back(self, jobs, fit_args, fit_kwargs):
        for job in jobs:  # the keras evaluator fits Keras models
            job.model = realized(job.model)
        return self.fallback.evaluate(jobs, fit_args, fit_kwargs)

    # -------------------------------------------------------------------------------------------------------
    def _widen(self, jobs) -> list:
        """Grow the padded widths to the jobs' (they never shrink; the Dense/Conv layers a merge adds together are
        padded alike) and fix the slots if not yet; per job, its model and its layers' (layer, arrays) by op
        (:func:`_layer_arrays`)."""
        per_job = [(job.model, _layer_arrays(job.model, self._plan_of(template_of(job.model)))) for job in jobs]
        widths = np.max([_widths(arrays) for _, arrays in per_job], axis=0)
        capacity = [max(a, b) for a, b in zip(widths, self._capacity or widths)]
        for tie in self._plan_of(template_of(jobs[0].model)).ties:
            for i in tie:
                capacity[i] = max(capacity[t] for t in tie)
        self._capacity = [int(c) for c in capacity]
        self._fix_slots(len(jobs))
        return per_job

    def _rows(self, channels, widths, in_channels):
        """Where a job's channels sit in the padded ones: (the padded count, the index of each of the job's)
        for ``channels`` as :attr:`_Op.channels` gives them, the job's Dense/Conv ``widths``."""
        rows, start = [], 0
        for source in channels:
            n, padded = (in_channels, in_channels) if source < 0 else (widths[source], self._capacity[source])
            rows.append(start + np.arange(n))
            start += padded
        return start, np.concatenate(rows)

    def _pack(self, per_job, plan, in_channels):
        """Stack the weights of a group's jobs (``per_job`` of :meth:`_widen`, at most ``self._slots``) at the padded
        widths: per weighted layer a (slots, inputs, outputs) kernel, a (slots, outputs) bias and a (slots, outputs)
        mask of the units each job has (a recurrent layer's: :meth:`_stack_recurrent`); per norm its gamma and beta,
        per depthwise op its (slots, *window, units) kernel and (slots, units) bias, per recurrent layer its
        recurrent kernel, then per norm its moving mean and variance, each (slots, units); zero for the padding
        (:class:`_Offsets`). A job's input channels sit where :meth:`_rows` puts them (the first ones of each layer
        they come from)."""
        capacity, k = self._capacity, self._slots
        widths = [_widths(arrays) for _, arrays in per_job]
        params, masks, recurrents = [], [], []
        for i, op in enumerate(op for op in plan.ops if op.weighted):
            prefix, n_out = _kernel_prefix(op), capacity[i]
            n_in = self._rows(op.channels, widths[0], in_channels)[0]
            own = np.zeros(k, int)  # each job's units (an empty slot has none)
            own[: len(widths)] = [w[i] for w in widths]
            masks.append(tf.constant((np.arange(n_out)[None] < own[:, None]).astype("float32")))
            if op.kind == "recurrent":
                kernel, recurrent, bias = self._stack_recurrent(per_job, i, op, widths, in_channels, n_in)
                params += [tf.constant(kernel), tf.constant(bias)]
                recurrents.append(tf.constant(recurrent))
                continue
            kernel = np.zeros((k, *prefix, n_in, n_out), "float32")
            bias = np.zeros((k, n_out), "float32")
            for j, (_, arrays) in enumerate(per_job):
                w, *b = arrays["weighted"][i][1]  # a layer without bias keeps a zero bias that nothing trains
                rows = self._rows(op.channels, widths[j], in_channels)[1]
                kernel[j][..., rows, : w.shape[-1]] = w.reshape(*prefix, -1, w.shape[-1])
                if b:
                    bias[j, : w.shape[-1]] = b[0]
            params += [tf.constant(kernel.reshape(k, -1, n_out)), tf.constant(bias)]
        trained, moving = [], []
        for kind in CHANNEL_KINDS:  # in _Offsets' order
            for i, op in enumerate(op for op in plan.ops if op.kind == kind):
                stacked = [tf.constant(a) for a in self._stack_channels(per_job, kind, i, op, widths, in_channels)]
                if kind == "norm":  # gamma, beta trained; the moving mean and variance after every trained one
                    trained, moving = trained + stacked[:2], moving + stacked[2:]
                else:
                    trained += stacked
        return params + trained + recurrents + moving, masks

    def _stack_recurrent(self, per_job, index, op, widths, in_channels, n_in):
        """The ``index``-th weighted op's (a recurrent one's) kernels and bias, stacked at the padded width U with
        each gate's block of columns padded on its own: the kernel (slots, inputs, gates * U), the recurrent kernel
        (slots, U, gates * U) and the bias (slots, gates * U), or (slots, 2 * gates * U) for a GRU's input and
        recurrent biases (``reset_after``); zero for the padding and for a layer without bias."""
        k, units, gates = self._slots, self._capacity[index], op.gates
        biases = 2 if op.reset_after else 1
        kernel = np.zeros((k, n_in, gates, units), "float32")
        recurrent = np.zeros((k, units, gates, units), "float32")
        bias = np.zeros((k, biases, gates, units), "float32")
        for j, (_, arrays) in enumerate(per_job):
            w, r, *b = arrays["weighted"][index][1]
            n = r.shape[0]
            rows = self._rows(op.channels, widths[j], in_channels)[1]
            kernel[j][rows, :, :n] = w.reshape(-1, gates, n)
            recurrent[j][:n, :, :n] = r.reshape(n, gates, n)
            if b:
                bias[j][:, :, :n] = b[0].reshape(biases, gates, n)
        return kernel.reshape(k, n_in, -1), recurrent.reshape(k, units, -1), bias.reshape(k, -1)

    def _stack_channels(self, per_job, kind, index, op, widths, in_channels) -> list:
        """The per-channel arrays of the ``index``-th op of ``kind`` of each job, stacked at the padded widths:
        each (slots, *its leading axes, channels), a job's channels where :meth:`_rows` puts them, zero elsewhere. A
        depthwise kernel (*window, channels, 1) is stacked as (*window, channels), and a missing bias as zeros."""
        n = self._rows(op.channels, widths[0], in_channels)[0]
        stacked = None
        for j, (_, arrays) in enumerate(per_job):
            values = list(arrays[kind][index][1])
            if kind == "depthwise":
                values = [values[0][..., 0], values[1] if len(values) > 1 else np.zeros(values[0].shape[-2])]
            if stacked is None:
                stacked = [np.zeros((self._slots, *v.shape[:-1], n), "float32") for v in values]
            rows = self._rows(op.channels, widths[j], in_channels)[1]
            for array, value in zip(stacked, values):
                array[j][..., rows] = value
        return stacked

    def _unpack(self, per_job, plan, best_params, in_channels):
        """Copy each job's chosen weights into its model; per job, its layers' new weights by layer name
        (``in_channels``: of the data the first op reads, as :meth:`_pack`)."""
        weighted = [op for op in plan.ops if op.weighted]
        offsets = plan.offsets
        # per kind of per-channel parameters: where each op's first one sits, where the rest do
        firsts = {"norm": (offsets.norms, 2), "depthwise": (offsets.depthwise, 2), "prelu": (offsets.prelus, 1),
                  "layernorm": (offsets.layernorms, 2)}
        unpacked = []
        recurrent_index = {i: r for r, i in enumerate(i for i, op in enumerate(weighted) if op.kind == "recurrent")}
        for j, (model, arrays) in enumerate(per_job):
            widths, chosen = _widths(arrays), []
            for i, (op, (layer, current)) in enumerate(zip(weighted, arrays["weighted"])):
                prefix = _kernel_prefix(op)
                kernel, bias = best_params[2 * i][j], best_params[2 * i + 1][j]
                if op.kind == "recurrent":
                    recurrent = best_params[offsets.recurrents + recurrent_index[i]][j]
                    chosen.append((layer, self._unstack_recurrent(op, kernel, recurrent, bias, current,
                                                                  self._rows(op.channels, widths, in_channels)[1])))
                    continue
                shape, n_out = current[0].shape, current[0].shape[-1]
                rows = self._rows(op.channels, widths, in_channels)[1]
                kernel = kernel.reshape(*prefix, -1, kernel.shape[-1])[..., rows, :n_out]
                chosen.append((layer, [kernel.reshape(shape), bias[:n_out]][: 1 + op.bias]))
            for kind in CHANNEL_KINDS:
                start, count = firsts[kind]
                for i, (op, (layer, current)) in enumerate(zip([op for op in plan.ops if op.kind == kind],
                                                               arrays[kind])):
                    rows, first = self._rows(op.channels, widths, in_channels)[1], start + count * i
                    places = [first + c for c in range(count)]
                    if kind == "norm":  # then its moving mean and variance
                        places += [offsets.moving + 2 * i, offsets.moving + 2 * i + 1]
                    values = [best_params[p][j][..., rows] for p in places]
                    if kind == "depthwise":  # its kernel (*window, channels, 1), its bias if it has one
                        values = [values[0][..., None], values[1]][: len(current)]
                    chosen.append((layer, values))
            merged = {}
            for layer, values in chosen:  # a SeparableConv's depthwise kernel (met second) comes first
                earlier = merged[layer.name][1] if layer.name in merged else []
                merged[layer.name] = (layer, values + earlier)
            unpacked.append({})
            for layer in plan.prefix:  # unchanged (nothing in them trains), but in the checkpoint
                if layer.weights:
                    unpacked[j][layer.name] = (model.arrays[layer.name] if isinstance(model, Candidate)
                                               else model.get_layer(layer.name).get_weights())
            for layer, values in merged.values():
                if isinstance(model, Candidate):
                    model.assign(layer.name, values)
                else:
                    layer.set_weights(values)
                unpacked[j][layer.name] = values
        return unpacked

    @staticmethod
    def _unstack_recurrent(op, kernel, recurrent, bias, current, rows) -> list:
        """One job's recurrent weights, cut from its slot (:meth:`_stack_recurrent`) to its own ``current`` shapes,
        in ``get_weights()`` order (kernel, recurrent kernel, bias)."""
        gates, units, n = op.gates, recurrent.shape[0], current[1].shape[0]
        kernel = kernel.reshape(-1, gates, units)[rows, :, :n].reshape(current[0].shape)
        recurrent = recurrent.reshape(units, gates, units)[:n, :, :n].reshape(current[1].shape)
        bias = bias.reshape(-1, gates, units)[:, :, :n]
        return [kernel, recurrent, bias.reshape(current[2].shape)] if op.bias else [kernel, recurrent]

    def _save(self, job, plan, weights) -> None:
        """The job's checkpoint, written from its arrays in Keras' layout (:mod:`keras_grs.checkpoint`): Keras'
        own ``save_weights`` walks the model in Python, which cost more than a small candidate's training. A model
        whose optimizer has been built (its variables would be missing from the layout), or whose file the layout
        cannot describe, is saved by Keras. A :class:`~keras_grs.evaluate.candidate.Candidate` is never built for
        it: the layout of its topology is read from its parent (or, when the parent's optimizer was built, from the
        candidate materialised once)."""
        model = job.model
        lazy = isinstance(model, Candidate) and not model.materialized
        if not self.arrays_checkpoints or (not lazy and getattr(model.optimizer, "built", True)):
            save_weights(realized(model), job.checkpoint, self.writer)
            return
        template = template_of(model)
        key = (plan.key(), template.name, plan.names)
        if key not in self._layouts:
            source = template if not getattr(template.optimizer, "built", True) else realized(model)
            try:
                self._layouts[key] = CheckpointLayout.of(source)
            except LayoutError as reason:
                warnings.warn(f"checkpoints saved by Keras: {reason}", stacklevel=3)
                self._layouts[key] = None
        layout = self._layouts[key]
        if layout is None:
            save_weights(realized(model), job.checkpoint, self.writer)
        else:
            names = {"optimizer/vars": template.optimizer.name}  # as Keras would write this model's
            write_checkpoint(job.checkpoint, lambda path: layout.write(path, weights, names), self.writer)

    def _train(self, jobs, plan, score, reported, fit_args, fit_kwargs):
        batch = int(fit_kwargs.get("batch_size") or 32)
        shuffle = fit_kwargs.get("shuffle", True)
        per_job = self._widen(jobs)
        k = self._slots
        template = template_of(jobs[0].model)
        inputs = _FitInputs.make(plan, fit_args, fit_kwargs, int(template.output_shape[-1]),
                                 tuple(int(d) for d in template.input_shape[1:]), batch, shuffle)
        n_batches = inputs.n_batches
        callbacks = fit_kwargs.get("callbacks") or ()
        # one compiled fit runs up to `capacity` epochs a call (as many batch orders as EPOCH_INDEX_BYTES hold), how
        # many is an argument: as many as last took about CALL_SECONDS (a signal such as Ctrl-C waits for the call
        # to end); one, in a program that holds one, when an EarlyStopping decides between epochs
        per_epoch = n_batches * batch * (k if shuffle else 1) * 4
        capacity = 1 if callbacks else max(1, min(MAX_EPOCHS_PER_CALL, EPOCH_INDEX_BYTES // per_epoch))
        problem = _Problem(k, tuple(self._capacity), inputs.input_shape, n_batches, batch, not shuffle,
                           inputs.n_samples, inputs.patched, score, reported, self.epoch_score, capacity)
        data = _FitData(
            problem=problem, fit=self._program(problem, plan), plan=plan, in_channels=inputs.input_shape[-1],
            epochs=int(fit_kwargs.get("epochs", 1)), shuffle=shuffle, callbacks=tuple(callbacks), inputs=inputs)
        # groups of `k` candidates, up to `workers` of them training at once: one compiled fit runs on one core
        groups = [(jobs[start:start + k], per_job[start:start + k], start) for start in range(0, len(jobs), k)]
        outcomes = _in_threads([lambda halt, group=group: self._fit_group(*group, data, halt) for group in groups],
                               self.workers)
        results = []
        for (group_jobs, group_layers, _), (best_params, chosen, epochs_run) in zip(groups, outcomes):
            unpacked = self._unpack(group_layers, plan, best_params, data.in_channels)
            for i, job in enumerate(group_jobs):
                self._save(job, plan, unpacked[i])
                results.append({
                    **({} if plan.loss.regression else {"val_accuracy": float(chosen[1][i])}),
                    "val_loss": float(chosen[2][i]),
                    "loss": float(chosen[0][i]),
                    **({f"val_{score.name}": float(chosen[3][i])} if score.metric not in ("accuracy", "loss")
                       else {}),
                    **{f"val_{other.name}": float(chosen[4 + r][i]) for r, other in enumerate(reported)},
                    "epochs": int(epochs_run[i]),
                    **measure(job.model),  # params, flops, latency_ms
                    "val_samples": int(inputs.y_val.shape[0]),
                })
        return results

    def _fit_group(self, jobs, per_job, offset, data, halt):
        """Train one group of at most ``self._slots`` jobs (``offset``: the first one's place in the batch) with the
        compiled fit; the chosen epoch's weights (numpy, slot first), its (loss, val_accuracy, val_loss, objective,
        *other scores) and the epochs each job ran. Returns None when ``halt`` is set between calls (another group
        failed or was interrupted)."""
        problem, k = data.problem, data.problem.k
        params, masks = self._pack(per_job, data.plan, data.in_channels)
        active = tf.constant((np.arange(k) < len(jobs)).astype("float32"))
        score = problem.score
        stoppers = [_Stopping(c, k, score, problem.reported) for c in data.callbacks]
        trained = params[:data.plan.offsets.moving]  # the optimizer's state: each slot for each trained parameter
        state = data.plan.optimizer.initial_state(trained)
        step = tf.constant(0.0)
        # per candidate, by its identity (see Job.key); padding slots draw nothing and train on the plain order
        rngs = [keyed_rng(self.seed, f"fit {job.key if job.key is not None else f'{self._calls}.{offset + j}'}")
                for j, job in enumerate(jobs)]
        n_batches, batch, capacity = problem.n_batches, problem.batch, problem.capacity
        plain = np.arange(data.inputs.n_samples)
        tail = np.zeros(n_batches * batch - data.inputs.n_samples, dtype=int)
        if not data.shuffle:
            order = np.concatenate([plain, tail]).reshape(n_batches, batch)
        # the objective oriented so that larger is better, and the chosen epoch's weights and scores
        best = tf.constant(np.full(k, -np.inf, "float32"))
        # loss, val_accuracy, val_loss, the objective, the other scores recorded
        best_params, chosen = list(params), [tf.zeros((k,))] * (4 + len(problem.reported))
        stopped = np.arange(k) >= len(jobs)  # padding slots count as stopped
        epochs_run = np.zeros(k, dtype=int)
        epoch, epochs = 0, data.epochs
        while epoch < epochs and not stopped.all():
            if halt.is_set():
                return None
            n = min(self._epochs_per_call.get(problem, 1), epochs - epoch)  # at most capacity: 1 with stoppers
            index, seeds = [], []
            for _ in range(n):  # each rng draws its order, then its dropout seed, epoch after epoch
                if data.shuffle:
                    # each candidate its own order, as model.fit alone would give it: a shared order correlates
                    # the candidates' scores within a step (no effect on whole nn1 searches measured so far,
                    # though: benchmarks/results/evaluator_parity.md)
                    orders = [rng.permutation(data.inputs.n_samples) for rng in rngs] + [plain] * (k - len(jobs))
                    orders = np.stack([np.concatenate([order, tail]) for order in orders])
                    index.append(orders.reshape(k, n_batches, batch).swapaxes(0, 1))  # (batches, candidates, samples)
                else:
                    index.append(order)
                seeds.append([int(rng.integers(1 << 30)) for rng in rngs] + [0] * (k - len(jobs)))
            index += [np.zeros_like(index[0])] * (capacity - n)  # the epochs this call does not run
            seeds += [[0] * k] * (capacity - n)
            started = time.perf_counter()
            given = data.inputs
            params, state, step, best, best_params, chosen, last = data.fit(
                tf.constant(n), params, state, step, masks, active, given.samples,
                tf.constant(np.stack(index), tf.int32), given.y, given.weights, given.present, given.counts,
                tf.constant(seeds, tf.int32), given.x_val, given.y_val, tf.constant(~stopped), best, best_params,
                chosen)
            seconds = time.perf_counter() - started  # the first call of a program includes its compilation
            self._epochs_per_call[problem] = max(1, min(capacity, int(CALL_SECONDS * n / max(seconds, 1e-6))))
            running = ~stopped
            epochs_run[running] += n
            if stoppers:  # one epoch per call: its scores decide who stops before the next
                losses, accuracy, val_loss, objective, *others = (t.numpy() for t in last)
                monitored = {"val_accuracy": accuracy, "val_loss": val_loss, "loss": losses,
                             f"val_{score.name}": objective,
                             **{f"val_{other.name}": v for other, v in zip(problem.reported, others)}}
                for stopper in stoppers:
                    stopped = stopped | stopper.update(epoch, monitored[stopper.monitor], stopped)
            epoch += n
        return [p.numpy() for p in best_params], [t.numpy() for t in chosen], epochs_run

    def _program(self, problem, plan):
        """The compiled fit for one shape of problem, built once and reused: up to ``problem.capacity`` epochs'
        training steps, each epoch's validation and the choice of the epoch whose weights are kept, in one call.

        fit(epochs, params, state, step, masks, active, samples, index, y, weights, present, counts, seeds, x_val,
        y_val, running, best, best_params, chosen) -> params, state, step, best, best_params, chosen, last:
        ``epochs`` how many epochs this call runs, ``index`` (capacity, batches, [candidates,] batch) the samples
        of each mini-batch, ``seeds`` (capacity, candidates) the dropout seeds; ``running`` the candidates whose
        epochs count (not stopped early); ``best`` the objective of each candidate's chosen epoch, oriented so that
        larger is better, ``best_params`` its weights and ``chosen`` its (loss, val_accuracy, val_loss, objective,
        *the other scores recorded), carried from call to call (the objective: the problem's :class:`Score`, the
        others its ``reported``); ``last`` the same of the last epoch.
        """
        key = (problem, plan.key())
        if key not in self._compiled:
            self._compiled[key] = _PROGRAMS.get(key, lambda: self._build_program(problem, plan))
        return self._compiled[key]

    @staticmethod
    def _build_program(problem, plan):
        """The compiled fit of :meth:`_program`; a function of its key alone, so that evaluators share it."""
        k, shared, patched = problem.k, problem.shared, problem.patched
        forward = _forward_function(plan.ops, k)
        loss_of, optimizer = plan.loss, plan.optimizer
        learning_rate = optimizer.schedule()
        weighted = [op for op in plan.ops if op.weighted]
        norms = [op for op in plan.ops if op.kind == "norm"]
        depthwise = [op for op in plan.ops if op.kind == "depthwise"]
        recurrent = [op for op in plan.ops if op.kind == "recurrent"]
        offsets = plan.offsets
        trainable = offsets.moving
        slots = optimizer.slots()
        n_batches = problem.n_batches

        def regularization(params):
            """Per candidate: the layers' regularizers, which Keras adds to both the training and the validation
            loss."""
            total = tf.zeros((k,))
            for first, ops in ((0, weighted), (offsets.depthwise, depthwise)):
                for w, op in enumerate(ops):
                    if any(op.penalties):
                        total += (penalty(params[first + 2 * w], *op.penalties[:2])
                                  + penalty(params[first + 2 * w + 1], *op.penalties[2:]))
            for r, op in enumerate(recurrent):
                if any(op.recurrent_penalties):
                    total += penalty(params[offsets.recurrents + r], *op.recurrent_penalties)
            return total

        def train_epoch(params, state, step, masks, active, samples, index, y, weights, present, counts, seeds):
            def batch_step(i, params, state, step, total):
                rows = index[i]
                trained, moments = params[:trainable], []
                with tf.GradientTape() as tape:
                    tape.watch(list(trained))
                    logits = forward(params, masks, tf.gather(samples, rows), (seeds, i), shared, patched,
                                     present[i], moments)
                    per_sample = loss_of.per_sample(tf.gather(y, rows), logits)
                    weight = tf.gather(weights, rows) * present[i]
                    losses = tf.reduce_sum(per_sample * weight, axis=1) / counts[i] + regularization(params)
                    loss = tf.reduce_sum(losses * active)
                grads = tape.gradient(loss, list(trained))
                grads = [tf.zeros_like(p) if g is None else g for p, g in zip(trained, grads)]  # layers without bias
                lr = learning_rate(tf.cast(step, tf.int64))  # Keras calls its schedule with the updates done so far
                step = step + 1.0
                # the norms' moving statistics, from the batch's moments before the update (as Keras' layer does)
                moving = []
                for b, (op, (mean, variance)) in enumerate(zip(norms, moments)):
                    kept = params[trainable + 2 * b: trainable + 2 * b + 2]
                    moving += [kept[0] * op.momentum + mean * (1.0 - op.momentum),
                               kept[1] * op.momentum + variance * (1.0 - op.momentum)]
                trained, state = optimizer.update(trained, grads, state, step, lr)
                params = (*trained, *moving)
                # Keras' epoch loss: the batches' losses weighted by their sizes
                return i + 1, tuple(params), tuple(tuple(slot) for slot in state), step, total + losses * counts[i]

            _, params, state, step, total = tf.while_loop(
                lambda i, *_: i < n_batches, batch_step, (tf.constant(0), params, state, step, tf.zeros((k,))))
            return params, state, step, total / tf.reduce_sum(counts)

        score = problem.score

        def validate(params, masks, x_val, y_val):
            """Per candidate: val_accuracy, val_loss, the objective and the other scores recorded."""
            logits = forward(params, masks, x_val, None, patched=patched)
            loss = tf.reduce_mean(loss_of.per_sample(y_val, logits), axis=1) + regularization(params)
            accuracy = tf.reduce_mean(loss_of.accuracy(y_val, logits), axis=1)
            outputs = loss_of.outputs(logits)
            objective = loss if score.metric == "loss" else accuracy if score.metric == "accuracy" else \
                score.value(y_val, outputs)
            return accuracy, loss, objective, tuple(other.value(y_val, outputs) for other in problem.reported)

        # written with tf.while_loop, without AutoGraph: converting the ~150 functions a fit calls cost 3-4 s of a
        # fresh process's first call (more than XLA's compilation), and none of them branches on a tensor
        @tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
        def fit(epochs, params, state, step, masks, active, samples, index, y, weights, present, counts, seeds, x_val,
                y_val, running, best, best_params, chosen):
            n = trainable  # the optimizer's state: each slot for each trained parameter
            params, best_params, chosen = tuple(params), tuple(best_params), tuple(chosen)
            state = tuple(tuple(state[s * n: (s + 1) * n]) for s in range(slots))

            def epoch_step(e, params, state, step, best, best_params, chosen, last):
                params, state, step, losses = train_epoch(params, state, step, masks, active, samples, index[e], y,
                                                          weights, present, counts, seeds[e])
                accuracy, val_loss, objective, others = validate(params, masks, x_val, y_val)
                value = -objective if score.minimize else objective
                # Keras' best-epoch rule: the first epoch reaching the best value ("best_latest": the last one;
                # "last": every epoch), among the candidates still training
                if problem.epoch_score == "last":
                    improved = running
                elif problem.epoch_score == "best_latest":
                    improved = (value >= best) & running
                else:
                    improved = (value > best) & running
                best = tf.where(improved, value, best)
                best_params = tuple(tf.where(tf.reshape(improved, (k,) + (1,) * (len(p.shape) - 1)), p, b)
                                    for p, b in zip(params, best_params))
                last = (losses, accuracy, val_loss, objective, *others)
                chosen = tuple(tf.where(improved, new, old) for new, old in zip(last, chosen))
                return e + 1, params, state, step, best, best_params, chosen, last

            # the number of epochs is an argument, not a trip count XLA must know: any number reuses the program
            _, params, state, step, best, best_params, chosen, last = tf.while_loop(
                lambda e, *_: e < epochs, epoch_step,
                (tf.constant(0), params, state, step, best, best_params, chosen, chosen))
            flat = [t for slot in state for t in slot]
            return list(params), flat, step, best, list(best_params), list(chosen), list(last)

        return fit


class _ProgramCache:
    """The compiled fits of this process by (problem, plan key), shared by every evaluator: tracing and compiling
    one costs seconds (2.4 s for nn1 here, against 2.5 s for the 115 trials of a whole 5-epoch search), and a
    process often runs several searches of one model (a notebook's reruns, GRS then JGRS, a resumed search, the
    tests). The ``SHARED_PROGRAMS`` used last are kept; an evaluator keeps its own programs while it lives."""

    def __init__(self, size):
        self.size = size
        self._programs = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, build):
        """The program of ``key``, made by ``build()`` when missing (cheap: tracing waits for the first call)."""
        with self._lock:
            if key not in self._programs:
                self._programs[key] = build()
            self._programs.move_to_end(key)
            while len(self._programs) > self.size:
                self._programs.popitem(last=False)
            return self._programs[key]


_PROGRAMS = _ProgramCache(SHARED_PROGRAMS)


def _layer_arrays(model, plan) -> dict[str, list[tuple]]:
    """(layer, its weights) of a model's layers that have weights, in the order of ``plan`` (the plan of its
    template), by op: ``weighted`` (Dense and Conv), ``norm``, ``depthwise``, ``prelu`` and ``layernorm``; of a
    candidate, its parent's layer and the candidate's arrays."""
    found = {"weighted": [], "norm": [], "depthwise": [], "prelu": [], "layernorm": []}
    template = template_of(model)
    for op, name in zip(plan.ops, plan.names):
        kind = "weighted" if op.weighted else op.kind
        if kind in found:
            layer = template.get_layer(name)
            weights = model.arrays[name] if isinstance(model, Candidate) else layer.get_weights()
            if kind_of(layer).batched == "separable":  # depthwise kernel; pointwise kernel and bias
                weights = weights[:1] if kind == "depthwise" else weights[1:]
            found[kind].append((layer, weights))
    return found


def _widths(arrays) -> list[int]:
    """The widths of a job's Dense/Conv/recurrent layers (:func:`_layer_arrays`; a recurrent layer's units are its
    recurrent kernel's rows)."""
    return [int(weights[1].shape[0] if isinstance(layer, RECURRENT) else weights[0].shape[-1])
            for layer, weights in arrays["weighted"]]


def check_workers(workers) -> int:
    """``workers`` as a positive int; None: the environment's WORKERS_VARIABLE if set (it reaches the command line
    and every tuner), else DEFAULT_WORKERS or the cores this process may use, if fewer."""
    if workers is None and os.environ.get(WORKERS_VARIABLE, "").strip():
        text = os.environ[WORKERS_VARIABLE].strip()
        if not text.isdecimal() or int(text) < 1:
            raise ValueError(f"{WORKERS_VARIABLE} must be a positive integer (how many groups of candidates train "
                             f"at once), got {text!r}")
        return int(text)
    if workers is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # no affinity on this platform
            cores = os.cpu_count() or 1
        return max(1, min(DEFAULT_WORKERS, cores))
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive int (how many groups of candidates train at once), "
                         f"got {workers!r}")
    return int(workers)


def _in_threads(tasks, workers) -> list:
    """Run ``tasks`` (callables of a ``threading.Event``) on up to ``workers`` threads made for this batch (one: here,
    one after the other); their results in order. When one fails or the caller is interrupted (Ctrl-C, or the
    command line's SIGTERM), the event tells the others to stop after their current call (about CALL_SECONDS), and
    the error is raised once they have: no thread outlives the batch. The caller only joins threads, which Python
    makes safe to interrupt; a pool's futures would share locks with the workers, and an interrupt landing while
    the caller held one of them left a worker waiting on it forever (a search hung after SIGTERM)."""
    halt = threading.Event()
    if workers == 1 or len(tasks) == 1:
        return [task(halt) for task in tasks]
    results, errors = [None] * len(tasks), [None] * len(tasks)
    n = min(workers, len(tasks))

    def run(first):
        for i in range(first, len(tasks), n):  # thread t runs tasks t, t + n, ...
            if halt.is_set():
                return
            try:
                results[i] = tasks[i](halt)
            except BaseException as error:  # handed to the caller
                errors[i] = error
                halt.set()
                return

    threads = [threading.Thread(target=run, args=(t,), name=f"keras-grs-fit-{t}", daemon=True) for t in range(n)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    except BaseException:
        halt.set()
        for thread in threads:
            if thread.is_alive():
                thread.join()
        raise
    for error in errors:
        if error is not None:
            raise error
    return results


def _monitored(score=None, reported=()) -> dict:
    """What an EarlyStopping may watch in a batched fit, with its direction: the scores every epoch computes (with
    the objective's, ``score``, and the other scores recorded, ``reported``: AUCs and error metrics)."""
    if score is None:
        return MONITORED
    return {**MONITORED, **{f"val_{s.name}": "min" if s.minimize else "max" for s in (score, *reported)}}


def _batchable_early_stopping(callback, score, reported) -> bool:
    return type(callback) is keras.callbacks.EarlyStopping and callback.monitor in _monitored(score, reported)


class _Stopping:
    """``keras.callbacks.EarlyStopping``'s rule (Keras 3: patience, min_delta, mode, baseline, start_from_epoch),
    applied to each candidate of a batch on its own: a stopped candidate keeps its best epoch and trains no more
    epochs that count; the batch ends when every candidate has stopped. ``restore_best_weights`` changes nothing
    here: the weights kept are always those of the objective's best epoch (keras-tuner's checkpoint rule)."""

    def __init__(self, callback, k, score=None, reported=()):
        self.monitor = callback.monitor
        mode = callback.mode if callback.mode in ("min", "max") else _monitored(score, reported)[callback.monitor]
        self.sign = 1.0 if mode == "max" else -1.0
        self.min_delta = abs(callback.min_delta)
        self.patience, self.baseline, self.start = callback.patience, callback.baseline, callback.start_from_epoch
        self.best = np.full(k, np.nan)
        self.wait = np.zeros(k, dtype=int)

    def _improves(self, value, reference):
        return np.isnan(reference) | (self.sign * (value - self.sign * self.min_delta) > self.sign * reference)

    def update(self, epoch, values, stopped):
        """The candidates this epoch stops (a boolean mask), given the monitored values and those already stopped."""
        if epoch < self.start:
            return np.zeros_like(stopped)
        running = ~stopped
        self.wait[running] += 1
        better = running & self._improves(values, self.best)
        self.best[better] = values[better]
        reset = better if self.baseline is None else better & self._improves(values, np.full_like(values, self.baseline))
        self.wait[reset] = 0
        return running & ~better & (self.wait >= self.patience) & (epoch > 0)


def _forward_function(plan, k):
    """forward(params, masks, x, seed, shared=True, patched=False, rows=None, moments=None) -> logits (k, batch,
    classes); ``seed``: (the candidates' dropout seeds (k,), the mini-batch's index), None for inference;
    ``shared``: x is the same for every candidate (no candidate axis), else x has a leading candidate axis;
    ``patched``: x holds the first convolution's patches (:func:`_input_patches`) rather than the input. In
    training, ``rows`` ((batch,) or (1, batch)) weighs the batch's rows in the norms' moments (0: the padding of a
    last, partial batch) and each norm appends its batch (mean, variance), each (k, units), to ``moments``."""
    pooled = _pooled_after(plan)
    offsets = _Offsets.of(plan)
    # each op's place among the ops of its kind (the order of their parameters)
    place = {n: sum(other.kind == op.kind or (op.weighted and other.weighted) for other in plan[:n])
             for n, op in enumerate(plan)}
    steps = {n: sum(other.kind == "recurrent" for other in plan[:n]) for n in range(len(plan))}  # recurrent kernels

    def channel_mask(masks, channels):
        return masks[channels[0]] if len(channels) == 1 else tf.concat([masks[c] for c in channels], axis=-1)

    def remasked(h, masks, channels):
        """``h`` (k, batch, ..., channels) with its padded channels zero again (those of the model's input have
        none)."""
        if -1 in channels:
            return h
        mask = channel_mask(masks, channels)
        return h * tf.reshape(mask, (k,) + (1,) * (len(h.shape) - 2) + (mask.shape[-1],))

    def forward(params, masks, x, seed, shared=True, patched=False, rows=None, moments=None):
        values = {-1: (x, shared)}  # per op, its output and whether it is still shared (no candidate axis)
        n = 0
        while n < len(plan):
            op = plan[n]
            # each op under its own name (e.g. "op2_conv"), which the compiled program's instructions carry into a
            # profile (benchmarks/conv_profile.py)
            with tf.name_scope(f"op{n}_{op.kind}"):
                inputs = [values[i] for i in op.inputs]
                h, shared = inputs[0]
                if op.kind == "op" and all(s for _, s in inputs):  # of the model's input: stays shared
                    h = _call_op(op, [t for t, _ in inputs])
                elif op.kind in ("merge", "concat", "op"):
                    tensors = [tf.broadcast_to(t[None], (k, *t.shape)) if s else t for t, s in inputs]
                    shared = False
                    if op.kind == "concat":
                        h = tf.concat(tensors, axis=-1)
                    elif op.kind == "op":  # then its padded channels masked again (an op may add a constant)
                        h = remasked(_call_op(op, tensors), masks, op.channels)
                    elif op.merge == "average":
                        h = tf.add_n(tensors) / len(tensors)
                    else:
                        h = functools.reduce(MERGES[op.merge], tensors)
                elif shared and op.kind not in ("dense", "conv", "recurrent", "flatten", "reshape", "pad", "crop",
                                                "upsample"):
                    h, shared = tf.broadcast_to(h[None], (k, *h.shape)), False
                if op.kind == "flatten":
                    h = tf.reshape(h, (*h.shape[: 1 if shared else 2], -1))
                elif op.kind == "reshape":  # positions of size 1 added or removed
                    h = tf.reshape(h, (*h.shape[: 1 if shared else 2], *op.window, h.shape[-1]))
                elif op.kind == "recurrent":
                    w = place[n]
                    h = _recurrent(h, op, params[2 * w], params[offsets.recurrents + steps[n]], params[2 * w + 1],
                                   masks[w], shared, k, None if seed is None else (*seed, n, len(plan) + n))
                    shared = False
                elif op.weighted:
                    w = place[n]
                    kernel, bias = params[2 * w], params[2 * w + 1]
                    if op.kind == "conv" and not (patched and n == 0):
                        h = _patches(h, op, 1 if shared else 2, _pooled_positions(pooled.get(n)))
                    windows = n in pooled and patched and n == 0  # patches window by window (_input_patches)
                    z = _matmul(h, kernel, shared, k)
                    if windows:  # (k, batch, window, *positions, outputs): the pooling is a maximum over the windows
                        z = _window_max(z, axes=[2])
                    shared = False
                    if n in pooled:  # pooled before the bias, activation and mask: the same values, 1/4 the work
                        z = z if windows else _pool(z, pooled[n], k)
                        n += 1  # the pooling's output is this
                    broadcast = (k,) + (1,) * (len(z.shape) - 2) + (bias.shape[-1],)
                    if op.bias:
                        z = z + tf.reshape(bias, broadcast)
                    if op.activation == "logits":  # (k, batch, outputs): a Conv's positions are all of size 1
                        return tf.reshape(z, (k, -1, z.shape[-1])) if len(z.shape) > 3 else z
                    h = _activate(op, z) * tf.reshape(masks[w], broadcast)
                elif op.kind == "norm":
                    if seed is not None and rows is None:  # training on whole batches
                        rows = tf.ones((h.shape[1],))
                    first = 2 * place[n]
                    h = _normalize(h, op, params[offsets.norms + first: offsets.norms + first + 2],
                                   params[offsets.moving + first: offsets.moving + first + 2],
                                   channel_mask(masks, op.channels), None if seed is None else rows, moments)
                elif op.kind == "prelu":  # Keras' formula; a padded (zero) unit stays zero
                    alpha = params[offsets.prelus + place[n]]
                    alpha = tf.reshape(alpha, (k, *[1] * (len(h.shape) - len(alpha.shape)), *alpha.shape[1:]))
                    h = tf.nn.relu(h) - alpha * tf.nn.relu(-h)
                elif op.kind == "layernorm":
                    first = offsets.layernorms + 2 * place[n]
                    mask = None if -1 in op.channels else channel_mask(masks, op.channels)
                    h = _layer_normalize(h, op, params[first: first + 2], mask)
                elif op.kind == "depthwise":
                    first = offsets.depthwise + 2 * place[n]
                    h = _depthwise(h, op, *params[first: first + 2], channel_mask(masks, op.channels))
                elif op.kind == "activation":
                    h = _activate(op, h)
                elif op.kind == "dropout":
                    if seed is not None and op.rate > 0:
                        # a SpatialDropout: one draw per (sample, channel), as Keras' noise_shape (batch, 1, .., units)
                        shape = (*h.shape[:2], *[1] * (len(h.shape) - 3), h.shape[-1]) if op.whole_channels else \
                            (*h.shape[:2], *[1] * (len(h.shape) - 2)) if op.whole_samples else h.shape
                        h = tf.where(_dropout_keep(shape, *seed, n, op.rate), h / (1 - op.rate), 0.0)
                elif op.kind == "noise":
                    if seed is not None and op.rate > 0:
                        z = _standard_normal(h.shape, *seed, n)
                        if op.noise == "multiplicative":  # Keras' GaussianDropout: a factor N(1, rate / (1 - rate))
                            h = h * (1.0 + math.sqrt(op.rate / (1.0 - op.rate)) * z)
                        else:  # GaussianNoise, then the padded channels zero again
                            h = remasked(h + op.rate * z, masks, op.channels)
                elif op.kind == "pool":
                    h = _pool(h, op, k)
                elif op.kind == "gpool":
                    reduce = tf.reduce_max if op.pooling == "MAX" else tf.reduce_mean
                    h = reduce(h, axis=list(range(2, len(h.shape) - 1)), keepdims=op.keepdims)
                elif op.kind == "pad":  # per sample: a shared input stays shared
                    lead = 1 if shared else 2
                    h = tf.pad(h, [[0, 0]] * lead + [list(m) for m in op.margins] + [[0, 0]])
                elif op.kind == "crop":
                    lead = 1 if shared else 2
                    spatial = zip(op.margins, h.shape[lead:-1])
                    h = h[(slice(None),) * lead + tuple(slice(a, size - b) for (a, b), size in spatial)]
                elif op.kind == "upsample":  # per sample: a shared input stays shared
                    lead = 1 if shared else 2
                    for axis, size in enumerate(op.window):
                        h = tf.repeat(h, size, axis=lead + axis)
            values[n] = (h, shared)
            n += 1
        raise AssertionError("the plan has no output layer")

    return forward


def _recurrent(h, op, kernel, recurrent, bias, mask, shared, k, dropout=None):
    """An LSTM, GRU or SimpleRNN op (:func:`_recurrent_op`): (k,) batch, steps, inputs -> (k, batch, units), or
    (k, batch, steps, units) with ``op.sequences``; Keras' cell formulas, from a zero state.

    Every step's input product is one batched product before the loop (:func:`_matmul`); the loop multiplies the
    state by the recurrent kernel. Each gate's block of units is padded to the same width (the kernel's columns
    are (gates, units)); the padded units' state and cell are masked to zero after every step, so that they pass
    nothing on whatever the activations give at zero, and their weights, whose gradients are then zero, stay zero.

    ``dropout``, in training: (the candidates' seeds (k,), the mini-batch's index, the numbers of the input's and
    the state's random streams). As Keras' cells, the inputs and the state entering the recurrent product are
    multiplied by masks drawn once per sequence and kept for every step (:func:`_recurrent_dropout`): with one mask
    per gate, each gate's block of the kernel reads the inputs (or the state) under its own.
    """
    units, gates = mask.shape[-1], op.gates
    activation, gate = keras.activations.get(op.activation), keras.activations.get(op.recurrent_activation or "linear")
    kept_inputs, kept_state = _recurrent_dropout(op, h, units, shared, k, dropout)
    if kept_inputs is None:
        x = _matmul(h, kernel, shared, k)  # (k, batch, steps, gates * units)
    else:  # each mask's block of columns by the inputs under that mask, (k, batch, 1, inputs): every step alike
        h = tf.broadcast_to(h[None], (k, *h.shape)) if shared else h
        width = kernel.shape[-1] // op.dropout_masks
        x = tf.concat([_matmul(h * kept_inputs[:, :, g, None], kernel[:, :, g * width:(g + 1) * width], False, k)
                       for g in range(op.dropout_masks)], axis=-1)
    biases = tf.reshape(bias, (k, -1, 1, gates * units))  # (k, 1 or 2 (a GRU's reset_after), 1, gates * units)
    if op.bias:
        x = x + biases[:, 0][:, None]  # (k, 1, 1, gates * units)
    inner_bias = biases[:, 1] if op.bias and op.reset_after else None  # (k, 1, gates * units), added to h @ R
    x = tf.transpose(x, (2, 0, 1, 3))  # by step: (steps, k, batch, gates * units)
    if op.backwards:
        x = tf.reverse(x, [0])
    keep = tf.reshape(mask, (k, 1, units))
    zeros = tf.zeros((k, x.shape[2], units))

    def dropped(state):
        """The state as each gate's block of the recurrent kernel reads it: (k, blocks, batch, units)."""
        return tf.transpose(state[:, :, None] * kept_state, (0, 2, 1, 3))

    def times_recurrent(state):
        """``state @ recurrent``, each block of columns by the state under its mask when the state is dropped."""
        if kept_state is None:
            return tf.matmul(state, recurrent)
        blocks = op.dropout_masks
        if blocks == 1:
            return tf.matmul(state * kept_state[:, :, 0], recurrent)
        columns = tf.transpose(tf.reshape(recurrent, (k, units, blocks, -1)), (0, 2, 1, 3))  # (k, blocks, U, width)
        products = tf.transpose(tf.matmul(dropped(state), columns), (0, 2, 1, 3))  # (k, batch, blocks, width)
        return tf.reshape(products, (k, -1, recurrent.shape[-1]))

    def step(carry, x_t):
        state, cell = carry
        if op.cell == "gru" and not op.reset_after:  # the reset gate applied before the candidate's product
            x_z, x_r, x_h = tf.split(x_t, 3, axis=-1)
            r_z, r_r, r_h = tf.split(recurrent, 3, axis=-1)
            s_z, s_r, s_h = (state,) * 3 if kept_state is None else tf.unstack(dropped(state), axis=1)
            z, r = gate(x_z + tf.matmul(s_z, r_z)), gate(x_r + tf.matmul(s_r, r_r))
            state = (z * state + (1.0 - z) * activation(x_h + tf.matmul(r * s_h, r_h))) * keep
            return state, cell
        inner = times_recurrent(state)
        if inner_bias is not None:
            inner = inner + inner_bias
        if op.cell == "lstm":
            i, f, c, o = tf.split(x_t + inner, 4, axis=-1)
            cell = (gate(f) * cell + gate(i) * activation(c)) * keep
            return gate(o) * activation(cell) * keep, cell
        if op.cell == "gru":
            x_z, x_r, x_h = tf.split(x_t, 3, axis=-1)
            i_z, i_r, i_h = tf.split(inner, 3, axis=-1)
            z, r = gate(x_z + i_z), gate(x_r + i_r)
            return (z * state + (1.0 - z) * activation(x_h + r * i_h)) * keep, cell
        return activation(x_t + inner) * keep, cell

    # a loop over the steps: unrolled (20 steps of an LSTM), XLA compiled the fit 2x slower and ran it 1.5x slower
    states = tf.scan(step, x, initializer=(zeros, zeros))[0]  # (steps, k, batch, units)
    return tf.transpose(states, (1, 2, 0, 3)) if op.sequences else states[-1]


def _recurrent_dropout(op, h, units, shared, k, dropout):
    """The factors (0 or 1 / (1 - rate)) of a recurrent op's dropout masks (None when it draws none): for its
    inputs (k, batch, masks, inputs), then for its state (k, batch, masks, units), ``masks`` per sample
    (``op.dropout_masks``), each drawn unit by unit (:func:`_unit_uniforms`) from its own stream."""
    if dropout is None:
        return None, None
    seeds, batch_index, inputs_stream, state_stream = dropout
    batch = h.shape[0 if shared else 1]

    def factors(rate, stream, width):
        if not rate:
            return None
        uniform = _unit_uniforms((k, batch, width), seeds, batch_index, stream, draws=op.dropout_masks)
        return tf.where(tf.transpose(uniform, (0, 3, 2, 1)) >= rate, 1.0 / (1.0 - rate), 0.0)

    return factors(op.rate, inputs_stream, h.shape[-1]), factors(op.recurrent_rate, state_stream, units)


def _call_op(op, tensors):
    """An element-wise Keras op (:func:`_keras_op`) on ``tensors``, called with its recorded arguments."""
    operation, (args, kwargs) = op.operation

    def value(argument):
        return tensors[argument[1]] if isinstance(argument, tuple) and argument[:1] == ("tensor",) else argument

    return operation(*[value(a) for a in args], **{key: value(v) for key, v in kwargs.items()})


def _normalize(h, op, affine, moving, mask, rows, moments):
    """A BatchNormalization of ``h`` (k, batch, *positions, units): in training (``rows`` given) by the batch's
    moments over its real rows (appended to ``moments``), else by the moving ones; as Keras computes it
    (``tf.nn.moments``, then ``x * inv + (beta - mean * inv)``), the padded units kept at zero."""
    gamma, beta = affine
    shape = (h.shape[0],) + (1,) * (len(h.shape) - 2) + (h.shape[-1],)
    if rows is None:
        mean, variance = (tf.reshape(t, shape) for t in moving)
    else:
        axes = list(range(1, len(h.shape) - 1))
        weight = tf.reshape(rows, (-1, h.shape[1]) + (1,) * (len(h.shape) - 2))
        count = tf.reduce_sum(tf.broadcast_to(weight, (*h.shape[:-1], 1)), axes, keepdims=True)
        mean = tf.reduce_sum(h * weight, axes, keepdims=True) / count
        variance = tf.reduce_sum(tf.math.squared_difference(h, tf.stop_gradient(mean)) * weight, axes,
                                 keepdims=True) / count
        if moments is not None:
            moments.append((tf.stop_gradient(tf.reshape(mean, (h.shape[0], -1))),
                            tf.stop_gradient(tf.reshape(variance, (h.shape[0], -1)))))
    inv = tf.math.rsqrt(variance + op.epsilon) * tf.reshape(gamma, shape)
    return (h * inv + (tf.reshape(beta, shape) - mean * inv)) * tf.reshape(mask, shape)


def _layer_normalize(h, op, affine, mask):
    """A LayerNormalization of ``h`` (k, batch, *positions, channels) over each candidate's channels (``mask``
    (k, channels): the padded ones, zero, are left out of the moments and stay zero; None: the model's input's,
    none padded), as Keras computes it (``tf.nn.moments``, then ``x * inv + (beta - mean * inv)``)."""
    shape = (h.shape[0],) + (1,) * (len(h.shape) - 2) + (h.shape[-1],)
    gamma, beta = (tf.reshape(t, shape) for t in affine)
    if mask is None:
        mean = tf.reduce_mean(h, -1, keepdims=True)
        variance = tf.reduce_mean(tf.math.squared_difference(h, tf.stop_gradient(mean)), -1, keepdims=True)
    else:
        mask = tf.reshape(mask, shape)
        count = tf.maximum(tf.reduce_sum(mask, -1, keepdims=True), 1.0)  # an empty slot's: no 0 / 0
        mean = tf.reduce_sum(h * mask, -1, keepdims=True) / count
        variance = tf.reduce_sum(tf.math.squared_difference(h, tf.stop_gradient(mean)) * mask, -1,
                                 keepdims=True) / count
    inv = tf.math.rsqrt(variance + op.epsilon) * gamma
    h = h * inv + (beta - mean * inv)
    return h if mask is None else h * mask


def _depthwise(h, op, kernel, bias, mask):
    """A DepthwiseConv (depth multiplier 1) of ``h`` (k, batch, *spatial, channels) with each candidate's own
    (k, *window, channels) kernel: each channel's image patches (:func:`_patches`, window position first) times its
    weights, summed over the window; then bias, activation and the padded channels' mask. The patches of a hidden
    activation cost what a Conv layer's do (a 3x3 one on 16 channels of 12x12 about as much as a 3x3 Conv of 16
    filters): other ways measured no faster (the window's shifted inputs summed one by one: 13.9 against 12.3 s for
    10 epochs of a separable CNN's 3 candidates; a product with a kernel zero but from each channel to itself, which
    does channels times the multiply-adds) or far slower (XLA's grouped convolution of every candidate's channels
    side by side: eighteen times)."""
    k, channels = h.shape[0], h.shape[-1]
    patches = _patches(h, op, 2)  # (k, batch, *out, window * channels)
    window = math.prod(op.window)
    patches = tf.reshape(patches, (*patches.shape[:-1], window, channels))
    shape = (k,) + (1,) * (len(patches.shape) - 3) + (window, channels)
    z = tf.reduce_sum(patches * tf.reshape(kernel, shape), axis=-2)
    broadcast = (k,) + (1,) * (len(z.shape) - 2) + (channels,)
    if op.bias:
        z = z + tf.reshape(bias, broadcast)
    return _activate(op, z) * tf.reshape(mask, broadcast)


def _pooled_after(plan) -> dict:
    """{index of a Dense/Conv op: the max pooling that follows it} where the pooling can come first.

    Bias, mask and the activations a hidden layer may have are the same for every position of a channel and do not
    decrease, so the window's largest output is the output of its largest pre-activation: max-pooling the
    pre-activations, then adding the bias, activating and masking the 4x smaller result gives the same values, and
    the gradient reaches the same position (but where two positions of a window tie exactly). Only for windows that
    do not overlap (the pooling as a reshape and a reduction, :func:`_pool`)."""
    readers = collections.Counter(i for op in plan for i in op.inputs)
    return {n: after for n, (op, after) in enumerate(zip(plan, plan[1:]))
            if op.projection and _monotone(op) and after.kind == "pool" and after.pooling == "MAX"
            and _reshaped_pool(after) and after.inputs == (n,) and readers[n] == 1}


def _reshaped_pool(op) -> bool:
    return op.padding == "VALID" and op.window == op.strides


def _pooled_positions(pool):
    """The output positions (per spatial axis) a following pooling reads, as a :func:`_patches` limit; None:
    all."""
    return None if pool is None else tuple(pool.window)


def _input_patches(plan, x):
    """The first convolution's patches of the samples ``x`` (samples, *spatial, channels), computed once for a whole
    fit (its input never changes; a batch gathers its rows), or None when the model does not start with a
    convolution or they would take more than PATCH_BYTES (each batch then takes its patches)."""
    if plan[0].kind != "conv" or any(-1 in op.inputs for op in plan[1:]) \
            or x.nbytes * math.prod(plan[0].window) / math.prod(plan[0].strides) > PATCH_BYTES:
        return None
    pool = _pooled_after(plan).get(0)
    patches = _patches(tf.constant(x), plan[0], 1, _pooled_positions(pool))
    if pool is None:
        return patches
    # positions ordered window offset first, (samples, window positions, *pooled positions, features): the
    # pooling that follows (_pooled_after) is then a maximum of whole slabs, cheaper than one over strided windows
    out = [n // w for n, w in zip(patches.shape[1:-1], pool.window)]
    split = [patches.shape[0]] + [d for o, w in zip(out, pool.window) for d in (o, w)] + [patches.shape[-1]]
    axes = len(out)
    order = [0] + [2 + 2 * i for i in range(axes)] + [1 + 2 * i for i in range(axes)] + [1 + 2 * axes]
    patches = tf.transpose(tf.reshape(patches, split), order)
    return tf.reshape(patches, (patches.shape[0], math.prod(pool.window), *out, patches.shape[-1]))


FEW_ROWS_NUMBERS = 1024  # the numbers a row of one or two candidates' random draws holds before a third row is drawn


def _unit_uniforms(shape, seeds, batch_index, layer, draws=1):
    """Uniform numbers for a random layer of output ``shape`` (k, batch, ..., units), as (k, units, draws, values a
    unit has): candidate j's from the Philox stream of seed (seeds[j] + layer, batch_index), unit by unit (all of a
    unit's ``draws`` times its values before the next unit's). The stream is filled in order, so a wider padding
    only appends numbers: a candidate's real units draw the same whatever the batch is padded to. Every
    candidate's numbers come from one fused expression (:func:`keras_grs.evaluate.philox.stateless_uniform`, the
    numbers of ``tf.random.stateless_uniform``)."""
    rest, units = shape[1:-1], shape[-1]
    numbers = draws * units * math.prod(rest)
    # XLA's CPU backend emits the numbers of one or two rows far slower than of three once a row holds more than
    # about a thousand, in a training program (a convolution's dropout, cnn1: 10 epochs of 2 slots in 5.9 s, 1.1 s
    # drawn as 3 rows; a GRS step of an MLP of 128, 64 and 32 units with dropout, 2 slots, 20 epochs: 5.1 s, 0.4 s;
    # a Dense of 40 units: 0.61 s, 0.12 s; of 32 units, 1,024 numbers a row: not slower): one or two candidates
    # draw rows up to a third that nobody uses. Rows are independent streams, so the masks are the same numbers.
    # (nn1's dropouts, 32 units and fewer, train 10% slower with the third row.)
    if shape[0] < 3 and (numbers > FEW_ROWS_NUMBERS or len(shape) > 3):
        seeds = tf.pad(seeds, [[0, 3 - shape[0]]])
    uniform = stateless_uniform(seeds + layer, batch_index, numbers)[: shape[0]]
    return tf.reshape(uniform, (shape[0], units, draws, -1))


def _by_unit(values, shape):
    """(k, units, values a unit has) laid out as ``shape`` (k, batch, ..., units)."""
    return tf.reshape(tf.transpose(values, (0, 2, 1)), shape)


def _dropout_keep(shape, seeds, batch_index, layer, rate):
    """The keep mask (k, batch, ..., units) of a dropout layer (:func:`_unit_uniforms`, one draw a value)."""
    return _by_unit(_unit_uniforms(shape, seeds, batch_index, layer)[:, :, 0], shape) >= rate


def _standard_normal(shape, seeds, batch_index, layer):
    """Standard normal numbers (k, batch, ..., units) for a noise layer: Box-Muller from two draws a value
    (:func:`_unit_uniforms`)."""
    uniform = _unit_uniforms(shape, seeds, batch_index, layer, draws=2)
    normal = tf.sqrt(-2.0 * tf.math.log(1.0 - uniform[:, :, 0])) * tf.cos(2.0 * math.pi * uniform[:, :, 1])
    return _by_unit(normal, shape)


def _matmul(h, kernel, shared, k):
    """(k,) batch, *positions, inputs times a (k, inputs, outputs) kernel -> (k, batch, *positions, outputs).

    One batched product per layer: XLA computes each candidate's slice alike whatever its batch-mates. For a Dense
    chain it does so whatever the number of slots, from 2 on (a batch of one becomes another kind of product,
    rounded differently), but not for a convolution's products (cnn1's scores differ between 3 and 5 slots): the
    evaluator fixes their number once (:meth:`BatchedEvaluator._fix_slots`).
    A shared input is broadcast to every candidate rather than multiplied once by the kernels side by side: that
    wider product rounds a candidate's columns differently as the number of candidates changes, so a candidate's
    validation scores depended on its batch-mates (``tests/test_faults_twin.py``). A batched product also puts
    fewer, larger kernels in a training step than one 2-D product per candidate (an nn1 step of 3 candidates: 76
    instead of 152), and an einsum with broadcast positions would be lowered to a much slower loop (a cnn1 epoch of
    5 candidates: 726 ms as an einsum, 198 ms as matmuls).
    """
    n_in, n_out = kernel.shape[1], kernel.shape[2]
    if shared:
        h = tf.broadcast_to(h[None], (k, *h.shape))
    lead = h.shape[1:-1]
    return tf.reshape(tf.matmul(tf.reshape(h, (k, -1, n_in)), kernel), (k, *lead, n_out))


def _patches(h, op, lead, multiple=None):
    """Image patches of a convolution: (..., *spatial, channels) -> (..., *out_spatial, window * channels),
    ordered (window position, channel) like a Keras kernel reshaped to (-1, filters); a dilated window's positions
    ``dilation`` apart, and ``causal`` padding (a Conv1D's) all before the sequence, as Keras pads. ``multiple``: per
    spatial axis, keep only the first output positions that fill whole multiples of it (what a following pooling of
    that window reads), or None for all."""
    spatial = h.shape[lead:-1]
    dilation = op.dilation or (1,) * len(op.window)
    extent = [(w - 1) * d + 1 for w, d in zip(op.window, dilation)]  # what one window spans
    if op.padding in ("same", "causal"):
        pads = [[0, 0]] * lead
        for size, span, stride in zip(spatial, extent, op.strides):
            total = max((math.ceil(size / stride) - 1) * stride + span - size, 0)
            pads.append([span - 1, 0] if op.padding == "causal" else [total // 2, total - total // 2])
        h = tf.pad(h, pads + [[0, 0]])
        spatial = h.shape[lead:-1]
    out = [(size - span) // stride + 1 for size, span, stride in zip(spatial, extent, op.strides)]
    if multiple is not None:
        out = [n - n % m for n, m in zip(out, multiple)]
    pieces = []
    for offset in np.ndindex(*op.window):
        index = [slice(None)] * lead
        index += [slice(o * d, o * d + (n - 1) * s + 1, s) for o, d, n, s in zip(offset, dilation, out, op.strides)]
        pieces.append(h[tuple(index)])
    return tf.concat(pieces, axis=-1)


def _pool(h, op, k):
    """Max or average pooling of (k, batch, *spatial, channels)."""
    if _reshaped_pool(op):
        # non-overlapping windows as a reshape and a reduction: XLA's select-and-scatter gradient of max_pool is
        # several times slower on CPU
        spatial = h.shape[2:-1]
        out = [n // w for n, w in zip(spatial, op.window)]
        h = h[(slice(None), slice(None), *(slice(0, o * w) for o, w in zip(out, op.window)))]
        shape = [k, -1]
        for o, w in zip(out, op.window):
            shape += [o, w]
        h = tf.reshape(h, shape + [h.shape[-1]])
        axes = [3 + 2 * i for i in range(len(out))]
        if op.pooling == "AVG":
            return tf.reduce_mean(h, axis=axes)
        return _window_max(h, axes)
    flat = tf.reshape(h, (-1, *h.shape[2:]))
    pooled = tf.nn.pool(flat, op.window, op.pooling, strides=op.strides, padding=op.padding)
    return tf.reshape(pooled, (k, -1, *pooled.shape[1:]))


def _window_max(h, axes):
    """reduce_max over ``axes``, whose gradient is one fused select: each window's gradient goes to its largest
    element. (reduce_max's own gradient first counts each window's ties to split the gradient among them, which cost
    a cnn1 epoch more than its convolutions' products: benchmarks/results/conv_profile.md.) Exact ties still share
    it, each tie receiving the whole; Keras' max pooling gives it to one of them. Ties of values that carry a
    gradient are rare: a ReLU's zeros get none, and the pre-activations a pooling before the bias reads
    (:func:`_pooled_after`) tie only where the patches are equal, which then give the kernel the same gradient."""

    @tf.custom_gradient
    def window_max(h):
        largest = tf.reduce_max(h, axis=axes, keepdims=True)

        def gradient(upstream):
            return tf.where(tf.equal(h, largest), tf.reshape(upstream, largest.shape), 0.0)

        return tf.squeeze(largest, axes), gradient

    return window_max(h)
