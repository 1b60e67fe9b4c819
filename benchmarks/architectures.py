"""Coverage: how much of keras.applications keras-grs can analyze and shrink exactly.

For every model of ``keras.applications`` built with ``weights=None``, the smallest input it accepts, 10 classes and
no classifier activation (logits compare better than a saturated softmax): analyze it (prunable groups found, pinned
groups, and how many of its producer layers, Dense/Conv/SeparableConv, start a prunable group), then remove 25% of the
units of five random prunable groups and compare the shrunk model with the parent whose removed units are silenced
(zeroed at every layer of their group, ``keras_grs.surgery.silenced_call``): exact when the max abs difference is at
most 1e-4 of the parent's largest output. BatchNormalization statistics and biases are randomized first, so that a
channel that is not removed where it should be shows. Each model runs in a subprocess of its own (memory is freed
between models) with a time limit.

Run: .venv/bin/python benchmarks/architectures.py [--models ResNet50 MobileNetV2 ...] [--timeout 600] [--float64]
     (writes benchmarks/results/architectures.md; ``make bench-architectures``)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TOLERANCE = 1e-4
SIDES = (32, 71, 75)  # the smallest inputs keras.applications accepts: most 32, Xception 71, Inception* 75


# One small member of each family first, so that a run cut short still covers every family; then the rest.
FIRST = ("MobileNet", "MobileNetV2", "MobileNetV3Small", "ResNet50", "ResNet50V2", "VGG16", "DenseNet121",
         "EfficientNetB0", "EfficientNetV2B0", "Xception", "InceptionV3", "InceptionResNetV2", "NASNetMobile",
         "ConvNeXtTiny")


def all_models() -> list[str]:
    import keras

    names = [n for n in dir(keras.applications) if n[0].isupper()]
    return [n for n in FIRST if n in names] + sorted(set(names) - set(FIRST))


def measure(name: str, seed: int = 0) -> dict:
    """Analyze and shrink one application; the numbers of one table row."""
    import keras
    import numpy as np

    import keras_grs
    from keras_grs.layers import kind_of
    from keras_grs.structure import leaf_layers
    from keras_grs.surgery import silenced_call

    constructor = getattr(keras.applications, name)
    for side in SIDES:
        try:
            model = constructor(weights=None, input_shape=(side, side, 3), classes=10, classifier_activation=None)
            break
        except ValueError:
            continue
    else:
        raise ValueError(f"{name} accepts none of the inputs {SIDES}")
    rng = np.random.default_rng(seed)
    for layer in leaf_layers(model):  # by variable name: InceptionV3's BatchNormalization has no gamma
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        values = []
        for variable, value in zip(layer.weights, layer.get_weights()):
            if is_bn and variable.name in ("gamma", "moving_variance"):
                value = rng.uniform(0.5, 1.5, value.shape)
            elif variable.name in ("beta", "moving_mean", "bias"):
                value = rng.normal(0, 0.1, value.shape)
            values.append(np.asarray(value, "float32"))
        layer.set_weights(values)
    start = time.perf_counter()
    structure = keras_grs.analyze(model)
    analyze_s = time.perf_counter() - start
    producers = [layer.name for layer in leaf_layers(model) if kind_of(layer).role == "producer"]
    in_prunable = {n for g in structure.groups for n in g.layers} & set(producers)
    picks = rng.choice(len(structure.groups), size=min(5, len(structure.groups)), replace=False)
    remove = {}
    for i in picks:
        group = structure.groups[int(i)]
        remove[group.name] = sorted(rng.choice(group.width, size=max(1, group.width // 4), replace=False).tolist())
    start = time.perf_counter()
    child = keras_grs.shrink(model, remove, structure)
    shrink_s = time.perf_counter() - start
    x = rng.normal(size=(2, side, side, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(silenced_call(model, remove, x, structure))
    got = keras.ops.convert_to_numpy(child(x, training=False))
    scale = float(np.abs(expected).max()) or 1.0
    difference = float(np.abs(got - expected).max()) / scale
    reasons = sorted({re.sub(r" \(.*\)$", "", g.pinned.split(": ")[-1]) for g in structure.pinned})
    return {
        "model": name, "input": side, "params": model.count_params(), "child_params": child.count_params(),
        "producers": len(producers), "producers_prunable": len(in_prunable), "groups": len(structure.groups),
        "pinned": len(structure.pinned), "pinned_reasons": reasons, "removed": sum(map(len, remove.values())),
        "relative_diff": difference, "exact": difference <= TOLERANCE, "analyze_s": analyze_s, "shrink_s": shrink_s,
    }


def row(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | | | | | | | | {r['error']} |"
    return (f"| {r['model']} | {r['input']} | {r['params']:,} | {r['producers_prunable']}/{r['producers']} | "
            f"{r['groups']} | {r['pinned']} | {r['relative_diff']:.1e} {'exact' if r['exact'] else 'DIFFERS'} | "
            f"{r['analyze_s'] + r['shrink_s']:.1f} ({r['analyze_s']:.1f} + {r['shrink_s']:.1f}) | "
            f"{'; '.join(r['pinned_reasons'])} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="application names (default: all of keras.applications)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per model")
    parser.add_argument("--float64", action="store_true",
                        help="build and compare in float64 (tells float32 rounding in a deep random net from a bug)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the subprocess: measure one model, print JSON
    args = parser.parse_args()
    if args.one:
        if args.float64:
            import keras

            keras.config.set_floatx("float64")
        print("RESULT " + json.dumps(measure(args.one)), flush=True)
        return
    names = args.models or all_models()
    results = []
    for index, name in enumerate(names):
        start = time.perf_counter()
        try:
            command = [sys.executable, __file__, "--one", name] + (["--float64"] if args.float64 else [])
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if lines:
                result = json.loads(lines[-1][len("RESULT "):])
            else:
                error = (done.stderr.strip().splitlines() or ["no output"])[-1]
                result = {"model": name, "error": error.replace("|", "/")[:300]}
        except subprocess.TimeoutExpired:
            result = {"model": name, "error": f"not run to the end: over the {args.timeout:.0f} s limit"}
        results.append(result)
        print(row(result), f"[{time.perf_counter() - start:.0f} s]", flush=True)
        report(results, names[index + 1 :], args.timeout)


def report(results: list[dict], pending: list[str], timeout: float) -> None:
    """Write the table (after every model, so that a run cut short keeps what it measured)."""
    from common import machine, write

    exact = [r for r in results if r.get("exact")]
    lines = [
        "# Coverage of keras.applications: analyze and shrink", "",
        f"Machine: {machine()}", "",
        "Every model with `weights=None`, its smallest accepted input, 10 classes, logits; BatchNormalization "
        "statistics and biases randomized. *Producers in prunable groups*: Dense/Conv/SeparableConv layers whose "
        "output channels belong to a prunable group, of all of them (the rest feed the model output or a pinned "
        "group). 25% of the units of five random prunable groups removed; *difference*: max abs difference between "
        "the shrunk model and the silenced parent, relative to the parent's largest logit (exact: <= 1e-4). "
        "Seconds: analyze + shrink (shrink builds the child and copies the weights).", "",
        f"**{len(exact)} of {len(results)} models exact.**", "",
        "| model | input | params | producers in prunable groups | prunable groups | pinned groups | difference | "
        "seconds | pinned because |",
        "|---|---|---|---|---|---|---|---|---|",
        *[row(r) for r in results], "",
        f"Not run yet: {', '.join(pending)}." if pending else "Every application ran.", "",
        f"Each model in a subprocess of its own, limit {timeout:.0f} s. Run: `make bench-architectures` "
        "(or `.venv/bin/python benchmarks/architectures.py --models ResNet50 ...`).",
    ]
    write("architectures.md", lines)


if __name__ == "__main__":
    main()
