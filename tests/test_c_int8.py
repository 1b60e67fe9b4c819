"""Int8 C against TensorFlow Lite's own int8 converter and interpreter (builtin kernels): the same model and calibration
samples give the same int8 outputs within one quantization step on every sample; and the generated code allocates
nothing and runs several instances side by side."""

import shutil
import subprocess

import keras
import numpy as np
import pytest
from helpers import randomize

import c_backend
from c_backend import armv6, tflite
from c_backend.quantize import activation_params, quantize_multiplier
from c_backend.targets import STRICT

L = keras.layers


def seq(shape, *layers, seed=11):
    model = keras.Sequential([keras.Input(shape), *layers])
    randomize(model, np.random.default_rng(seed))
    return model


# Strides, same/valid padding, odd sizes, 1-D and 2-D, every pooling, fused and separate activations.
CASES = {
    "dense_relu_softmax": lambda: seq((13,), L.Dense(9, activation="relu"), L.Dense(7), L.Dense(6, activation="tanh"),
                                      L.Dense(3), L.Activation("softmax")),
    # a linear Dense before a ReLU Dense keeps its bias in TFLite (moving it put the C 9 steps off)
    "dense_linear_then_relu": lambda: seq((23,), L.Dense(11, activation="relu"), L.Dense(7),
                                          L.Dense(5, activation="relu"), L.Dense(3, activation="softmax")),
    # TFLite moves a linear Dense layer's bias into the next linear one, visiting the graph from its end: in a run of
    # three only the second's moves; through a softmax a tie rounded otherwise than its builtin kernels shows
    **{f"dense_linear_linear_seed{seed}": (lambda seed=seed: seq((13,), L.Dense(9), L.Dense(5), seed=seed))
       for seed in (1, 2, 3)},
    **{f"dense_linear_linear_softmax_seed{seed}": (
        lambda seed=seed: seq((13,), L.Dense(9), L.Dense(5, activation="softmax"), seed=seed)) for seed in (1, 2, 3)},
    **{f"dense_three_linear_seed{seed}": (lambda seed=seed: seq((13,), L.Dense(9), L.Dense(7), L.Dense(4), seed=seed))
       for seed in (1, 2, 3)},
    "conv2d_same_strided_odd": lambda: seq((9, 7, 3), L.Conv2D(5, 3, strides=2, padding="same", activation="relu"),
                                           L.Conv2D(4, (2, 3), padding="valid"), L.Flatten(), L.Dense(3)),
    "conv2d_pools": lambda: seq((10, 9, 2), L.Conv2D(6, 2, activation="relu"), L.MaxPooling2D(2, padding="same"),
                                L.AveragePooling2D((2, 3), strides=1), L.Flatten(), L.Dense(4, activation="softmax")),
    "conv1d_pools": lambda: seq((15, 3), L.Conv1D(4, 3, strides=2, padding="same"), L.AveragePooling1D(2),
                                L.Conv1D(3, 2, activation="relu"), L.MaxPooling1D(3, strides=2, padding="same"),
                                L.Flatten(), L.Dense(2, activation="sigmoid")),
    # TFLite's MEAN rounds differently (within one step at its output, measured), so it ends the model here
    "global_average": lambda: seq((7, 6, 2), L.Conv2D(5, 3, padding="same", activation="relu"),
                                  L.GlobalAveragePooling2D()),
    "global_max_batchnorm": lambda: seq((6, 5, 3), L.Conv2D(4, 2), L.BatchNormalization(), L.ReLU(),
                                        L.GlobalMaxPooling2D(), L.Dense(2)),
}


def samples(model, count, seed):
    return np.random.default_rng(seed).normal(size=(count, *model.input_shape[1:])).astype("float32")


def against_tflite(model, directory, target="host", cc=None):
    calibration, x = samples(model, 40, 0), samples(model, 25, 1)
    exported = c_backend.export(model, directory, precision="int8", calibration=calibration)
    c_out, _ = c_backend.run(c_backend.build(directory, target, cc=cc), x, target)
    reference = tflite.run_int8(tflite.convert_int8(model, calibration), x)
    return exported, c_out, reference


@pytest.mark.parametrize("case", sorted(CASES))
def test_int8_equals_tflite_within_one_step_on_every_sample(case, tmp_path):
    exported, c_out, reference = against_tflite(CASES[case](), tmp_path)
    assert {op.kind for op in exported.ops[1:-1]} <= {"dense_int8", "conv_int8", "pool_int8", "global_pool_int8",
                                                          "table_int8", "softmax_int8"}
    assert exported.ops[0].output_q[1] == reference.input_q[1]
    assert np.isclose(exported.ops[0].output_q[0], reference.input_q[0], rtol=1e-6)
    assert np.isclose(exported.ops[-1].input_q[0], reference.output_q[0], rtol=1e-5)
    steps = reference.steps(c_out)
    assert np.allclose(steps, np.round(steps))  # the C's outputs are whole steps of TFLite's output tensor
    assert np.max(np.abs(steps - reference.output)) <= 1, case


def test_int8_builds_with_clang_and_for_armv6_under_qemu_as_on_the_host(tmp_path):
    model = CASES["conv2d_pools"]()
    _, host, reference = against_tflite(model, tmp_path / "host")
    if shutil.which("clang"):
        _, clang, _ = against_tflite(model, tmp_path / "clang", cc="clang")
        assert np.array_equal(clang, host)
    if armv6.missing_tools():
        pytest.skip("make c-toolchains installs the ARM tools")
    _, arm, _ = against_tflite(model, tmp_path / "arm", "pi-zero")
    assert np.array_equal(arm, host)  # integer arithmetic: the same bits on both
    code = subprocess.run([armv6.CC.replace("gcc", "objdump"), "-d", str(tmp_path / "arm" / "sequential")],
                          capture_output=True, text=True, check=True).stdout
    assert "smlad" in code and "sxtb16" in code  # the ARMv6 DSP path, not the plain C one
    assert np.max(np.abs(reference.steps(arm) - reference.output)) <= 1


DRIVER = r"""
#include <stdio.h>
#include "m.h"

static const float samples[%(count)d][M_INPUT_SIZE] = {%(values)s};
static m_context_type first, second;
static unsigned char placed[M_CONTEXT_SIZE]; /* the size is a compile-time constant */

int main(void) {
    float out[M_OUTPUT_SIZE];
    int i, j;
    if (m_context_init(&first) != 0 || m_context_init(&second) != 0 || sizeof(placed) != sizeof(first)) {
        return 1;
    }
    for (i = 0; i < %(count)d; i++) { /* interleaved: first on sample i, second on the mirrored sample */
        if (m_context_infer(&first, samples[i], out) != 0) return 1;
        for (j = 0; j < M_OUTPUT_SIZE; j++) printf("a %%d %%.9g\n", i, out[j]);
        if (m_context_infer(&second, samples[%(count)d - 1 - i], out) != 0) return 1;
        for (j = 0; j < M_OUTPUT_SIZE; j++) printf("b %%d %%.9g\n", %(count)d - 1 - i, out[j]);
    }
    return 0;
}
"""


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_two_instances_run_interleaved_in_one_program(precision, tmp_path):
    model = CASES["conv2d_pools"]()
    x = samples(model, 5, 2)
    exported = c_backend.export(model, tmp_path, name="m", precision=precision, calibration=samples(model, 20, 0))
    alone, _ = c_backend.run(c_backend.build(tmp_path), x)
    values = ",".join("{" + ",".join(f"{v:.9g}f" for v in sample.ravel()) + "}" for sample in x)
    (tmp_path / "two.c").write_text(DRIVER % {"count": len(x), "values": values})
    sources = [str(tmp_path / name) for name in exported.files if name.endswith(".c") and name != "main.c"]
    subprocess.run(["gcc", *STRICT.split(), "-o", str(tmp_path / "two"), str(tmp_path / "two.c"), *sources, "-lm"],
                   check=True, capture_output=True)
    lines = subprocess.run([str(tmp_path / "two")], check=True, capture_output=True, text=True).stdout.split()
    rows = np.array(lines).reshape(-1, 3)
    for instance in "ab":
        mine = rows[rows[:, 0] == instance]
        got = np.zeros_like(alone)
        for k in range(len(x)):
            got[k] = mine[mine[:, 1] == str(k), 2].astype(np.float32)
        np.testing.assert_allclose(got, alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_generated_model_code_never_allocates(precision, tmp_path):
    model = CASES["global_average"]()
    exported = c_backend.export(model, tmp_path, precision=precision, calibration=samples(model, 10, 0))
    for name in exported.files:
        if name.endswith((".c", ".h")) and name != "main.c":  # the file-reading driver is not part of the model
            text = (tmp_path / name).read_text()
            assert not any(word in text for word in ("malloc", "calloc", "realloc", "free(")), name


def test_requantization_follows_tflite_fixed_point_form():
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    assert quantize_multiplier(1.0) == (1 << 30, 1)
    assert quantize_multiplier(0.75) == (3 << 29, 0)
    assert quantize_multiplier(1e-12) == (0, 0)  # below 2^-31 the factor is zero
    multiplier, shift = quantize_multiplier(0.0123)
    assert abs(multiplier * 2.0 ** (shift - 31) - 0.0123) < 1e-9
    assert activation_params(0.0, 2.55) == (pytest.approx(0.01), -128)  # a ReLU output: zero at the bottom
    assert activation_params(-1.0, 1.0)[1] in (-1, 0)
    assert activation_params(0.5, 1.0)[1] == -128  # ranges are widened to contain 0


def test_int8_refuses_calibration_of_the_wrong_shape(tmp_path):
    model = CASES["dense_relu_softmax"]()
    with pytest.raises(ValueError, match="shape"):
        c_backend.export(model, tmp_path, precision="int8", calibration=np.zeros((4, 12), "float32"))
    with pytest.raises(ValueError, match="not finite"):
        c_backend.export(model, tmp_path, precision="int8", calibration=np.full((4, 13), np.nan, "float32"))


def test_int8_refuses_a_requantization_factor_its_16_bit_weights_cannot_hold(tmp_path):
    """The factor 2^(1 + left) of TFLite's first rounding lives in the 16-bit weights: input scale x weight scale /
    output scale must stay below 128 (here the output is always zero, its scale 1, the weights huge)."""
    model = keras.Sequential([keras.Input((2,)), L.Dense(1, use_bias=False)])
    model.layers[0].set_weights([np.array([[1e5], [-1e5]], "float32")])
    calibration = np.repeat(samples(model, 8, 0)[:, :1] * 100, 2, axis=1)
    with pytest.raises(ValueError, match="requantization factor of 128 or more"):
        c_backend.export(model, tmp_path, precision="int8", calibration=calibration)
