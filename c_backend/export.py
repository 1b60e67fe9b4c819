"""Render a Keras model as LIDE-style dataflow C from the templates in ``c_backend/templates``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np

from c_backend.ir import c_identifier, describe
from c_backend.ops import Op
from c_backend.targets import TARGETS, get
from keras_grs.files import write_text

TEMPLATES = Path(__file__).parent / "templates"
RUNTIME = ("lide_c_fifo.h", "lide_c_fifo.c", "lide_c_actor.h", "lide_c_graph.h", "lide_c_graph.c")


def c_float(value) -> str:
    """A float32 C literal that reads back as the same float32 (``0.1`` -> ``0.100000001f``)."""
    value = float(np.float32(value))
    if not np.isfinite(value):
        raise ValueError(f"a weight is not finite ({value}); the model cannot be exported")
    text = format(value, ".9g")
    if "e" not in text and "." not in text:
        text += ".0"
    return text + "f"


def c_literals(values) -> list[str]:
    """C literals of an array: float32 ones for floats, integers as they are."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        return [c_float(v) for v in values.ravel()]
    if values.dtype.kind in "iu":
        return [str(int(v)) for v in values.ravel()]
    raise TypeError(f"cannot write an array of {values.dtype} as C literals")


@dataclass(frozen=True)
class Export:
    """What :func:`export` wrote: the directory, the C name of the model, its files and operations."""

    directory: Path
    name: str
    files: tuple[str, ...]
    ops: tuple[Op, ...]
    precision: str
    target: str
    input_size: int
    output_size: int


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
        lstrip_blocks=False,
    )
    environment.filters["c_float"] = c_float
    environment.filters["c_literals"] = c_literals
    return environment


def export(model, out_dir, name=None, target="host", precision="float32", sparse="auto", calibration=None) -> Export:
    """Write C99 inference code for ``model`` into ``out_dir``.

    Args:
        model: a Keras model of the layers :func:`keras_grs.analyze` supports.
        out_dir: the directory to write (created if needed; files of the same names are replaced).
        name: the C name of the model (default: the Keras name), made a valid identifier.
        target: a name of :data:`c_backend.targets.TARGETS` (``host``, ``pi-zero``, ``portable``) or a
            :class:`~c_backend.targets.Target`: the kernel variant and the generated Makefile's default flags.
        precision: ``float32``, or ``int8``: every layer in int8 by TFLite's int8 scheme (weights symmetric per
            output channel, activations asymmetric per tensor with ranges calibrated on ``calibration``, int32
            biases, fixed-point requantization; see :mod:`c_backend.quantize`). Float input and output.
        sparse: ``auto`` (Dense layers at most half non-zero are stored sparsely), ``never`` or ``always``.
        calibration: sample inputs (``(samples, *input shape)``), required for ``int8``: the same samples given to
            TFLite's converter as its representative dataset give the same quantization.

    Returns:
        An :class:`Export` record.

    Example:
        >>> import tempfile
        >>> from keras_grs import models
        >>> from c_backend import export
        >>> result = export(models.build("nn1", (140,)), tempfile.mkdtemp())
        >>> result.name, [op.kind for op in result.ops]
        ('nn1', ['dense', 'dense', 'dense', 'dense'])
    """
    target = get(target)
    target.supports(precision)
    c_name = c_identifier(name if name is not None else model.name)
    ops = describe(model, c_name, precision=precision, sparse=sparse, calibration=calibration)
    input_shape = [int(d) for d in model.input_shape[1:]]
    context = {
        "model": c_name,
        "keras_name": str(model.name).replace("`", "'"),
        "ops": ops,
        "precision": precision,
        "target": target,
        "targets": list(TARGETS.values()),
        "input_shape": input_shape,
        "input_size": int(np.prod(input_shape)),
        "output_size": int(np.prod(model.output_shape[1:])),
        # the model input's edges, and every FIFO (the last one carries the output)
        "input_fifos": [f for op in ops for source, f in zip(op.sources, op.in_fifos) if source is None],
        "fifo_count": 1 + max(f for op in ops for f in op.out_fifos),
    }
    environment = _environment()
    rendered = {}
    for runtime in RUNTIME + (("int8_arith.h",) if precision == "int8" else ()):
        rendered[runtime] = environment.get_template(f"{runtime}.j2").render(context)
    rendered[f"{c_name}_actors.h"] = environment.get_template("actors.h.j2").render(context)
    for op in ops:
        rendered[f"{op.actor}.c"] = environment.get_template("actor.c.j2").render(context, op=op)
    rendered[f"{c_name}.h"] = environment.get_template("model.h.j2").render(context)
    rendered[f"{c_name}.c"] = environment.get_template("model.c.j2").render(context)
    rendered["main.c"] = environment.get_template("main.c.j2").render(context)
    rendered["Makefile"] = environment.get_template("Makefile.j2").render(context)
    rendered["README.md"] = environment.get_template("README.md.j2").render(context)

    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    for filename, text in rendered.items():
        write_text(directory / filename, text)
    return Export(directory, c_name, tuple(rendered), tuple(ops), precision, target.name, context["input_size"],
                  context["output_size"])
