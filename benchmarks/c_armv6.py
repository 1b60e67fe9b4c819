"""ARMv6 cost of the generated C: instructions per inference and per MAC on the Pi Zero's ARM1176, per actor, with
the instruction mix and an estimate of cycles and milliseconds.

Each model is exported with c_backend.export, built with arm-linux-gnueabi-gcc (c_backend.armv6.CFLAGS: -O2
-march=armv6zk -mfpu=vfp -mfloat-abi=softfp -static) and run under qemu-arm -cpu arm1176 on SAMPLES inputs;
c_backend.armv6.measure counts what runs inside NAME_context_infer (the driver is outside the window) and the count is
cross-checked with qemu's -singlestep on one sample. The cycle model is c_backend.armv6.estimate_cycles.

Run: .venv/bin/python benchmarks/c_armv6.py   (or make bench-armv6; writes benchmarks/results/c_armv6.md)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import c_backend  # noqa: E402
from c_backend import armv6  # noqa: E402
from keras_grs import count_flops, models, shrink  # noqa: E402

SAMPLES = 4
CASES = [
    ("nn1", (140,), {}),
    ("nn1 compact", (140,), {"dense1": 24, "dense2": 12, "dense3": 6}),  # 8x4x2
    ("cnn1", (12, 12, 1), {}),
    ("cnn1 compact", (12, 12, 1), {"conv1": 22, "conv2": 10, "dense1": 24, "dense2": 13, "dense3": 6}),
]
SEED_PI_ZERO_MS = {"nn1": (1.203, 0.572), "cnn1": (16.277, 4.646)}  # the seed's LIDE-C, original -> pruned
MIX = ("vfp_mac", "vfp_load", "vfp_other", "vfp_store", "load", "store", "integer", "branch")
GRAPH = "graph (scheduler, FIFOs, copy-out)"
# Called by the FIFOs (ring index modulo) and NAME_context_infer (output copy): part of the graph's cost.
GRAPH_HELPERS = ("memcpy", "__aeabi_idivmod", ".divsi3_skip_div0_test")
# Debian's armel glibc computes expf (softmax) in soft-float double; Raspberry Pi OS's armhf libm uses the VFP.
MATH = "expf (softmax), with armel's soft-float double helpers"


def build(name, shape, remove_counts):
    model = models.build(name.split()[0], shape)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=0.3, size=w.shape).astype("float32") for w in model.get_weights()])
    return shrink(model, {g: list(range(n)) for g, n in remove_counts.items()}) if remove_counts else model


def actor_of(ops, model_name):
    functions = {f"{op.actor}_{f}": op.actor for op in ops
                 for f in ("new", "enable", "invoke", "compute", "position", "terminate")}

    def group(symbol):
        if symbol in functions:
            return functions[symbol]
        if symbol.startswith("lide_c") or symbol == f"{model_name}_context_infer" or symbol in GRAPH_HELPERS:
            return GRAPH
        if symbol.startswith(("exp", "__")):
            return MATH
        return f"library ({symbol})"

    return group


def measure_case(label, shape, remove, rng, precision="float32"):
    model = build(label, shape, remove)
    name = label.split()[0]
    label = label if precision == "float32" else f"{label} int8"
    calibration = rng.normal(size=(64, *shape)).astype("float32")  # the int8 ranges: samples like the inputs
    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        exported = c_backend.export(model, directory, name=name, target="pi-zero", precision=precision,
                                    calibration=calibration if precision == "int8" else None)
        executable = armv6.build_dir(directory)
        x = rng.normal(size=(SAMPLES, *shape)).astype("<f4")
        x.tofile(directory / "in.bin")
        window = (f"{name}_context_infer", "main")
        run = armv6.measure(executable, [directory / "in.bin", directory / "out.bin"], window=window)
        x[:1].tofile(directory / "one.bin")
        block = armv6.measure(executable, [directory / "one.bin", directory / "out.bin"], window=window)
        single = armv6.measure(executable, [directory / "one.bin", directory / "out.bin"], window=window,
                               singlestep=True)
        symbols = armv6.Symbols(executable)
    actors = {op.actor for op in exported.ops}
    data = sum(size for symbol, size in symbols.data.items() if any(symbol.startswith(a + "_") for a in actors))
    data += 4 * int(np.prod(shape)) + symbols.data.get("instance", 0)  # input, and the model's context
    return {
        "label": label, "ops": exported.ops, "run": run, "macs": count_flops(model) // 2, "data": data,
        "cycles": armv6.estimate_cycles(run, data_bytes=data), "group": actor_of(exported.ops, name),
        "single_step_agrees": block.instructions == single.instructions,
    }


def report(rows) -> str:
    lines = [
        "# Generated C on the Pi Zero's ARM1176: instructions per multiply-accumulate (qemu-arm count)",
        "",
        f"Measured in one run by `benchmarks/c_armv6.py` (`make bench-armv6`): float32 and int8 (TFLite's "
        f"scheme, calibrated on 64 random inputs; its MACs are SMLAD halves, counted in `integer`), random weights, "
        f"{SAMPLES} inferences per model, `{armv6.CC} {armv6.CFLAGS}`, `{' '.join(armv6.QEMU)}`. Counted from "
        "entering `NAME_context_infer` until back in `main` (the scheduler, FIFOs and the output copy are included, "
        "the "
        "driver is not); the count was cross-checked with `-singlestep` on one inference. The cycles and "
        "milliseconds are an *estimate* from `c_backend.armv6.estimate_cycles` (ARM1176 at 1 GHz; assumptions "
        "in docs/c_backend.md), not a measurement on a board.",
        "",
        "| model | MACs | instructions / inference | per MAC | vmla share | est. cycles / MAC | est. Pi Zero ms | "
        "seed's Pi Zero ms | data KB | single-step agrees |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        run, cycles, name = row["run"], row["cycles"], row["label"].split()[0]
        per_call = run.per_call()
        seed = SEED_PI_ZERO_MS.get(name)
        seed_text = "" if seed is None else f"{seed[1] if 'compact' in row['label'] else seed[0]} " \
                                            f"({'pruned' if 'compact' in row['label'] else 'original'})"
        lines.append(
            f"| {row['label']} | {row['macs']:,} | {per_call:,.0f} | {per_call / row['macs']:.2f} | "
            f"{run.by_category['vfp_mac'] / run.instructions:.0%} | {cycles['cycles'] / row['macs']:.2f} | "
            f"{cycles['ms']:.3f} | {seed_text} | {row['data'] / 1024:.1f} | "
            f"{'yes' if row['single_step_agrees'] else 'NO'} |")
    lines += ["", "The seed's figures are its own pruned models on a real Pi Zero; the compact models here are fixed "
              "structures of similar size (nn1 8x4x2, cnn1 10-6-8-3-2 filters/units), so compare the order of "
              "magnitude, not the digits.", "", "## Instruction mix (share of instructions per inference)", "",
              "| model | " + " | ".join(MIX) + " | vldm registers / vfp load |", "|---|" + "---|" * (len(MIX) + 1)]
    for row in rows:
        run = row["run"]
        loads = run.by_category["vfp_load"]
        lines.append(f"| {row['label']} | " + " | ".join(f"{run.by_category[c] / run.instructions:.0%}" for c in MIX)
                     + f" | {run.vfp_registers_loaded / loads if loads else 0:.2f} |")
    lines += ["", "## Per actor (instructions per inference; per MAC where the actor multiplies)", ""]
    for row in rows:
        run = row["run"]
        lines += [f"### {row['label']}", "", "| actor | kind | MACs | instructions | per MAC | vmla | vfp loads | "
                  "integer + branches | est. cycles |", "|---|---|---|---|---|---|---|---|---|"]
        grouped = run.grouped(row["group"])
        ops = {op.actor: op for op in row["ops"]}
        cycles_by_group = armv6.cycles_by_group(run, row["group"])
        for group, categories in sorted(grouped.items(), key=lambda item: -sum(item[1].values())):
            total = sum(categories.values()) / run.calls
            op = ops.get(group)
            macs = armv6.op_macs(op) if op else 0
            lines.append(
                f"| {group} | {op.kind if op else ''} | {macs:,} | {total:,.0f} | "
                f"{total / macs if macs else float('nan'):.2f} | {categories['vfp_mac'] / run.calls:,.0f} | "
                f"{categories['vfp_load'] / run.calls:,.0f} | "
                f"{(categories['integer'] + categories['branch']) / run.calls:,.0f} | "
                f"{cycles_by_group.get(group, 0.0):,.0f} |".replace("| nan |", "| |"))
        lines.append("")
    return "\n".join(lines)


def main():
    rng = np.random.default_rng(1)
    rows = []
    for precision in ("float32", "int8"):
        for label, shape, remove in CASES:
            rows.append(measure_case(label, shape, remove, rng, precision))
            run = rows[-1]["run"]
            print(f"{rows[-1]['label']}: {run.per_call():,.0f} instructions per inference, "
                  f"{run.per_call() / rows[-1]['macs']:.2f} per MAC", flush=True)
    text = report(rows)
    out = Path(__file__).parent / "results" / "c_armv6.md"
    out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
