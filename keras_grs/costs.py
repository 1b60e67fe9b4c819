"""Parameter and FLOP counts, with the conventions of the seed's tables.

* Params: every weight of the model (kernels, biases, BatchNormalization gamma/beta/moving statistics), as
  ``model.count_params()`` counts them.
* FLOPs: 2 per multiply-accumulate (MAC) of the layers that multiply weights by activations, by the MAC rule of
  each layer kind in :mod:`keras_grs.layers`:

  - Dense on an input of shape (..., n): n x units MACs at each of its (...) positions;
  - Conv: kernel_size x in_channels x filters MACs at each output position (border positions of ``same`` padding
    counted in full, as most FLOP counters do);
  - DepthwiseConv: kernel_size x channels x depth_multiplier MACs at each output position;
  - SeparableConv: its depthwise half plus its 1x1 pointwise half (channels x depth_multiplier x filters), both at
    each output position.

  Nothing else is counted: bias additions, activations, pooling, BatchNormalization (which folds into the preceding
  layer at inference), and merges (Add, Multiply, Concatenate, ...: element-wise or copying, no MACs).
* ``nonzero=True`` counts only non-zero weights, and only the MACs of non-zero kernel entries: the figures of a
  model after EUP thresholding.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_grs.layers import kind_of
from keras_grs.structure import UnsupportedLayerError, leaf_layers


def count_params(model: keras.Model, nonzero: bool = False) -> int:
    """Number of weights (kernels, biases, normalization statistics) of ``model``.

    Example:
        >>> import keras_grs
        >>> keras_grs.count_params(keras_grs.models.build("nn2", (140,)))
        4578
    """
    if not nonzero:
        return int(sum(int(np.prod(w.shape)) for w in model.weights))
    return int(sum(int(np.count_nonzero(keras.ops.convert_to_numpy(w))) for w in model.weights))


def count_flops(model: keras.Model, nonzero: bool = False, weights=None) -> int:
    """FLOPs of one inference (one sample): 2 per multiply-accumulate (see the module docstring). ``weights``: as
    for :func:`flops_by_layer`.

    Example:
        >>> import keras_grs
        >>> keras_grs.count_flops(keras_grs.models.build("nn2", (140,)))
        9088
    """
    return int(sum(flops_by_layer(model, nonzero=nonzero, weights=weights).values()))


def flops_by_layer(model: keras.Model, nonzero: bool = False, weights=None) -> dict[str, int]:
    """FLOPs of each layer that performs MACs (Dense, Conv, DepthwiseConv, SeparableConv), by name, in graph order.

    ``weights``: per layer name, its arrays by variable name (``kernel``, ``bias``, ...): the FLOPs of a model of
    ``model``'s topology with other channel counts (a pruning candidate not built as a Keras model).

    Raises UnsupportedLayerError for a layer keras-grs does not know (named with its class), or one whose input
    has a size the model leaves open (a sequence of any length): the FLOPs of one inference need them all."""
    flops = {}
    for layer in leaf_layers(model):
        macs = kind_of(layer).macs
        if macs is not None:
            shape = tuple(layer.input.shape[1:])  # a layer that multiplies has one input
            if None in shape:
                raise UnsupportedLayerError(
                    f"layer {layer.name!r} ({type(layer).__name__}) reads inputs of shape {shape}, whose size None is "
                    "left open: keras-grs counts FLOPs, estimates latency and writes C for one fixed shape; build the "
                    "model with every input size but the batch's given (keras.Input((steps, channels)))")
            flops[layer.name] = 2 * macs(layer, nonzero, None if weights is None else weights[layer.name])
    return flops
