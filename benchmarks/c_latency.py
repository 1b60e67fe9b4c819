"""Benchmark of the generated C: latency against the TFLite interpreter and Keras, and instructions per MAC.

For nn1 and cnn1, original and compact (fixed compact structures of the size JGRS finds on the simulated data),
measured side by side in one run:
  * C: the generated driver's own loop (-O2, host), ns per inference;
  * TFLite: tf.lite.Interpreter, invoke() one sample at a time from Python (what a Pi user would otherwise run);
  * Keras: model(x) one sample at a time;
  * x86 instructions per multiply-accumulate from valgrind --tool=callgrind (the difference between runs on 201 and
    on 1 sample, so the driver's start-up cancels out).

Run: .venv/bin/python benchmarks/c_latency.py   (writes benchmarks/results/c_latency.md)
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import c_backend  # noqa: E402
from keras_grs import count_flops, models, shrink  # noqa: E402

CASES = [
    ("nn1", (140,), {}),
    ("nn1 compact", (140,), {"dense1": 20, "dense2": 10, "dense3": 5}),
    ("cnn1", (12, 12, 1), {}),
    ("cnn1 compact", (12, 12, 1), {"conv1": 22, "conv2": 10, "dense1": 24, "dense2": 13, "dense3": 6}),
]


def build(name, shape, remove_counts):
    model = models.build(name.split()[0], shape)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=0.3, size=w.shape).astype("float32") for w in model.get_weights()])
    return shrink(model, {g: list(range(n)) for g, n in remove_counts.items()}) if remove_counts else model


def time_per_call(function, samples, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for sample in samples:
            function(sample)
        best = min(best, (time.perf_counter() - start) / len(samples))
    return best * 1e9


def tflite_interpreter(model):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

    def run(sample):
        interpreter.set_tensor(inp, sample)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return run


def callgrind_instructions(executable, x):
    counts = []
    for n in (1, 201):
        directory = executable.parent
        np.ascontiguousarray(x[:n], dtype="<f4").tofile(directory / "in.bin")
        log = directory / f"callgrind.{n}"
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={log}", str(executable),
                        str(directory / "in.bin"), str(directory / "out.bin")], capture_output=True, check=True)
        summary = [line for line in log.read_text().splitlines() if line.startswith("summary:")][0]
        counts.append(int(summary.split()[1]))
    return (counts[1] - counts[0]) / 200


def dense_macs(model):
    from keras_grs import flops_by_layer

    per_layer = flops_by_layer(model)
    dense = sum(v for k, v in per_layer.items() if "dense" in k or k == "output") // 2
    return dense, count_flops(model) // 2


def main():
    rows = []
    rng = np.random.default_rng(1)
    for label, shape, remove in CASES:
        model = build(label, shape, remove)
        x = rng.normal(size=(201, *shape)).astype("float32")
        samples = [x[i : i + 1] for i in range(200)]
        with tempfile.TemporaryDirectory() as directory:
            c_backend.export(model, directory, name=label.split()[0])
            executable = c_backend.build(directory)
            _, c_ns = c_backend.run(executable, x[:200], repeats=200)
            instructions = callgrind_instructions(executable, x)
        tflite_ns = time_per_call(tflite_interpreter(model), samples)
        keras_ns = time_per_call(lambda s: model(s, training=False), samples[:100], repeats=1)
        dense_mac, macs = dense_macs(model)
        rows.append((label, macs, dense_mac, c_ns, tflite_ns, keras_ns, instructions / macs))
        print(rows[-1], flush=True)
    lines = [
        "# Generated C: latency and instructions per multiply-accumulate",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or platform.platform()}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}. Measured in one run by "
        "`benchmarks/c_latency.py`; random weights (latency does not depend on training).",
        "",
        "| model | MACs | C ns/inference | TFLite ns/invoke | Keras ns/call | TFLite / C | Keras / C | x86 instructions per MAC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, macs, _, c_ns, t_ns, k_ns, per_mac in rows:
        lines.append(f"| {label} | {macs:,} | {c_ns:,.0f} | {t_ns:,.0f} | {k_ns:,.0f} | {t_ns / c_ns:.1f}x | "
                     f"{k_ns / c_ns:.0f}x | {per_mac:.2f} |")
    lines += ["", "Instructions per MAC count everything the inference does (activations, pooling, the scheduler) "
              "divided by the multiply-accumulates; the MLPs are all Dense layers."]
    out = Path(__file__).parent / "results" / "c_latency.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
