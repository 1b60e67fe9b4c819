"""The ARMv6 cost meter counts exactly what the ARM1176 executes: checked against a loop read from objdump."""

import re
import subprocess

import numpy as np
import pytest
from helpers import randomize

import c_backend
from c_backend import armv6
from keras_grs import models

pytestmark = pytest.mark.skipif(bool(armv6.missing_tools()), reason="make c-toolchains installs the ARM tools")

ITERATIONS = 1000
CALLS = 3
LOOP = f"""
#include <stdio.h>
float data[{ITERATIONS + CALLS}];
__attribute__((noinline)) float work(const float *a) {{
    float s = 0.0f;
    int i;
    for (i = 0; i < {ITERATIONS}; i++) {{
        s += a[i] * 3.0f;
    }}
    return s;
}}
int main(void) {{
    float total = 0.0f;
    int r;
    for (r = 0; r < {CALLS}; r++) {{
        total += work(data + r); /* a different argument each time, so no call is merged */
    }}
    printf("%f\\n", total);
    return 0;
}}
"""


def disassembly(executable, function):
    """(address, mnemonic, operands) of ``function``'s instructions, from objdump (literal pool words left out)."""
    text = subprocess.run(["arm-linux-gnueabi-objdump", "-d", "--no-show-raw-insn", str(executable)],
                          capture_output=True, text=True, check=True).stdout
    body = text.split(f"<{function}>:\n", 1)[1].split("\n\n", 1)[0]
    rows = [re.match(r"\s*([0-9a-f]+):\s+(\S+)\s*([^@]*)", line) for line in body.splitlines()]
    return [(int(r.group(1), 16), r.group(2), r.group(3).strip()) for r in rows if r and r.group(2) != ".word"]


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    directory = tmp_path_factory.mktemp("loop")
    (directory / "loop.c").write_text(LOOP)
    return armv6.build_source(directory / "loop.c", directory / "loop")


def test_the_count_of_a_loop_equals_its_disassembly(loop):
    instructions = disassembly(loop, "work")
    branches = [(address, operands) for address, mnemonic, operands in instructions
                if armv6.classify(mnemonic, operands) == "branch"]
    targets = [(a, re.match(r"[0-9a-f]+\b", operands)) for a, operands in branches]
    backward = [(a, int(t.group(0), 16)) for a, t in targets if t and int(t.group(0), 16) < a]
    # The shape the expected count relies on: one backward branch (the loop) and a return, nothing else.
    assert len(backward) == 1 and len(branches) == 2, instructions
    end, start = backward[0]
    body = [a for a, _, _ in instructions if start <= a <= end]
    expected = len(instructions) + (ITERATIONS - 1) * len(body)  # all once, the body again per further iteration

    measured = armv6.measure(loop, window=("work", "main"))
    assert measured.calls == CALLS
    assert measured.per_call() == expected
    assert measured.by_symbol == {"work": CALLS * expected}
    assert measured.by_category["vfp_mac"] == CALLS * ITERATIONS  # one vmla per iteration


def test_single_step_translation_counts_the_same(loop):
    blocks, single = armv6.measure(loop), armv6.measure(loop, singlestep=True)
    assert blocks.instructions == single.instructions > CALLS * ITERATIONS
    assert blocks.by_category == single.by_category


def test_one_accumulator_chain_costs_the_vfp_latency_per_iteration(loop):
    cycles = armv6.estimate_cycles(armv6.measure(loop, window=("work", "main")))
    # every vmla waits for the previous one's result: 8 cycles per iteration, the other instructions hide in it
    assert cycles["cycles"] == pytest.approx(ITERATIONS * armv6.VFP_ARITHMETIC_LATENCY, rel=0.01)
    assert cycles["issue"] < cycles["cycles"]


@pytest.mark.parametrize("mnemonic, operands, category", [
    ("vldr", "s15, [r3, #4]", "vfp_load"), ("vldmia", "r0!, {s8-s15}", "vfp_load"),
    ("vmla.f32", "s15, s14, s13", "vfp_mac"), ("vmul.f32", "s1, s2, s3", "vfp_mac"),
    ("vadd.f32", "s1, s2, s3", "vfp_other"), ("vstr", "s0, [r1]", "vfp_store"),
    ("ldr", "r3, [r2, #4]", "load"), ("pop", "{r4, pc}", "branch"), ("pop", "{r4, r5}", "load"),
    ("bne", "#0x105c0", "branch"), ("bl", "#0x10000", "branch"), ("bxeq", "lr", "branch"),
    ("push", "{r4, lr}", "store"), ("bic", "r0, r0, #3", "integer"), ("subs", "r2, r2, #1", "integer"),
])
def test_instruction_mix_categories(mnemonic, operands, category):
    assert armv6.classify(mnemonic, operands) == category


def test_a_dense_model_runs_one_vmla_per_mac_per_inference(tmp_path):
    model = models.build("nn2", (20,))  # Dense 20 -> 32 -> 2
    randomize(model, np.random.default_rng(0))
    c_backend.export(model, tmp_path)
    executable = armv6.build_dir(tmp_path)
    np.random.default_rng(1).normal(size=(3, 20)).astype("<f4").tofile(tmp_path / "in.bin")
    measured = armv6.measure(executable, [tmp_path / "in.bin", tmp_path / "out.bin"],
                             window=("nn2_context_infer", "main"))
    assert measured.calls == 3
    assert measured.by_category["vfp_mac"] == 3 * (20 * 32 + 32 * 2)
    assert measured.by_symbol["main"] == 0  # the driver is outside the window
