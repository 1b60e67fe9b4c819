"""Parameter and FLOP counts, with the conventions of the seed's tables.

* Params: every weight of the model (kernels, biases, BatchNormalization gamma/beta/moving statistics), as
  ``model.count_params()`` counts them.
* FLOPs: 2 per multiply-accumulate of Dense and Conv layers, nothing else. A Dense layer applied to an input of
  shape (..., n) performs n x units MACs at each of its (...) positions; a Conv layer performs
  kernel_size x in_channels x filters MACs at each output position (border positions of ``same`` padding counted
  in full, as most FLOP counters do). Bias additions, activations, pooling and BatchNormalization (which folds
  into the preceding layer at inference) are not counted.
* ``nonzero=True`` counts only non-zero weights, and only the MACs of non-zero kernel entries: the figures of a
  model after EUP thresholding.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_grs.structure import WIDTH_LAYERS, layer_chain


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


def count_flops(model: keras.Model, nonzero: bool = False) -> int:
    """FLOPs of one inference (one sample): 2 per multiply-accumulate of Dense and Conv layers.

    Example:
        >>> import keras_grs
        >>> keras_grs.count_flops(keras_grs.models.build("nn2", (140,)))
        9088
    """
    return int(sum(flops_by_layer(model, nonzero=nonzero).values()))


def flops_by_layer(model: keras.Model, nonzero: bool = False) -> dict[str, int]:
    """FLOPs of each Dense/Conv layer, by layer name, in model order."""
    flops = {}
    for layer in layer_chain(model):
        if not isinstance(layer, WIDTH_LAYERS):
            continue
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        weights = int(np.count_nonzero(kernel)) if nonzero else kernel.size
        if isinstance(layer, keras.layers.Dense):
            positions = int(np.prod(layer.input.shape[1:-1]))
        else:
            positions = int(np.prod(layer.output.shape[1:-1]))
        flops[layer.name] = 2 * positions * weights
    return flops
