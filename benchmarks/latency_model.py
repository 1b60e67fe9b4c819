"""Calibrate keras_grs.latency (the Pi Zero latency model the search reads) against the ARMv6 meter, and report how
far the model is from the meter.

Random small models (MLPs; CNNs with convolutions of varied kernels, strides, padding, pooling that joins its
convolution in float32 or, overlapping, does not; an unfolded BatchNormalization here and there) are exported with c_backend.export, built for ARMv6 and metered under qemu-arm
(c_backend.armv6.measure, one inference inside NAME_context_infer), float32 and int8. The meter's cycles per actor
(c_backend.armv6.cycles_by_group) are fitted, per actor kind and precision, to the features keras_grs.latency gives
that actor: non-negative least squares on relative error. The coefficients go to keras_grs/latency_pi_zero.json; the
report compares the model with the meter (whole inference, estimate_cycles with the cache rule) on nn1, compact nn1,
cnn1, compact cnn1 (the structures of benchmarks/c_armv6.py) and on held-out random models never fitted.

Run: .venv/bin/python benchmarks/latency_model.py   (or make bench-latency; writes
keras_grs/latency_pi_zero.json and benchmarks/results/latency_model.md; about 4 minutes on one core)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# this tree's keras_grs and c_backend, whose coefficient file it writes (not whichever copy the interpreter installed)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from scipy.optimize import nnls  # noqa: E402

import c_backend  # noqa: E402
from c_armv6 import CASES, GRAPH, MATH, actor_of, build  # noqa: E402
from c_backend import armv6  # noqa: E402
from keras_grs import latency  # noqa: E402

FIT_MODELS = 48  # random models metered for the fit (each in both precisions)
HELD_OUT = 12  # random models metered only to check the fit
TARGET_ERROR = 0.15  # issue 14: within 15% of the meter on the compact models
RESULT = Path(__file__).parent / "results" / "latency_model.md"
# The IR's actor kinds, as the latency model's kinds.
KINDS = {"dense": "dense", "dense_int8": "dense", "dense_sparse": "dense", "conv": "conv", "conv_int8": "conv",
         "depthwise": "conv", "pool": "pool", "pool_int8": "pool", "global_pool": "pool", "global_pool_int8": "pool",
         "softmax_int8": "exp", "quantize": "quantize", "dequantize": "dequantize"}


def random_model(rng, index):
    """A small random model: an MLP or a CNN, always ending in a Dense softmax (the seed's models do)."""
    layers = []
    if index % 2 == 0:
        shape = (int(rng.integers(3, 200)),)
        for _ in range(int(rng.integers(1, 4))):
            layers.append(keras.layers.Dense(int(rng.integers(1, 41)), activation="relu"))
            if rng.random() < 0.15:
                layers.append(keras.layers.BatchNormalization())
            if rng.random() < 0.3:
                layers.append(keras.layers.Dropout(0.5))
    else:
        side = int(rng.integers(5, 15))
        shape = (side, side, int(rng.integers(1, 4)))
        # every third CNN pools after its first convolution with windows that do not overlap (float32: fused into
        # the convolution), every third with overlapping ones (a pooling actor), so the held-out models have both
        first_pool = ("fused", "overlapping", "random")[(index // 2) % 3]
        for c in range(int(rng.integers(1, 3))):
            size = min(int(rng.integers(1, 4)), side)
            strides = 2 if rng.random() < 0.2 and side >= 6 else 1
            padding = "same" if rng.random() < 0.3 else "valid"
            layers.append(keras.layers.Conv2D(int(rng.integers(1, 25)), size, strides=strides, padding=padding,
                                              activation="relu"))
            side = -(-side // strides) if padding == "same" else (side - size) // strides + 1
            forced = c == 0 and first_pool != "random"
            if side >= 4 and (forced or rng.random() < 0.6):
                # windows that do not overlap (strides = window) join the convolution in float32; overlapping
                # ones (strides 1) keep a pooling actor
                pool = keras.layers.MaxPooling2D if rng.random() < 0.7 else keras.layers.AveragePooling2D
                window = 3 if side >= 7 and rng.random() < 0.3 else 2
                fused = first_pool == "fused" if forced else rng.random() < 0.6
                stride = window if fused else 1
                pool_padding = "same" if rng.random() < 0.3 else "valid"
                if not fused and np.random.default_rng([index, c]).random() < 0.5:
                    # overlapping poolings are averages at least half the time (with same padding: the int8
                    # kernel's checked loop and a division per output), drawn from a generator of their own: the
                    # shapes, and so rng's draws, the other layers and the other models, stay as they were
                    pool = keras.layers.AveragePooling2D
                layers.append(pool(window, strides=stride, padding=pool_padding))
                side = -(-side // stride) if pool_padding == "same" else (side - window) // stride + 1
        layers.append(keras.layers.Flatten())
        if rng.random() < 0.7:
            layers.append(keras.layers.Dense(int(rng.integers(1, 33)), activation="relu"))
    layers.append(keras.layers.Dense(int(rng.integers(2, 11)), activation="softmax"))
    model = keras.Sequential([keras.Input(shape), *layers], name=f"r{index}")
    model.set_weights([rng.normal(scale=0.3, size=w.shape).astype("float32") for w in model.get_weights()])
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):  # a variance must be positive
            layer.moving_variance.assign(np.abs(keras.ops.convert_to_numpy(layer.moving_variance)) + 0.5)
    return model


# C's `/` on int (the int8 average pooling's division by its own count) enters libgcc at __divsi3, the FIFOs' modulo
# at __aeabi_idivmod (GRAPH_HELPERS); both run the division's body.
DIVISION, DIVISION_BODY, MODULO = "__divsi3", ".divsi3_skip_div0_test", "__aeabi_idivmod"


def _entries(run, symbol) -> int:
    """Calls of ``symbol`` in ``run``: the runs of its first block."""
    starts = [start for start, owner in run.block_symbol.items() if owner == symbol]
    return run.block_runs[min(starts)] if starts else 0


def _divisions(run, group, ops):
    """``group`` with the integer divisions moved to the int8 average poolings that call them (split by their
    outputs, one division each) and the division body's cycles shared with the FIFOs' modulo by calls."""
    dividers = [op for op in ops if op.kind == "pool_int8" and op.mode == "avg" and not op.inside]
    if not dividers:
        return group
    calls, modulo = _entries(run, DIVISION), _entries(run, MODULO)
    share = calls / (calls + modulo) if calls + modulo else 0.0
    total = sum(op.out_size for op in dividers)
    cycles = group.pop(DIVISION, 0.0) + share * group.get(DIVISION_BODY, 0.0)
    group[DIVISION_BODY] = group.get(DIVISION_BODY, 0.0) * (1 - share)
    for op in dividers:
        group[op.actor] = group.get(op.actor, 0.0) + cycles * op.out_size / total
    return group


def meter(model, name, dtype, rng):
    """One metered inference: cycles per actor of the latency model (keyed by (layer, kind)), the graph's, the
    whole inference's (with the cache rule), and the actors the latency model finds."""
    shape = model.input_shape[1:]
    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        calibration = rng.normal(size=(64, *shape)).astype("float32") if dtype == "int8" else None
        exported = c_backend.export(model, directory, name=name, target="pi-zero", precision=dtype,
                                    calibration=calibration)
        executable = armv6.build_dir(directory)
        rng.normal(size=(1, *shape)).astype("<f4").tofile(directory / "in.bin")
        run = armv6.measure(executable, [directory / "in.bin", directory / "out.bin"],
                            window=(f"{name}_context_infer", "main"))
        symbols = armv6.Symbols(executable)
    actors = {op.actor for op in exported.ops}
    data = sum(size for symbol, size in symbols.data.items() if any(symbol.startswith(a + "_") for a in actors))
    data += 4 * int(np.prod(shape)) + symbols.data.get("instance", 0)
    ops = {op.actor: op for op in exported.ops}
    plan = latency.actors_of(model, dtype)
    keys = {(a.layer, a.kind) for a in plan.actors}
    exp_layers = [a.layer for a in plan.actors if a.kind == "exp"]
    cycles: dict = defaultdict(float)
    graph = 0.0
    base = actor_of(exported.ops, name)
    by_symbol = armv6.cycles_by_group(run, lambda symbol: symbol)
    by_symbol = _divisions(run, by_symbol, exported.ops)
    by_group = defaultdict(float)
    for symbol, value in by_symbol.items():
        by_group[symbol if symbol in ops else base(symbol)] += value
    for group, value in by_group.items():
        if group in ops:
            op = ops[group]
            key = (op.layer, KINDS.get(op.kind, "elementwise"))
        elif group == MATH:  # expf: the softmax's
            key = (exp_layers[-1], "exp")
        elif group.startswith("library (round"):  # roundf: the input quantization's
            key = ("input", "quantize")
        else:
            graph += value
            continue
        if key not in keys:
            raise RuntimeError(f"{name} {dtype}: the meter's actor {group} ({key}) is not one the latency model "
                               f"finds ({sorted(keys)})")
        cycles[key] += value
    total = armv6.estimate_cycles(run, data_bytes=data)["cycles"]
    return {"cycles": dict(cycles), "graph": graph, "total": total, "plan": plan}


def fit(rows):
    """Per precision and kind, non-negative coefficients minimizing the relative error of each actor's cycles."""
    table = {}
    for dtype in latency.DTYPES:
        samples: dict = defaultdict(list)
        for row in rows[dtype]:
            for actor in row["plan"].actors:
                samples[actor.kind].append((actor.features, row["cycles"].get((actor.layer, actor.kind), 0.0)))
            samples["graph"].append(({"model": 1, "actors": row["plan"].count}, row["graph"]))
        table[dtype] = {}
        for kind, names in latency.features(dtype).items():
            points = [(f, c) for f, c in samples.get(kind, []) if c > 0]
            if not points:  # a kind no random model exercises at this precision: borrow its float price
                borrowed = table.get("float32", {}).get(kind)
                same = borrowed is not None and latency.features("float32").get(kind) == names
                table[dtype][kind] = borrowed if same else [0.0] * len(names)
                continue
            a = np.array([[f[n] for n in names] for f, _ in points], dtype=float)
            b = np.array([c for _, c in points])
            coefficients, _ = nnls(a / b[:, None], np.ones(len(b)))
            table[dtype][kind] = [round(float(c), 4) for c in coefficients]
    return table


def main():
    started = time.time()
    rng = np.random.default_rng(14)
    fitted = {dtype: [] for dtype in latency.DTYPES}
    for index in range(FIT_MODELS):
        model = random_model(rng, index)
        for dtype in latency.DTYPES:
            fitted[dtype].append(meter(model, model.name, dtype, rng))
        print(f"fit model {index + 1}/{FIT_MODELS} ({time.time() - started:.0f} s)", flush=True)
    table = fit(fitted)
    table["meta"] = {
        "target": "pi-zero", "clock_hz": latency.CLOCK_HZ, "features": {d: latency.features(d) for d in latency.DTYPES},
        "fitted_on": f"{FIT_MODELS} random models, float32 and int8, metered by c_backend.armv6 "
                     "(benchmarks/latency_model.py)",
    }
    latency.COEFFICIENTS.write_text(dump(table))
    latency.coefficients.cache_clear()
    checks = []
    for label, shape, remove in CASES:
        model = build(label, shape, remove)
        for dtype in latency.DTYPES:
            checks.append((label, dtype, model, meter(model, label.split()[0], dtype, rng)))
    held = []
    for index in range(HELD_OUT):
        model = random_model(rng, FIT_MODELS + index)
        for dtype in latency.DTYPES:
            held.append((model.name, dtype, model, meter(model, model.name, dtype, rng)))
    text = report(table, fitted, checks, held, time.time() - started)
    RESULT.write_text(text + "\n")
    print(text)


def dump(table) -> str:
    """The coefficient file: one line per precision and actor kind, so a re-calibration reads as a small diff."""
    lines = ["{"]
    for n, (key, value) in enumerate(table.items()):
        end = "," if n < len(table) - 1 else ""
        if key == "meta":
            lines.append(f' "meta": {json.dumps(value)}{end}')
            continue
        lines.append(f" {json.dumps(key)}: {{")
        kinds = list(value.items())
        lines += [f"  {json.dumps(k)}: {json.dumps(v)}" + ("," if i < len(kinds) - 1 else "")
                  for i, (k, v) in enumerate(kinds)]
        lines.append(" }" + end)
    return "\n".join(lines + ["}"]) + "\n"


def _error(model, dtype, metered):
    estimate = latency.estimate_latency(model, dtype=dtype)
    return estimate, estimate.cycles / metered["total"] - 1


def report(table, fitted, checks, held, seconds) -> str:
    lines = [
        "# The Pi Zero latency model (keras_grs.latency) against the ARMv6 meter",
        "",
        f"Measured in one run by `benchmarks/latency_model.py` (`make bench-latency`, {seconds / 60:.1f} minutes): "
        f"{FIT_MODELS} random models (MLPs and CNNs, random weights) exported as C, built with `{armv6.CC} "
        f"{armv6.CFLAGS}`, one inference metered under `{' '.join(armv6.QEMU)}` and timed by "
        "`c_backend.armv6.estimate_cycles` (the meter; itself an estimate of the ARM1176 at 1 GHz, see "
        "docs/c_backend.md). The coefficients (cycles per feature, non-negative least squares on relative error "
        "per actor) are in `keras_grs/latency_pi_zero.json`. *Meter* below is the meter's cycles for one "
        "inference (scheduler, FIFOs, cache rule included); *model* is `keras_grs.estimate_latency`, from shapes "
        "alone.",
        "",
        "## The seed's structures (benchmarks/c_armv6.py)",
        "",
        "| model | dtype | meter cycles | model cycles | model ms | error |",
        "|---|---|---|---|---|---|",
    ]
    for label, dtype, model, metered in checks:
        estimate, error = _error(model, dtype, metered)
        mark = " (over 15%)" if "compact" in label and abs(error) > TARGET_ERROR else ""
        lines.append(f"| {label} | {dtype} | {metered['total']:,.0f} | {estimate.cycles:,.0f} | {estimate.ms:.4f} "
                     f"| {error:+.1%}{mark} |")
    lines += ["", "## Held-out random models (never fitted)", "",
              "| model | layers | dtype | meter cycles | model cycles | error |", "|---|---|---|---|---|---|"]
    errors = []
    for name, dtype, model, metered in held:
        estimate, error = _error(model, dtype, metered)
        errors.append(abs(error))
        shapes = ", ".join(f"{type(layer).__name__} {layer.output.shape[1:]}" for layer in model.layers
                           if not isinstance(layer, (keras.layers.Dropout, keras.layers.Flatten)))
        lines.append(f"| {name} | {shapes} | {dtype} | {metered['total']:,.0f} | {estimate.cycles:,.0f} | "
                     f"{error:+.1%} |")
    lines += ["", f"Held-out mean absolute error {np.mean(errors):.1%}, largest {max(errors):.1%}.", "",
              "## Fit on the random models (whole inference)", "", "| dtype | mean absolute error | largest |",
              "|---|---|---|"]
    for dtype in latency.DTYPES:
        # the fitted models are re-estimated from their own actor features and the fitted table
        errs = [abs(latency.price(row["plan"], table[dtype], dtype=dtype).cycles / row["total"] - 1)
                for row in fitted[dtype]]
        lines.append(f"| {dtype} | {np.mean(errs):.1%} | {max(errs):.1%} |")
    lines += ["", "## Coefficients (cycles per unit of each feature)", "", "| dtype | actor kind | coefficients |",
              "|---|---|---|"]
    for dtype in latency.DTYPES:
        for kind, names in latency.features(dtype).items():
            text = ", ".join(f"{n} {c:g}" for n, c in zip(names, table[dtype][kind]))
            lines.append(f"| {dtype} | {kind} | {text} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
