"""Unit importance: how much each unit of a width group matters in a trained model.

The weight-magnitude selection (NWM, ``units="magnitude"``) removes the units with the smallest L1 norm of their
incoming weights; the backends record these norms per trained candidate so the search can read them back.

Example:
    >>> import keras
    >>> from keras_grs.importance import unit_norms
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="hidden"), keras.layers.Dense(1)])
    >>> _ = model.get_layer("hidden").kernel.assign([[1.0, -2.0], [0.5, 0.0], [-0.5, 1.0]])
    >>> unit_norms(model)
    {'hidden': [2.0, 3.0]}
"""

from __future__ import annotations

import keras
import numpy as np

from keras_grs.layers import output_kernel
from keras_grs.structure import analyze


def unit_norms(model: keras.Model, structure=None, kernels=None) -> dict[str, list[float]]:
    """For every width group of ``model`` (by layer name): the L1 norm of each unit's incoming weights (bias
    excluded). ``structure``: ``analyze(model)``, when at hand; ``kernels``: by layer name, kernels that stand in
    for the layers' own (a pruning candidate of ``model``'s topology not built as a Keras model)."""
    norms = {}
    for group in (structure if structure is not None else analyze(model)).groups:
        if kernels is not None:
            kernel = kernels[group.layer]
        else:  # the kernel whose last axis is the units: a SeparableConv's pointwise one
            kernel = np.asarray(output_kernel(model.get_layer(group.layer)))
        norms[group.name] = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0).tolist()
    return norms
