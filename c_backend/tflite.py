"""TensorFlow Lite's own int8 conversion and interpreter, as the reference the int8 C is checked against.

    convert_int8(model, calibration) -> bytes         (TFLiteConverter, representative dataset, int8 in and out)
    run_int8(model_bytes, x) -> Int8Run               (TFLite's builtin int8 kernels, without XNNPACK)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from c_backend.quantize import round_away


@dataclass(frozen=True)
class Int8Run:
    """TFLite's int8 outputs of some samples and the parameters of its input and output tensors."""

    output: np.ndarray  # int8, (samples, outputs)
    input_q: tuple[float, int]
    output_q: tuple[float, int]

    def steps(self, values) -> np.ndarray:
        """Float outputs (e.g. the C's) in int8 steps of TFLite's output tensor, to compare with ``output``."""
        scale, zero = self.output_q
        return round_away(np.asarray(values, dtype=np.float64) / scale) + zero


def convert_int8(model, calibration) -> bytes:
    """``model`` converted by ``tf.lite.TFLiteConverter`` to int8 only (inputs and outputs too), calibrated on the
    samples ``calibration`` one at a time, as :func:`c_backend.export` with ``precision="int8"`` calibrates."""
    import tensorflow as tf

    samples = np.asarray(calibration, dtype="float32")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample[None]] for sample in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def run_int8(model_bytes: bytes, x, kernels="builtin") -> Int8Run:
    """Run a converted model on float samples ``x`` (quantized as the C's quantize actor does).

    ``kernels``: ``builtin`` (TFLite's own int8 kernels without the XNNPACK delegate, whose requantization rounds
    differently), ``reference`` (its reference kernels: the same integer arithmetic, but a fixed-point softmax
    less exact than the float one the C uses) or ``auto`` (what ``tf.lite.Interpreter`` does by default)."""
    import tensorflow as tf

    resolver = tf.lite.experimental.OpResolverType
    interpreter = tf.lite.Interpreter(
        model_content=model_bytes,
        experimental_op_resolver_type={"builtin": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                                       "reference": resolver.BUILTIN_REF, "auto": resolver.AUTO}[kernels],
    )
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    in_scale, in_zero = source["quantization"]
    x = np.asarray(x, dtype=np.float32)
    quantized = np.clip(round_away(x / np.float32(in_scale)) + in_zero, -128, 127).astype(np.int8)
    outputs = []
    for sample in quantized:
        interpreter.set_tensor(source["index"], sample[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target["index"]).reshape(-1).copy())
    return Int8Run(np.asarray(outputs), (float(in_scale), int(in_zero)), tuple(target["quantization"]))
