"""Where a batched epoch spends its time: a profile of the compiled fit, per layer and per instruction.

One GRS step's candidates of a seed model (cnn1 by default: five, one unit removed from each width group) are trained
together by the batched evaluator on the seed's data shape (2100 training samples, 12x12 pixels for a CNN, batch
32); each epoch includes its
validation (600 samples), which the compiled fit runs after the epoch's steps. After a warm-up epoch (the
compilation), ``tf.profiler`` traces a few epochs; XLA's CPU runtime records every instruction it runs (a fusion, a
matmul, a random draw) with its time. The compiled program names each instruction's source op, and the batched
forward puts each layer under its own name (``op2_conv``), so the time adds up per layer, forward and gradient
apart. Also timed: whole epochs, wall and CPU seconds (the CPU time suffers less from other jobs on the machine).

Run: .venv/bin/python benchmarks/conv_profile.py [--model cnn1] [--epochs 3] [--repeats 3] [--top 15]
     (prints Markdown; benchmarks/results/conv_profile.md holds a run with its before/after comparison)
"""

from __future__ import annotations

import argparse
import collections
import glob
import re
import tempfile
import time

from common import calcium_splits

import keras  # noqa: E402  (common sets TensorFlow's log level first)
import tensorflow as tf  # noqa: E402
from keras_tuner import Objective  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

import keras_grs  # noqa: E402
from keras_grs.evaluate import Job  # noqa: E402
from keras_grs.evaluate.batched import BatchedEvaluator  # noqa: E402

def setup(name):
    """The data, the initial model and a function that makes one GRS step's candidates (one per width group)."""
    train, validation, _ = calcium_splits(name, seed=0)
    keras.utils.set_random_seed(0)
    base = keras_grs.models.build(name, train[0].shape[1:])
    groups = keras_grs.analyze(base).names

    def step(directory):
        return [Job(keras_grs.shrink(base, {group: [1]}), True, f"{directory}/{group}.weights.h5", key=group)
                for group in groups]

    return train, validation, base, step


def instruction_sources(hlo: str) -> dict:
    """{instruction name: the TensorFlow op it comes from} of an optimized HLO module's text. An instruction without
    one (inside a random-number computation, say) takes the op of the instruction that calls its computation."""
    sources, computation_of, caller = {}, {}, {}
    computation = None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header:
            computation = header.group(1)
            continue
        instruction = re.match(r"^\s+(?:ROOT )?%?([\w.\-]+) = (.*)", line)
        if not instruction:
            continue
        name, rest = instruction.groups()
        computation_of[name] = computation
        source = re.search(r'op_name="([^"]+)"', rest)
        if source:
            sources[name] = source.group(1)
            for called in re.findall(r"(?:to_apply|calls|body|condition)=%?([\w.\-]+)", rest):
                caller[called] = source.group(1)
    for name, computation in computation_of.items():
        seen = set()
        while name not in sources and computation in caller and computation not in seen:
            seen.add(computation)
            sources[name] = caller[computation]
    return sources


def layer_of(op_name: str) -> str:
    """"while/op2_conv/MatMul" -> "op2_conv forward"; "gradient_tape/while/op2_conv/..." -> "... gradient"."""
    scope = re.search(r"(op\d+_\w+?)/", op_name)
    if scope is None:
        return "optimizer, loss, loop" if "gradient_tape" not in op_name else "loss gradient"
    return f"{scope.group(1)} {'gradient' if 'gradient_tape' in op_name else 'forward'}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="cnn1", help="a seed model: nn1, nn2, cnn1 or cnn2")
    parser.add_argument("--epochs", type=int, default=3, help="epochs traced (and per timing)")
    parser.add_argument("--repeats", type=int, default=3, help="timings of --epochs epochs")
    parser.add_argument("--top", type=int, default=15, help="instructions listed")
    args = parser.parse_args()
    train, validation, base, step = setup(args.model)
    evaluator = BatchedEvaluator(Objective("val_accuracy", "max"))
    evaluator.pad_to(base)
    captured = {}
    program = evaluator._program

    def capture(*a, **kw):  # keep the compiled fit and its arguments, for its optimized HLO
        fit = program(*a, **kw)

        def recorded(*arguments):
            captured["epoch"], captured["arguments"] = fit, arguments
            return fit(*arguments)

        return recorded

    evaluator._program = capture
    fit = {"epochs": args.epochs, "batch_size": 32, "validation_data": validation, "verbose": 0}
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        evaluator.evaluate(step(directory), train, fit)
        compile_seconds = time.perf_counter() - start
        walls, cpus = [], []
        for _ in range(args.repeats):
            jobs = step(directory)
            wall, cpu = time.perf_counter(), time.process_time()
            evaluator.evaluate(jobs, train, dict(fit, epochs=args.epochs))
            walls.append((time.perf_counter() - wall) / args.epochs)
            cpus.append((time.process_time() - cpu) / args.epochs)
        with tempfile.TemporaryDirectory() as trace:
            jobs = step(directory)
            tf.profiler.experimental.start(trace)
            evaluator.evaluate(jobs, train, dict(fit, epochs=args.epochs))
            tf.profiler.experimental.stop()
            space = xplane_pb2.XSpace()
            with open(sorted(glob.glob(f"{trace}/plugins/profile/*/*.xplane.pb"))[-1], "rb") as file:
                space.ParseFromString(file.read())
    hlo = captured["epoch"].experimental_get_compiler_ir(*captured["arguments"])(stage="optimized_hlo")
    sources = instruction_sources(hlo)
    per_instruction, calls = collections.Counter(), collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_numa"):  # XLA's worker threads: one event per instruction run
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if name.startswith("ThunkExecutor") or name.startswith("end: "):
                    continue
                per_instruction[name] += event.duration_ps / 1e9
                calls[name] += 1
    total = sum(per_instruction.values())
    per_layer = collections.Counter()
    for name, ms in per_instruction.items():
        per_layer[layer_of(sources.get(name, ""))] += ms
    traced = total / args.epochs
    lines = [
        f"Epoch of {len(keras_grs.analyze(base).names)} {args.model} candidates: wall {min(walls) * 1000:.0f} ms (best of {args.repeats}; all: "
        f"{', '.join(f'{w * 1000:.0f}' for w in walls)}), CPU {min(cpus) * 1000:.0f} ms; first call (compiling, then its "
        f"{args.epochs} epochs) {compile_seconds:.1f} s; instructions traced: {traced:.0f} ms per epoch, {len(per_instruction)} distinct.",
        "",
        "| layer (op of the batched plan) | ms per epoch | share |",
        "|---|---|---|",
    ]
    for layer, ms in sorted(per_layer.items(), key=lambda item: -item[1]):
        lines.append(f"| {layer} | {ms / args.epochs:.1f} | {100 * ms / total:.1f}% |")
    lines += ["", "| instruction | source op | runs per epoch | ms per epoch | share |", "|---|---|---|---|---|"]
    for name, ms in per_instruction.most_common(args.top):
        lines.append(f"| {name} | {sources.get(name, '?')} | {calls[name] // args.epochs} | {ms / args.epochs:.1f} | "
                     f"{100 * ms / total:.1f}% |")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
