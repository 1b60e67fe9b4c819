"""Compile the generated C, run it on samples, and compare with Keras."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from keras_grs.scoring import predict

HOST_CFLAGS = "-O2 -std=c99 -Wall -Wextra -Werror -pedantic"


@dataclass(frozen=True)
class Verification:
    """The C outputs against Keras: largest absolute difference, and the classification agreement."""

    samples: int
    max_abs_diff: float
    agreement: float  # fraction of samples whose predicted class is the same
    keras_accuracy: float | None
    c_accuracy: float | None

    @property
    def accuracy_change(self) -> float | None:
        if self.keras_accuracy is None:
            return None
        return self.c_accuracy - self.keras_accuracy

    def as_dict(self) -> dict:
        return {**asdict(self), "accuracy_change": self.accuracy_change}


def build(directory, cc=None, cflags=HOST_CFLAGS, make_target=None) -> Path:
    """Run the generated Makefile; return the driver executable. Compiler output is in the error on failure."""
    directory = Path(directory)
    command = ["make", "-s", "-C", str(directory), "-B"]
    if make_target:
        command.append(make_target)
    if cc:
        command.append(f"CC={cc}")
    if cflags is not None and make_target != "pi-zero":
        command.append(f"CFLAGS={cflags}")
    if shutil.which("make") is None:
        raise RuntimeError("make is not installed")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"compiling {directory} failed:\n{result.stdout}{result.stderr}")
    executables = [p for p in directory.iterdir() if p.is_file() and p.stat().st_mode & 0o111 and p.suffix == ""]
    executables = [p for p in executables if p.name != "Makefile"]
    if len(executables) != 1:
        raise RuntimeError(f"expected one executable in {directory}, found {[p.name for p in executables]}")
    return executables[0]


def run(executable, x, runner=(), repeats=0) -> tuple[np.ndarray, float | None]:
    """Run the driver on samples ``x``; return the outputs (and ns per inference when ``repeats``)."""
    executable = Path(executable)
    directory = executable.parent
    x = np.ascontiguousarray(np.asarray(x, dtype="<f4"))
    inputs, outputs = directory / "verify_input.bin", directory / "verify_output.bin"
    x.tofile(inputs)
    command = [*runner, str(executable), str(inputs), str(outputs)]
    if repeats:
        command.append(str(repeats))
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"running {executable.name} failed ({result.returncode}): {result.stderr}")
    values = np.fromfile(outputs, dtype="<f4").reshape(len(x), -1)
    timing = float(result.stdout.split()[0]) if repeats else None
    inputs.unlink()
    outputs.unlink()
    return values, timing


def verify(model, out_dir, x, y=None, cc=None, cflags=HOST_CFLAGS, runner=(), make_target=None) -> Verification:
    """Compile the code in ``out_dir`` (host compiler, warnings as errors), run it on ``x``, compare with Keras.

    Args:
        model: the Keras model the code was generated from.
        out_dir: the directory :func:`c_backend.export` wrote.
        x: samples; y: optional labels, to report both accuracies (and their change, for int8).
        cc, cflags, runner: another compiler, flags, and a program to run the binary with (e.g. qemu-arm).

    Returns:
        A :class:`Verification`; a float32 export differs from Keras by at most about 1e-5.
    """
    executable = build(out_dir, cc=cc, cflags=cflags, make_target=make_target)
    c_out, _ = run(executable, x, runner=runner)
    keras_out = predict(model, np.asarray(x, dtype="float32")).reshape(len(x), -1)
    diff = float(np.max(np.abs(c_out - keras_out))) if len(x) else 0.0
    c_class, k_class = c_out.argmax(axis=1), keras_out.argmax(axis=1)
    keras_accuracy = c_accuracy = None
    if y is not None:
        labels = np.asarray(y).reshape(len(y), -1)
        labels = labels.argmax(axis=1) if labels.shape[1] > 1 else labels[:, 0]
        keras_accuracy = float(np.mean(k_class == labels))
        c_accuracy = float(np.mean(c_class == labels))
    return Verification(len(x), diff, float(np.mean(c_class == k_class)), keras_accuracy, c_accuracy)
