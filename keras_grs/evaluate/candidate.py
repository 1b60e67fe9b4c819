"""Candidates as arrays: a pruning candidate built as a Keras model only when something needs one.

Building a candidate's Keras model (``surgery.resized``: every layer constructed, every variable created and
randomly initialised, then overwritten by the inherited weights) cost more than fine-tuning it with the batched
evaluator. A :class:`Candidate` is a child of a trained parent held as its per-layer weight arrays (the parent's
surviving weights). What a batched search asks of it is answered from the arrays and the first built ancestor
(whose layer kinds and configurations it shares; only channel counts differ): the weights the batched evaluator
stacks and writes back, params, FLOPs and estimated latency (from the arrays and the resized shapes), unit norms,
the checkpoint (written from the arrays in the layout of the topology), and its own children (cut from its arrays
along ``Structure.kept``). Anything else (``fit`` for the keras evaluator, the guard's predictions) materialises
the model once: ``build()`` and the arrays, what the runner did for every candidate before.

Example:
    >>> import keras_grs
    >>> from keras_grs.evaluate.candidate import Candidate, measure
    >>> from keras_grs.structure import analyze
    >>> from keras_grs.surgery import kept_units, resized
    >>> parent = keras_grs.models.build("nn1", (140,))
    >>> structure = analyze(parent)
    >>> child = Candidate(parent, structure, kept_units(structure, {"dense2": [0, 3]}),
    ...                   build=lambda: resized(parent, {"dense2": 14}))
    >>> lazy = measure(child)
    >>> child.materialized
    False
    >>> lazy == measure(child.materialize())
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import keras
import numpy as np

from keras_grs.costs import count_flops, count_params
from keras_grs.layers import gated_kernel, kind_of
from keras_grs.importance import unit_norms
from keras_grs.latency import latency_ms
from keras_grs.structure import (BATCHED_GRAPH_LAYERS, Structure, UnsupportedLayerError, analyze, layer_graph,
                                 leaf_layers)
from keras_grs.surgery import set_chain_weights, surviving_weights


class Candidate:
    """A child of ``parent`` with the ``keep`` units of each group, as weight arrays (see the module docstring).

    Attributes it answers itself: ``template`` (a Keras model of its topology: the first built ancestor, which
    gives the layer kinds, configurations and compile), ``name``, ``structure`` (its own width groups), ``arrays``
    (per layer name, its weights in ``layer.get_weights()`` order), :meth:`shapes`, :attr:`materialized`. Any other
    attribute is the materialised model's (``candidate.fit``, ``.predict``, ``.get_weights()``): the first such use
    builds it.

    Args:
        parent: the trained parent: a Keras model or a candidate (of a chain whose weighted layers are Dense and
            Conv: :meth:`possible`).
        structure: the parent's width groups (``analyze(parent)``, or a candidate's ``structure``).
        keep: per changed group, the units of the parent it keeps (:func:`keras_grs.surgery.kept_units`).
        build: ``build() -> model``: the child's Keras model, compiled, freshly initialised (its weights are then
            set from the arrays).
    """

    def __init__(self, parent, structure: Structure, keep: Mapping[str, np.ndarray], build: Callable):
        parent = parent.materialize() if isinstance(parent, Candidate) and parent.materialized else parent
        held = isinstance(parent, Candidate)
        self.template = parent.template if held else parent
        self._build = build
        self._layers = leaf_layers(self.template)
        values = [parent.arrays[layer.name] for layer in self._layers] if held else None
        self.arrays = {layer.name: weights for layer, weights
                       in zip(self._layers, surviving_weights(self.template, keep, structure, values))}
        self.structure = structure.kept(keep)
        # the shapes the built model would have: the parent's, the channels of the changed groups cut
        before = parent.shapes() if held else {layer.name: (_shape(layer.input), _shape(layer.output))
                                               for layer in self._layers}
        steps = {step.name: step for step in structure.steps}
        kept_mask = structure.keeper(keep)
        self._shapes = {}
        for layer in self._layers:
            step, (shape_in, shape_out) = steps[layer.name], before[layer.name][:2]
            self._shapes[layer.name] = (_kept(shape_in, kept_mask(step.inputs[0] if step.inputs else None)),
                                        _kept(shape_out, kept_mask(step.output)),
                                        [np.shape(v) for v in self.arrays[layer.name]])
        self._model = None

    @staticmethod
    def possible(parent) -> bool:
        """Whether children of ``parent`` can be held as arrays: a chain, or a graph joined by merges and
        concatenations, whose weighted layers are Dense, Conv, SeparableConv, DepthwiseConv, BatchNormalization,
        PReLU, LayerNormalization, LSTM, GRU or SimpleRNN (what the batched evaluator trains; their weights are cut
        by the weights alone), or a Normalization (at the input, never cut)."""
        template = template_of(parent)
        try:
            layer_graph(template, BATCHED_GRAPH_LAYERS)
        except UnsupportedLayerError:
            return False
        return all(kind_of(layer).batched in ("dense", "conv", "separable", "norm", "depthwise", "prelu", "layernorm",
                                              "recurrent", "input")
                   for layer in leaf_layers(template)
                   if layer.weights)

    @property
    def name(self) -> str:
        return self.template.name

    @property
    def materialized(self) -> bool:
        return self._model is not None

    def materialize(self) -> keras.Model:
        """The candidate's Keras model with its current arrays (built once). From then on it is its own template,
        so a candidate holds no built ancestor but the first."""
        if self._model is None:
            model = self._build()
            set_chain_weights(model, [self.arrays[layer.name] for layer in self._layers])
            self._model = self.template = model
            self._layers = leaf_layers(model)
        return self._model

    def __getattr__(self, name):
        if name.startswith("_"):  # never materialise for a private lookup (copying, pickling probes)
            raise AttributeError(name)
        return getattr(self.materialize(), name)

    def assign(self, layer: str, values) -> None:
        """New weights for one layer (the batched evaluator's chosen epoch), in ``get_weights()`` order."""
        if [np.shape(v) for v in values] != [np.shape(v) for v in self.arrays[layer]]:
            raise ValueError(f"layer {layer!r} has weights of shapes {[np.shape(v) for v in self.arrays[layer]]}, "
                             f"got {[np.shape(v) for v in values]}")
        self.arrays[layer] = list(values)
        if self._model is not None:
            self._model.get_layer(layer).set_weights(values)

    def named_arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """Per layer name, its arrays by variable name (``kernel``, ``bias``)."""
        return {layer.name: dict(zip([w.name for w in layer.weights], self.arrays[layer.name]))
                for layer in self._layers}

    def shapes(self) -> dict[str, tuple]:
        """Per layer name: input shape, output shape (no batch axis) and weight shapes, as its built model has."""
        return self._shapes

    def __repr__(self) -> str:
        state = "materialized" if self.materialized else "as arrays"
        return f"<Candidate of {self.template.name!r}, {state}>"


def _shape(tensor) -> tuple[int, ...]:
    """A tensor's shape without the batch axis; of a merge's or a concatenation's inputs, the first one's (as
    :mod:`keras_grs.latency` reads a layer's input)."""
    tensor = tensor[0] if isinstance(tensor, (list, tuple)) else tensor
    return tuple(int(d) for d in tensor.shape[1:])


def _kept(shape, mask):
    """``shape`` with its channel axis cut to the channels ``mask`` keeps (None: all)."""
    return shape if mask is None else (*shape[:-1], int(mask.sum()))


def realized(model):
    """``model`` as a Keras model: a :class:`Candidate` materialised, anything else as it is."""
    return model.materialize() if isinstance(model, Candidate) else model


def template_of(model):
    """A Keras model with ``model``'s layer kinds and configurations: a :class:`Candidate`'s parent, or ``model``."""
    return model.template if isinstance(model, Candidate) else model


def measure(model) -> dict:
    """``params``, ``flops`` and ``latency_ms`` (estimated Pi Zero milliseconds) of a Keras model or a
    :class:`Candidate` (from its arrays and shapes, without building it)."""
    if isinstance(model, Candidate) and not model.materialized:
        return {"params": int(sum(np.size(v) for values in model.arrays.values() for v in values)),
                "flops": count_flops(model.template, weights=model.named_arrays()),
                "latency_ms": latency_ms(model.template, shapes=model.shapes())}
    model = realized(model)
    return {"params": count_params(model), "flops": count_flops(model), "latency_ms": latency_ms(model)}


def norms_of(model) -> dict[str, list[float]]:
    """:func:`keras_grs.importance.unit_norms` of a Keras model or a :class:`Candidate` (from its kernels)."""
    if isinstance(model, Candidate) and not model.materialized:
        # a producer's output kernel: a SeparableConv's pointwise one, a recurrent layer's kernels by gate
        # (keras_grs.layers.output_kernel)
        kernels = {name: gated_kernel(values["kernel"], values["recurrent_kernel"]) if "recurrent_kernel" in values
                   else values.get("pointwise_kernel", values.get("kernel"))
                   for name, values in model.named_arrays().items() if {"kernel", "pointwise_kernel"} & set(values)}
        return unit_norms(model.template, model.structure, kernels)
    return unit_norms(realized(model))


def structure_of(model) -> Structure:
    """The width groups of a Keras model (``analyze``) or a :class:`Candidate` (without building it)."""
    if isinstance(model, Candidate) and not model.materialized:
        return model.structure
    return analyze(realized(model))
