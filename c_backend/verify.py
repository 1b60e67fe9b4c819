"""Compile the generated C, run it on samples, and compare with Keras."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from c_backend.targets import get
from keras_grs.guard import class_ids, loss_reads_classes
from keras_grs.scoring import predict


@dataclass(frozen=True)
class Verification:
    """The C outputs against Keras: largest absolute difference, and for a classifier the agreement of the predicted
    classes (None for a regression: labels that are not classes)."""

    samples: int
    max_abs_diff: float
    agreement: float | None  # fraction of samples whose predicted class is the same
    keras_accuracy: float | None
    c_accuracy: float | None

    @property
    def accuracy_change(self) -> float | None:
        if self.keras_accuracy is None:
            return None
        return self.c_accuracy - self.keras_accuracy

    def as_dict(self) -> dict:
        return {**asdict(self), "accuracy_change": self.accuracy_change}


def build(directory, target="host", cc=None) -> Path:
    """Run the generated Makefile with ``target``'s check compiler and flags (warnings as errors; ``cc`` replaces
    the compiler); return the driver executable. Compiler output is in the error on failure."""
    directory, check = Path(directory), get(target).check
    cc = cc or check.cc
    command = ["make", "-s", "-C", str(directory), "-B", f"CFLAGS={check.cflags}", *([f"CC={cc}"] if cc else [])]
    missing = [tool for tool in ("make", cc, *check.runner[:1]) if tool and shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"checking code for target {get(target).name!r} needs {', '.join(missing)}, not installed "
                           "(make c-toolchains installs them)")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"compiling {directory} failed:\n{result.stdout}{result.stderr}")
    executables = [p for p in directory.iterdir() if p.is_file() and p.stat().st_mode & 0o111 and p.suffix == ""]
    executables = [p for p in executables if p.name != "Makefile"]
    if len(executables) != 1:
        raise RuntimeError(f"expected one executable in {directory}, found {[p.name for p in executables]}")
    return executables[0]


def run(executable, x, target="host", repeats=0) -> tuple[np.ndarray, float | None]:
    """Run the driver on samples ``x`` as ``target``'s check runs it (directly, or under qemu-arm); return the
    outputs (and ns per inference when ``repeats``)."""
    executable = Path(executable)
    directory = executable.parent
    x = np.ascontiguousarray(np.asarray(x, dtype="<f4"))
    inputs, outputs = directory / "verify_input.bin", directory / "verify_output.bin"
    x.tofile(inputs)
    command = [*get(target).check.runner, str(executable), str(inputs), str(outputs)]
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


def verify(model, out_dir, x, y=None, target="host", cc=None) -> Verification:
    """Compile the code in ``out_dir`` as ``target``'s check does (warnings as errors), run it on ``x`` (under
    qemu-arm for the Pi Zero), compare with Keras.

    Args:
        model: the Keras model the code was generated from.
        out_dir: the directory :func:`c_backend.export` wrote.
        x: samples; y: optional labels, to report both accuracies (and their change, for int8).
        target: a name of :data:`c_backend.targets.TARGETS` or a :class:`~c_backend.targets.Target`.
        cc: another compiler than the target's (``clang``, say).

    Returns:
        A :class:`Verification`; a float32 export differs from Keras by at most about 1e-5.
    """
    executable = build(out_dir, target, cc=cc)
    c_out, _ = run(executable, x, target)
    keras_out = predict(model, np.asarray(x, dtype="float32")).reshape(len(x), -1)
    diff = float(np.max(np.abs(c_out - keras_out))) if len(x) else 0.0
    values = loss_reads_classes(model) is False  # a regression's loss: its targets are values, not classes
    labels = None if y is None or values else class_ids(y)
    if values or (y is not None and labels is None):  # no classes to compare
        return Verification(len(x), diff, None, None, None)
    c_class, k_class = _predicted_class(c_out), _predicted_class(keras_out)
    keras_accuracy = c_accuracy = None
    if labels is not None:
        keras_accuracy = float(np.mean(k_class == labels))
        c_accuracy = float(np.mean(c_class == labels))
    return Verification(len(x), diff, float(np.mean(c_class == k_class)), keras_accuracy, c_accuracy)


def _predicted_class(outputs) -> np.ndarray:
    """The class of each row of outputs: the largest output's, or for one (sigmoid) output whether it is above 0.5."""
    return (outputs[:, 0] > 0.5).astype(int) if outputs.shape[1] == 1 else outputs.argmax(axis=1)
