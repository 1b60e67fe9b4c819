"""The int8 kernels' ARMv6 DSP path (SMLAD loops in assembly, SMMLAR + SSAT requantization, the two-position kernel
for patches of at most 4 values, max pooling by SSUB8 + SEL, the input quantization by VCVT + SSAT) under qemu: the
same int8 outputs as the plain C on the host, both within one step of TFLite's, for every kernel variant; within 1.5
ARMv6 instructions per MAC on the wide layers; clean under clang."""

import shutil
import subprocess

import keras
import numpy as np
import pytest
from test_c_int8 import against_tflite, seq

import c_backend
from c_backend import armv6
from c_backend.targets import STRICT
from keras_grs import models

pytestmark = pytest.mark.skipif(bool(armv6.missing_tools()), reason="make c-toolchains installs the ARM tools")
L = keras.layers

# One input channel 2x2 (odd position count), 1x3 same-padded and strided, 1x1 over 3 channels: the two-position
# kernel; 4 channels (windows read in place), 8 channels padded (word copies), 23 Dense inputs (a tail), linear
# layers (the exact requantization with TFLite's step down for negative values), blocks of 1..3 units, max pooling
# four channels at a time (padded or not), Conv1D.
CASES = {
    "first_conv_2x2_one_channel": lambda: seq((8, 7, 1), L.Conv2D(13, 2, activation="relu"), L.Flatten(),
                                              L.Dense(6, activation="relu"), L.Dense(3)),
    "first_conv_padded_strided": lambda: seq((7, 9, 1), L.Conv2D(6, (1, 3), strides=(2, 2), padding="same",
                                                                 activation="relu"),
                                             L.Conv2D(5, 1, activation="relu"), L.Flatten(), L.Dense(2)),
    "pointwise_three_channels": lambda: seq((5, 4, 3), L.Conv2D(7, 1, activation="relu"),
                                            L.Conv2D(4, 2, activation="relu"), L.Flatten(), L.Dense(2)),
    "conv_channels_in_words_and_linear": lambda: seq((6, 5, 4), L.Conv2D(8, 2, activation="relu"),
                                                     L.Conv2D(5, 3, padding="same"), L.Flatten(),
                                                     L.Dense(9, activation="relu"), L.Dense(2)),
    "dense_tails_and_small_blocks": lambda: seq((23,), L.Dense(11, activation="relu"), L.Dense(7, activation="relu"),
                                                L.Dense(5), L.Dense(3, activation="softmax")),
    "max_pools_in_words": lambda: seq((9, 8, 1), L.Conv2D(8, 2, activation="relu"), L.MaxPooling2D(2, padding="same"),
                                      L.Conv2D(4, 1, activation="relu"), L.MaxPooling2D((2, 3), strides=1),
                                      L.Flatten(), L.Dense(2)),
    "conv1d_strided": lambda: seq((17, 2), L.Conv1D(6, 2, strides=2, activation="relu"),
                                  L.Conv1D(3, 3, padding="same"), L.Flatten(), L.Dense(2)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_armv6_int8_path_equals_the_host_and_tflite(case, tmp_path):
    model = CASES[case]()
    _, host, reference = against_tflite(model, tmp_path / "host")
    exported, arm, _ = against_tflite(model, tmp_path / "arm", "pi-zero")
    assert np.array_equal(arm, host)  # integer arithmetic: the assembly gives the plain C's bits
    for outputs in (host, arm):
        assert np.max(np.abs(reference.steps(outputs) - reference.output)) <= 1, case
    first = exported.ops[1]
    if case.startswith(("first_conv", "pointwise")):
        assert first.kind == "conv_int8" and first.small_patch
    if case.startswith("conv_channels"):  # windows read in place, row by row
        assert first.row_walk and not exported.ops[2].row_walk  # the second is padded


def int8_instructions_per_mac(name, shape, tmp_path):
    model = models.build(name, shape)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=0.3, size=w.shape).astype("float32") for w in model.get_weights()])
    calibration = rng.normal(size=(32, *shape)).astype("float32")
    exported = c_backend.export(model, tmp_path, name=name, precision="int8", calibration=calibration)
    executable = armv6.build_dir(tmp_path)
    rng.normal(size=(2, *shape)).astype("<f4").tofile(tmp_path / "in.bin")
    run = armv6.measure(executable, [tmp_path / "in.bin", tmp_path / "out.bin"],
                        window=(f"{name}_context_infer", "main"))
    per_mac = {}
    for op in exported.ops:
        macs = armv6.op_macs(op) if op.kind in ("dense_int8", "conv_int8") else 0
        if not macs:
            continue
        actor = sum(count for symbol, count in run.by_symbol.items() if symbol.startswith(op.actor + "_"))
        per_mac[op.layer] = actor / run.calls / macs
    return per_mac


def test_wide_int8_layers_stay_within_one_and_a_half_instructions_per_mac(tmp_path):
    """Issue 14's int8 target: <= 1.5 ARMv6 instructions per MAC for Dense and Conv2D (the wide layers), the
    requantization, the patch gathering and the actor's call included."""
    nn1 = int8_instructions_per_mac("nn1", (140,), tmp_path / "nn1")
    assert nn1["dense1"] <= 1.5, nn1
    cnn1 = int8_instructions_per_mac("cnn1", (12, 12, 1), tmp_path / "cnn1")
    assert max(cnn1["conv1"], cnn1["conv2"], cnn1["dense1"]) <= 1.5, cnn1


@pytest.mark.skipif(shutil.which("clang") is None, reason="make c-toolchains installs clang")
def test_clang_compiles_the_int8_dsp_path_with_warnings_as_errors(tmp_path):
    model = CASES["first_conv_2x2_one_channel"]()
    calibration = np.random.default_rng(0).normal(size=(16, 8, 7, 1)).astype("float32")
    c_backend.export(model, tmp_path, precision="int8", calibration=calibration)
    flags = ["--target=arm-linux-gnueabi", "-march=armv6zk", "-mfpu=vfp2", "-mfloat-abi=softfp", *STRICT.split(),
             "-isystem", "/usr/arm-linux-gnueabi/include"]
    listing = ""
    for source in tmp_path.glob("*.c"):
        subprocess.run(["clang", *flags, "-c", str(source), "-o", str(source.with_suffix(".o"))], check=True)
        listing += subprocess.run(["arm-linux-gnueabi-objdump", "-d", str(source.with_suffix(".o"))],
                                  capture_output=True, text=True, check=True).stdout
    assert all(word in listing for word in ("smlad", "smmlar", "ssat", "ldm", "vcvt.s32.f32"))


def test_layers_dead_on_the_calibration_clamp_at_their_zero_point_on_armv6_too(tmp_path):
    """A ReLU layer whose outputs are all zero on the calibration samples gets scale 1 and zero point 0, so its
    clamp is above -128: the assembly's extra compare (first convolution) and the C clamp (Dense) give the host's
    bits."""
    model = seq((6, 5, 1), L.Conv2D(4, 2, activation="relu"), L.Flatten(), L.Dense(5, activation="relu"), L.Dense(2))
    conv, dense = model.layers[0], model.layers[2]
    conv.set_weights([conv.get_weights()[0], np.full(4, -100.0, "float32")])
    dense.set_weights([dense.get_weights()[0], np.full(5, -100.0, "float32")])
    _, host, _ = against_tflite(model, tmp_path / "host")
    exported, arm, _ = against_tflite(model, tmp_path / "arm", "pi-zero")
    first, dense = (next(op for op in exported.ops if op.kind == kind) for kind in ("conv_int8", "dense_int8"))
    assert first.act_min == dense.act_min == 0 and first.small_patch and dense.fast_requantize
    assert np.array_equal(arm, host)
