"""The typed operations of the C description: one class per actor kind, holding numbers, arrays and shapes.

:func:`c_backend.ir.describe` makes them from a Keras model, :mod:`c_backend.quantize` turns the float ones into
their int8 forms, and the templates (``templates/kernels/<kind>.c.j2``, chosen by ``kind``) lay them out; C
literals are written by the templates' filters (:mod:`c_backend.export`), never stored here. Weights are numpy
arrays in the order the kernel reads them (float64 for float kernels, integers for int8 ones).

    >>> from c_backend.ops import Dense
    >>> op = Dense(layer="d", actor="m_d", in_shape=(4,), out_shape=(3,), inputs=4, units=3)
    >>> op.kind, op.prefix, op.in_size, op.positions, op.channels
    ('dense', 'M_D', 4, 1, 3)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass(kw_only=True, eq=False)
class Op:
    """What every actor has: its names, shapes, activation, element types, work buffer and graph edges."""

    kind: ClassVar[str]
    layer: str  # the Keras layer, as a C identifier
    actor: str  # the actor's C name
    in_shape: tuple
    out_shape: tuple
    activation: str = "linear"
    description: str = ""
    in_type: str = "float"
    out_type: str = "float"
    scratch: tuple | None = None  # (C type, count) of a work buffer the actor needs, kept in the model's context
    # the dataflow graph (c_backend.ir.wire): the ops read (None: the model input), FIFO numbers, C port names
    sources: list = field(default_factory=list)
    in_fifos: list = field(default_factory=list)
    out_fifos: list = field(default_factory=list)
    in_ports: list = field(default_factory=list)
    out_ports: list = field(default_factory=list)
    in_vars: list = field(default_factory=list)
    # int8: (scale, zero point) of the input and output tensors
    input_q: tuple | None = None
    output_q: tuple | None = None
    # while describing: the Keras layer whose output this op produces, and the one before its activation (int8
    # calibration reads them)
    keras_source: Any = field(default=None, repr=False)
    keras_pre: Any = field(default=None, repr=False)

    @property
    def prefix(self) -> str:
        return self.actor.upper()

    @property
    def in_size(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def out_size(self) -> int:
        return int(np.prod(self.out_shape))

    @property
    def channels(self) -> int:
        return int(self.out_shape[-1])

    @property
    def positions(self) -> int:
        return self.out_size // self.channels

    @property
    def input_scale(self) -> float:
        return self.input_q[0]

    @property
    def input_zero(self) -> int:
        return self.input_q[1]

    @property
    def output_scale(self) -> float:
        return self.output_q[0]

    @property
    def output_zero(self) -> int:
        return self.output_q[1]

    def retyped(self, cls, **changes):
        """This op as an instance of ``cls`` (its int8 or sparse form), the shared fields kept."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in names}
        return cls(**{**values, **changes})


@dataclass(kw_only=True, eq=False)
class Weighted(Op):
    """An op with weights: ``raw`` is ``([outputs][inputs] weights, bias)`` in float64 until it is packed into
    ``weights`` and ``bias`` in the kernel's order, with the ``blocks`` of outputs computed together."""

    raw: tuple | None = field(default=None, repr=False)
    weights: np.ndarray | None = field(default=None, repr=False)
    bias: np.ndarray | None = field(default=None, repr=False)
    blocks: list = field(default_factory=list)  # {"size", "count", "start"} of output units


@dataclass(kw_only=True, eq=False)
class Window:
    """Sizes of a 2-D sliding window (1-D layers have height 1)."""

    in_h: int
    in_w: int
    out_h: int
    out_w: int
    s_h: int = 1
    s_w: int = 1
    pad_t: int = 0
    pad_l: int = 0


@dataclass(kw_only=True, eq=False)
class Activation(Op):
    kind: ClassVar[str] = "activation"


@dataclass(kw_only=True, eq=False)
class Affine(Op):
    """A scale and shift per channel (BatchNormalization, Normalization, Rescaling, ``x * c + d`` ops)."""

    kind: ClassVar[str] = "affine"
    scale: np.ndarray
    shift: np.ndarray


@dataclass(kw_only=True, eq=False)
class Dense(Weighted):
    kind: ClassVar[str] = "dense"
    inputs: int
    units: int


@dataclass(kw_only=True, eq=False)
class SparseDense(Dense):
    """A Dense layer stored in compressed rows: ``row_start[u]`` to ``row_start[u + 1]`` index ``column`` and
    ``nonzero_values``."""

    kind: ClassVar[str] = "dense_sparse"
    row_start: np.ndarray
    column: np.ndarray
    nonzero_values: np.ndarray
    nonzero: int
    density: float
    index_type: str


@dataclass(kw_only=True, eq=False)
class Kernel(Weighted, Window):
    """A convolution's input channels and kernel size."""

    in_c: int
    k_h: int
    k_w: int


@dataclass(kw_only=True, eq=False)
class Conv(Kernel):
    """``out_h`` x ``out_w`` are the convolution's own output; with ``pool`` (float32: a max/average pooling whose
    windows do not overlap, the only reader of the convolution's output) the actor writes the pooled output
    (``out_shape``) and the convolution's output never leaves it. With ``group``, ``weights`` holds per filter its
    weights then its bias, and ``blocks`` is empty."""

    kind: ClassVar[str] = "conv"
    filters: int
    pool: Pool | None = field(default=None, repr=False)
    group: int = 0  # output positions computed together (c_backend.ir.position_group; 0: one at a time)
    together: int = 1  # filters per pass of the grouped kernel on the VFP (c_backend.ir.filters_together)


@dataclass(kw_only=True, eq=False)
class Depthwise(Kernel):
    """Output channel c * multiplier + j reads input channel c only."""

    kind: ClassVar[str] = "depthwise"
    multiplier: int


@dataclass(kw_only=True, eq=False)
class Pool(Op, Window):
    kind: ClassVar[str] = "pool"
    mode: str  # max or avg
    p_h: int
    p_w: int


@dataclass(kw_only=True, eq=False)
class GlobalPool(Op):
    kind: ClassVar[str] = "global_pool"
    mode: str
    spatial: int


@dataclass(kw_only=True, eq=False)
class Pad(Op, Window):
    """Zero padding: the input written at (top, left) of the output."""

    kind: ClassVar[str] = "pad"
    top: int
    left: int


@dataclass(kw_only=True, eq=False)
class Crop(Pad):
    """Cropping: the output read from (top, left) of the input."""

    kind: ClassVar[str] = "crop"


@dataclass(kw_only=True, eq=False)
class Merge(Op):
    kind: ClassVar[str] = "merge"
    mode: str  # add, subtract, multiply, average, maximum, minimum
    broadcast: list  # per input: one value per channel, used at every position


@dataclass(kw_only=True, eq=False)
class Concat(Op):
    kind: ClassVar[str] = "concat"
    widths: list  # channels of each input


# int8 (c_backend.quantize)

@dataclass(kw_only=True, eq=False)
class Quantize(Op):
    kind: ClassVar[str] = "quantize"


@dataclass(kw_only=True, eq=False)
class Dequantize(Op):
    kind: ClassVar[str] = "dequantize"


@dataclass(kw_only=True, eq=False)
class Int8Weights:
    """The int8 kernels' weights (16-bit, packed for SMLAD), int32 biases with the input's zero point folded in, and
    the per-channel requantization (multiplier, right shift, SMMLAR's rounding term), clamped to [act_min, act_max]."""

    multiplier: np.ndarray | None = field(default=None, repr=False)
    shift: np.ndarray | None = field(default=None, repr=False)
    rounding: np.ndarray | None = field(default=None, repr=False)
    act_min: int = -128
    act_max: int = 127
    fast_requantize: bool = False


@dataclass(kw_only=True, eq=False)
class DenseInt8(Dense, Int8Weights):
    kind: ClassVar[str] = "dense_int8"


@dataclass(kw_only=True, eq=False)
class ConvInt8(Conv, Int8Weights):
    kind: ClassVar[str] = "conv_int8"
    inside: bool = False  # every window inside the input
    small_patch: bool = False  # a patch of at most 4 values: one record per filter, two positions at once
    records: np.ndarray | None = field(default=None, repr=False)
    row_walk: bool = False  # windows read in place, row by row
    columns: bool = False  # a two-position kernel walking rows by column words, 4 positions a record (quantize.columns)


@dataclass(kw_only=True, eq=False)
class PoolInt8(Pool):
    kind: ClassVar[str] = "pool_int8"
    inside: bool = False
    words: bool = False  # max pooling 4 channels at a time


@dataclass(kw_only=True, eq=False)
class GlobalPoolInt8(GlobalPool):
    """Global max keeps its input's parameters; global average is TFLite's MEAN, rescaled in float32 by ``ratio``
    and ``offset``."""

    kind: ClassVar[str] = "global_pool_int8"
    ratio: float = 1.0
    offset: float = 0.0


@dataclass(kw_only=True, eq=False)
class SoftmaxInt8(Op):
    kind: ClassVar[str] = "softmax_int8"


@dataclass(kw_only=True, eq=False)
class TableInt8(Op):
    """An elementwise function as ``tables`` tables of 256 int8 results (one per channel, or one for all)."""

    kind: ClassVar[str] = "table_int8"
    table: np.ndarray = field(repr=False)
    tables: int
