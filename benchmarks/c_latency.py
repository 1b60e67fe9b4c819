"""Benchmark of the generated C: latency against the TFLite interpreter and Keras, and instructions per MAC.

For nn1 and cnn1, original and compact (fixed compact structures of the size JGRS finds on the simulated data),
measured side by side in one run:
  * C: the generated driver's own loop (-O2, host), ns per inference;
  * TFLite: tf.lite.Interpreter, invoke() one sample at a time from Python (what a Pi user would otherwise run);
  * Keras: model(x) one sample at a time;
  * x86 instructions per multiply-accumulate from valgrind --tool=callgrind (the difference between runs on 201 and
    on 1 sample, so the driver's start-up cancels out), for the whole inference and per actor (callgrind's count
    per function, grouped by actor as benchmarks/c_armv6.py groups the ARMv6 count), so each convolution has its
    own figure.

Run: .venv/bin/python benchmarks/c_latency.py   (writes benchmarks/results/c_latency.md)
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import c_backend  # noqa: E402
from c_backend import armv6  # noqa: E402
from c_armv6 import GRAPH, MATH, actor_of  # noqa: E402
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


def by_function(log) -> Counter:
    """Instructions per function (its own, callees excluded) of a callgrind log, from callgrind_annotate."""
    text = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=no", str(log)], capture_output=True,
                          text=True, check=True).stdout
    counts = Counter()
    for line in text.splitlines():
        match = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*:(\S+)", line)
        if match and match.group(2) != "TOTALS":
            counts[match.group(2)] += int(match.group(1).replace(",", ""))
    return counts


def x86_group(ops, model_name):
    """The actor (or the graph, or expf) an x86 function belongs to: as on ARMv6, with glibc's names for its
    memcpy and expf variants (__memcpy_avx_unaligned_erms, __expf_fma)."""
    group = actor_of(ops, model_name)

    def name(symbol):
        symbol, _, caller = symbol.partition("'")  # --separate-callers: a library copy counts for its caller
        if "memcpy" in symbol or "memmove" in symbol:
            return name(caller) if caller else GRAPH
        if "exp" in symbol.lower() and not symbol.startswith(model_name):
            return "expf (softmax)"
        named = group(symbol)
        return f"library ({symbol})" if named == MATH else named  # MATH names armel's helpers

    return name


def callgrind_instructions(executable, x, group):
    """x86 instructions per inference: in all, and per actor (``group`` maps a function, named with its caller, to
    its actor)."""
    totals, functions = [], []
    for n in (1, 201):
        directory = executable.parent
        np.ascontiguousarray(x[:n], dtype="<f4").tofile(directory / "in.bin")
        log = directory / f"callgrind.{n}"
        subprocess.run(["valgrind", "--tool=callgrind", "--separate-callers=1", f"--callgrind-out-file={log}", str(executable),
                        str(directory / "in.bin"), str(directory / "out.bin")], capture_output=True, check=True)
        summary = [line for line in log.read_text().splitlines() if line.startswith("summary:")][0]
        totals.append(int(summary.split()[1]))
        functions.append(by_function(log))
    actors = Counter()
    for symbol in set(functions[0]) | set(functions[1]):
        actors[group(symbol)] += (functions[1][symbol] - functions[0][symbol]) / 200
    # start-up and exit functions cancel out between the two runs; keep what the inferences run
    return (totals[1] - totals[0]) / 200, {name: count for name, count in actors.items() if count >= 2}


def dense_macs(model):
    from keras_grs import flops_by_layer

    per_layer = flops_by_layer(model)
    dense = sum(v for k, v in per_layer.items() if "dense" in k or k == "output") // 2
    return dense, count_flops(model) // 2


def main():
    rows, per_actor = [], []
    rng = np.random.default_rng(1)
    for label, shape, remove in CASES:
        model = build(label, shape, remove)
        x = rng.normal(size=(201, *shape)).astype("float32")
        samples = [x[i : i + 1] for i in range(200)]
        with tempfile.TemporaryDirectory() as directory:
            name = label.split()[0]
            exported = c_backend.export(model, directory, name=name)
            executable = c_backend.build(directory)
            _, c_ns = c_backend.run(executable, x[:200], repeats=200)
            instructions, actors = callgrind_instructions(executable, x, x86_group(exported.ops, name))
        per_actor.append((label, exported.ops, actors))
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
              "divided by the multiply-accumulates; the MLPs are all Dense layers.", "",
              "## Per actor (x86 instructions per inference; per MAC where the actor multiplies)", "",
              "Callgrind's count per function, grouped by actor as `benchmarks/c_armv6.py` groups the ARMv6 count; "
              "a convolution's MACs are those of its whole output (with a fused pooling, the outputs no pooling "
              "window covers are not computed, but still counted), as on ARMv6.", ""]
    for label, ops, actors in per_actor:
        lines += [f"### {label}", "", "| actor | kind | MACs | instructions | per MAC |", "|---|---|---|---|---|"]
        kinds = {op.actor: op for op in ops}
        for group, count in sorted(actors.items(), key=lambda item: -item[1]):
            op = kinds.get(group)
            macs = armv6.op_macs(op) if op else 0
            lines.append(f"| {group} | {op.kind if op else ''} | {macs:,} | {count:,.0f} | "
                         f"{f'{count / macs:.2f}' if macs else ''} |")
        lines.append("")
    out = Path(__file__).parent / "results" / "c_latency.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
