"""Targets: the registry chooses the kernel variant and the generated Makefile's flags, refuses what it does not know,
and checks the code where it runs (the Pi Zero under qemu)."""

import subprocess

import numpy as np
import pytest
from helpers import randomize

import c_backend
from c_backend import armv6
from c_backend.targets import STRICT, TARGETS, Check, Target, get
from keras_grs import models
from keras_grs.cli import main


def nn2(seed=0):
    model = models.build("nn2", (12,))
    randomize(model, np.random.default_rng(seed))
    return model


def makefile_cflags(directory):
    return next(line for line in (directory / "Makefile").read_text().splitlines() if line.startswith("CFLAGS ?="))


def test_the_makefile_carries_the_targets_flags(tmp_path):
    for name in ("host", "pi-zero"):
        c_backend.export(nn2(), tmp_path / name, target=name)
        assert makefile_cflags(tmp_path / name) == f"CFLAGS ?= {TARGETS[name].cflags}"
    assert "-march" not in makefile_cflags(tmp_path / "host")
    assert "-march=armv6zk -mfpu=vfp -mfloat-abi=hard" in makefile_cflags(tmp_path / "pi-zero")
    # every target with the same kernels has a rule of its own: `make pi-zero` on the Pi whatever the default
    text = (tmp_path / "host" / "Makefile").read_text()
    assert f"pi-zero: CFLAGS = {TARGETS['pi-zero'].cflags}" in text and "portable:" not in text


def test_an_unknown_target_is_refused_naming_the_known_ones_and_nothing_is_written(tmp_path):
    with pytest.raises(ValueError, match="unknown target 'cortex-m'; known targets: host, pi-zero, portable"):
        c_backend.export(nn2(), tmp_path / "out", target="cortex-m")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="unknown target"):
        c_backend.verify(nn2(), tmp_path, np.zeros((1, 12), "float32"), target="esp32")
    with pytest.raises(SystemExit):
        main(["export-c", "nn2", str(tmp_path / "cli"), "--target", "cortex-m"])
    assert not (tmp_path / "cli").exists()


def test_a_new_target_is_one_entry_and_its_precisions_are_enforced(tmp_path):
    board = Target("board", "an int8-only board", "-mcpu=cortex-m4", ("int8",), "c", Check(None, STRICT))
    with pytest.raises(ValueError, match="target 'board' runs precision int8, not 'float32'"):
        c_backend.export(nn2(), tmp_path / "board", target=board)
    assert not (tmp_path / "board").exists()
    with pytest.raises(ValueError, match="kernels must be one of arm, c"):
        Target("x", "", "", ("int8",), "cmsis-nn", Check(None, STRICT))
    assert get(board) is board


def test_portable_kernels_carry_no_assembly_and_match_keras(tmp_path):
    model = models.build("cnn2", (6, 6, 1))
    randomize(model, np.random.default_rng(3))
    x = np.random.default_rng(4).normal(size=(4, 6, 6, 1)).astype("float32")
    c_backend.export(model, tmp_path / "arm")
    c_backend.export(model, tmp_path / "plain", target="portable")
    source = lambda d: "".join(p.read_text() for p in sorted((tmp_path / d).glob("*.c")))  # noqa: E731
    assert "#define KERAS_GRS_VFP_ASM" in source("arm") and "#define KERAS_GRS_VFP_ASM" not in source("plain")
    assert c_backend.verify(model, tmp_path / "plain", x, target="portable").max_abs_diff <= 1e-5
    calibration = np.random.default_rng(5).normal(size=(20, 6, 6, 1)).astype("float32")
    c_backend.export(model, tmp_path / "int8", precision="int8", calibration=calibration, target="portable")
    assert "#define KERAS_GRS_DSP" not in (tmp_path / "int8" / "int8_arith.h").read_text()
    if armv6.missing_tools():
        pytest.skip("make c-toolchains installs the ARM tools")
    # the plain kernels on the ARM1176 too (built and run by the Pi Zero's check)
    assert c_backend.verify(model, tmp_path / "plain", x, target="pi-zero").max_abs_diff <= 1e-5


@pytest.mark.skipif(bool(armv6.missing_tools()), reason="make c-toolchains installs the ARM tools")
def test_export_c_verifies_on_the_target_it_names(tmp_path, capsys):
    path = tmp_path / "m.keras"
    nn2().save(path)
    rng = np.random.default_rng(6)
    np.savez(tmp_path / "d.npz", x_train=rng.normal(size=(8, 12)), y_train=rng.integers(0, 2, 8),
             x_val=rng.normal(size=(8, 12)), y_val=rng.integers(0, 2, 8))
    assert main(["export-c", str(path), str(tmp_path / "c"), "--target", "pi-zero", "--verify",
                 str(tmp_path / "d.npz")]) == 0
    assert "verified on 8 validation samples" in capsys.readouterr().out
    assert "ARM" in subprocess.run(["file", str(tmp_path / "c" / "nn2")], capture_output=True, text=True).stdout
