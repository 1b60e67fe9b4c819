"""The register-blocked float kernels: their ARMv6 path (inline VFP assembly) agrees with Keras under qemu for every
block shape, and stays within the instruction budgets per multiply-accumulate."""

import shutil
import subprocess

import keras
import numpy as np
import pytest
from helpers import randomize

import c_backend
from c_backend import armv6
from keras_grs import models

pytestmark = pytest.mark.skipif(bool(armv6.missing_tools()), reason="make c-toolchains installs the ARM tools")
L = keras.layers


def seq(shape, *layers):
    model = keras.Sequential([keras.Input(shape), *layers])
    randomize(model, np.random.default_rng(7))
    return model


# Block widths 8, a tail of 1..7, inputs looped (> 8) and unrolled (<= 8), relu/linear/sigmoid/softmax, padding,
# strides, 1-D convolutions and Dense on a sequence.
CASES = {
    "dense_blocks_and_tails": lambda: seq((13,), L.Dense(19, activation="relu"), L.Dense(7),
                                          L.Dense(3, activation="sigmoid"), L.Dense(1)),
    "dense_small_inputs": lambda: seq((3,), L.Dense(9, activation="relu"), L.Dense(5, activation="tanh"),
                                      L.Dense(2, activation="softmax")),
    "dense_on_sequence": lambda: seq((4, 10), L.Dense(6, activation="relu"), L.Flatten(), L.Dense(2)),
    "conv_first_layer_same_strided": lambda: seq((9, 8, 1), L.Conv2D(11, 2, activation="relu", padding="same"),
                                                 L.Conv2D(5, 3, strides=2, padding="same"), L.Flatten(), L.Dense(2)),
    "conv_wide_patch": lambda: seq((6, 6, 5), L.Conv2D(9, 3, activation="relu"), L.Flatten(), L.Dense(2)),
    "conv1d": lambda: seq((12, 3), L.Conv1D(8, 3, activation="relu", padding="same"), L.Conv1D(4, 2, strides=2),
                          L.Flatten(), L.Dense(2)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_armv6_kernels_match_keras_under_qemu(case, tmp_path):
    model = CASES[case]()
    x = np.random.default_rng(8).normal(size=(4, *model.input_shape[1:])).astype("float32")
    c_backend.export(model, tmp_path, target="pi-zero")
    assert "__asm__" in "".join(p.read_text() for p in tmp_path.glob("*.c"))
    result = c_backend.verify(model, tmp_path, x, target="pi-zero")
    assert result.max_abs_diff <= 1e-4


def instructions_per_mac(model, tmp_path, name):
    exported = c_backend.export(model, tmp_path, name=name)
    executable = armv6.build_dir(tmp_path)
    x = np.random.default_rng(9).normal(size=(2, *model.input_shape[1:])).astype("<f4")
    x.tofile(tmp_path / "in.bin")
    run = armv6.measure(executable, [tmp_path / "in.bin", tmp_path / "out.bin"],
                        window=(f"{name}_context_infer", "main"))
    per_mac = {}
    for op in exported.ops:
        macs = armv6.op_macs(op) if op.kind in ("dense", "conv") else 0
        if not macs:
            continue
        per_mac[op.layer] = run.by_symbol[f"{op.actor}_invoke"] / run.calls / macs
    return per_mac


def test_dense_and_conv2d_stay_within_their_instruction_budgets(tmp_path):
    """Targets at -O2: Dense <= 2.0 and Conv2D <= 2.5 ARMv6 instructions per MAC (layers of at least 8 units)."""
    nn1 = instructions_per_mac(models.build("nn1", (140,)), tmp_path / "nn1", "nn1")
    assert nn1["dense1"] <= 2.0 and nn1["dense2"] <= 2.0, nn1
    cnn1 = instructions_per_mac(models.build("cnn1", (12, 12, 1)), tmp_path / "cnn1", "cnn1")
    assert cnn1["conv1"] <= 2.5 and cnn1["conv2"] <= 2.5 and cnn1["dense1"] <= 2.0, cnn1


def test_pooling_inside_and_across_the_padding_under_qemu(tmp_path):
    model = seq((7, 9, 3), L.MaxPooling2D(2, padding="same"), L.AveragePooling2D((2, 3), strides=1),
                L.MaxPooling2D(1), L.Flatten(), L.Dense(2))
    x = np.random.default_rng(10).normal(size=(4, 7, 9, 3)).astype("float32")
    c_backend.export(model, tmp_path, target="pi-zero")
    for target in ("host", "pi-zero"):
        assert c_backend.verify(model, tmp_path, x, target=target).max_abs_diff <= 1e-5


@pytest.mark.skipif(shutil.which("clang") is None, reason="make c-toolchains installs clang")
def test_clang_compiles_the_arm_path_with_warnings_as_errors(tmp_path):
    model = CASES["dense_blocks_and_tails"]()
    c_backend.export(model, tmp_path, target="pi-zero")
    flags = ["--target=arm-linux-gnueabi", "-march=armv6zk", "-mfpu=vfp2", "-mfloat-abi=softfp", "-O2", "-std=c99",
             "-Wall", "-Wextra", "-Werror", "-pedantic", "-isystem", "/usr/arm-linux-gnueabi/include"]
    sources = [s for s in tmp_path.glob("*.c") if "__asm__" in s.read_text()]
    assert len(sources) == 4  # the four Dense actors
    for source in sources:
        subprocess.run(["clang", *flags, "-c", str(source), "-o", str(source.with_suffix(".o"))], check=True)
        listing = subprocess.run(["arm-linux-gnueabi-objdump", "-d", str(source.with_suffix(".o"))],
                                 capture_output=True, text=True, check=True).stdout
        assert "vldmia" in listing and "vmla.f32" in listing
