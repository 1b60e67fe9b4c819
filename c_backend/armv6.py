"""The ARMv6 cost meter: how many instructions the Pi Zero's ARM1176 executes for the generated C, and where.

A program built for ARMv6 runs under ``qemu-arm -cpu arm1176`` with qemu's translation-block log
(``-d in_asm,exec,nochain``): ``in_asm`` prints each block's instructions once, when it is translated, and
``exec`` (with ``nochain``, so no block jumps straight into the next one unlogged) prints a line every time a
block runs. The block a ``Trace`` line names was translated just before its first run, so each block's
instructions are known; executed instructions are the blocks' sizes times their runs. ``singlestep=True``
translates one instruction per block instead (slower; the same count, used to cross-check).

Only a *window* of the run is counted when ``window=(entry, caller)`` is given: from each arrival at the first
instruction of the function ``entry`` until execution is back in the function ``caller``. For a model that is
``NAME_context_infer`` called from ``main``, so the driver (start-up, file input and output) is never counted and
every inference is counted whole, with the scheduler, FIFOs and ``memcpy`` it calls.

Instructions are attributed to the symbol (from ``nm``) whose range holds them, and sorted into a mix:
``vfp_load`` (vldr, vldm, vpop), ``vfp_store``, ``vfp_mac`` (vmla, vmul and relatives), ``vfp_other``,
``load``, ``store``, ``branch`` (b, bl, bx, and loads that write pc) and ``integer`` (everything else).

The cycle estimate for the ARM1176JZF-S with its VFP11 (Raspberry Pi Zero, 1 GHz) is :func:`estimate_cycles`;
its assumptions are listed there and in docs/c_backend.md.

Example (needs ``make c-toolchains``)::

    from c_backend import armv6
    exe = armv6.build_dir("out/c")                  # the exported model, built for ARMv6
    run = armv6.measure(exe, ["in.bin", "out.bin"], window=("nn1_context_infer", "main"))
    run.calls, run.instructions / run.calls, run.by_category["vfp_mac"]
"""

from __future__ import annotations

import bisect
import re
import shutil
import subprocess
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from c_backend.ops import Conv, Dense, SparseDense
from c_backend.targets import TARGETS
from c_backend.verify import build

# the Pi Zero target's check: its compiler, flags and qemu command
CC, CFLAGS, QEMU = TARGETS["pi-zero"].check.cc, TARGETS["pi-zero"].check.cflags, TARGETS["pi-zero"].check.runner
NM = "arm-linux-gnueabi-nm"
CATEGORIES = ("vfp_load", "vfp_store", "vfp_mac", "vfp_other", "load", "store", "branch", "integer")

_CONDITION = r"(?:eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le|al)?"
_BRANCH = re.compile(rf"^(?:b|bl|bx|blx){_CONDITION}(?:\.[wn])?$")
_VFP_MAC = ("vmla", "vmls", "vnmla", "vnmls", "vmul", "vnmul", "vfma", "vfms", "vfnma", "vfnms")
_INSTRUCTION = re.compile(r"^0x([0-9a-f]+):\s+[0-9a-f]+\s+(\S+)\s*(.*)$")
_TRACE = re.compile(r"^Trace \d+: (0x[0-9a-f]+) \[[0-9a-f]+/([0-9a-f]+)/")


def missing_tools() -> list[str]:
    """The programs the meter needs that are not on PATH (``make c-toolchains`` installs them)."""
    return [tool for tool in (CC, NM, QEMU[0]) if shutil.which(tool) is None]


def _register_list(operands: str) -> list[str]:
    """The registers of a ``{r4, r5, s8-s15}`` list, ranges expanded."""
    match = re.search(r"\{([^}]*)\}", operands)
    if not match:
        return []
    registers = []
    for item in match.group(1).split(","):
        item = item.strip()
        bounds = re.fullmatch(r"([a-z]+)(\d+)-[a-z]+(\d+)", item)
        if bounds:
            registers += [f"{bounds.group(1)}{n}" for n in range(int(bounds.group(2)), int(bounds.group(3)) + 1)]
        elif item:
            registers.append(item)
    return registers


def classify(mnemonic: str, operands: str = "") -> str:
    """The mix category of one instruction, from its mnemonic (as qemu or objdump print it) and operands."""
    mnemonic = mnemonic.lower()
    base = mnemonic.split(".")[0]
    if base.startswith("v"):
        if base.startswith(("vldr", "vldm", "vpop")):
            return "vfp_load"
        if base.startswith(("vstr", "vstm", "vpush")):
            return "vfp_store"
        if base.startswith(_VFP_MAC):
            return "vfp_mac"
        return "vfp_other"
    if _BRANCH.match(mnemonic):
        return "branch"
    if base.startswith(("ldr", "ldm", "pop")):
        writes_pc = "pc" in _register_list(operands) or re.match(r"^pc\s*,", operands) is not None
        return "branch" if writes_pc else "load"
    if base.startswith(("str", "stm", "push")):
        return "store"
    return "integer"


@dataclass(frozen=True)
class Instruction:
    """One instruction as qemu translated it."""

    address: int
    mnemonic: str
    operands: str

    @property
    def category(self) -> str:
        return classify(self.mnemonic, self.operands)

    @property
    def transfers(self) -> int:
        """Registers moved by a load/store multiple (vldm, ldm, push, ...); 1 for anything else."""
        return max(len(_register_list(self.operands)), 1) if "{" in self.operands else 1


@dataclass
class Measurement:
    """What :func:`measure` counted (inside the window when one was given, else the whole run)."""

    calls: int
    instructions: int
    by_symbol: Counter = field(default_factory=Counter)
    by_category: Counter = field(default_factory=Counter)
    by_symbol_category: dict = field(default_factory=dict)  # symbol -> Counter of categories
    executions: Counter = field(default_factory=Counter)  # instruction address -> times executed
    blocks: dict = field(default_factory=dict)  # block start -> its Instructions (for the cycle estimate)
    block_runs: Counter = field(default_factory=Counter)  # block start -> runs counted
    block_symbol: dict = field(default_factory=dict)  # block start -> the function it starts in
    vfp_registers_loaded: int = 0  # registers filled by vldr/vldm/vpop (a vldm of 8 registers counts 8)

    def per_call(self) -> float:
        return self.instructions / self.calls if self.calls else float(self.instructions)

    def grouped(self, group) -> dict[str, Counter]:
        """Categories per group, where ``group(symbol)`` names the group of each symbol (e.g. an actor)."""
        result: dict[str, Counter] = defaultdict(Counter)
        for symbol, categories in self.by_symbol_category.items():
            result[group(symbol)].update(categories)
        return dict(result)


class Symbols:
    """Function symbols of an executable, sorted, from ``nm``: which function holds an address."""

    def __init__(self, executable):
        output = subprocess.run([NM, "-n", "-S", "--defined-only", str(executable)], capture_output=True,
                                text=True, check=True).stdout
        self.starts: list[int] = []
        self.names: list[str] = []
        self.sizes: dict[str, int] = {}
        self.data: dict[str, int] = {}  # data objects (weights, buffers) and their sizes in bytes
        for line in output.splitlines():
            parts = line.split()
            if len(parts) == 4:
                address, size, kind, name = int(parts[0], 16), int(parts[1], 16), parts[2], parts[3]
            elif len(parts) == 3:
                address, size, kind, name = int(parts[0], 16), 0, parts[1], parts[2]
            else:
                continue
            name = name.split(".")[0] or name  # gcc clones: f.constprop.0, f.isra.0, f.part.0
            if kind in "tTwW":
                if name.startswith("$"):
                    continue  # ARM mapping symbols ($a, $d)
                self.starts.append(address)
                self.names.append(name)
                self.sizes[name] = max(self.sizes.get(name, 0), size)
            elif kind in "dDbBrR" and size:
                self.data[name] = self.data.get(name, 0) + size
        self.address = dict(zip(self.names, self.starts))

    def at(self, address: int) -> str:
        index = bisect.bisect_right(self.starts, address) - 1
        return self.names[index] if index >= 0 else "?"

    def holds(self, name: str, address: int) -> bool:
        return self.at(address) == name


def measure(executable, args=(), window=None, singlestep=False, runner=QEMU, timeout=600) -> Measurement:
    """Run ``executable`` under qemu and count the instructions it executes.

    Args:
        executable: a static ARM executable (see :func:`build_dir`).
        args: its command-line arguments.
        window: ``(entry, caller)``: count only from each arrival at function ``entry`` until execution is back
            in function ``caller`` (``calls`` is the number of arrivals); ``None`` counts the whole run.
        singlestep: one instruction per translation block (``-singlestep``): slower, the same count.
        runner: the qemu command.

    Returns:
        A :class:`Measurement`. Raises ``RuntimeError`` when the program fails or ``entry`` is never reached.
    """
    executable = Path(executable)
    symbols = Symbols(executable)
    if window is not None:
        for name in window:
            if name not in symbols.address:
                raise ValueError(f"{executable.name} has no function {name!r} (window {window})")
        entry, caller = symbols.address[window[0]], window[1]
    with tempfile.TemporaryDirectory() as directory:
        log = Path(directory) / "qemu.log"
        flags = ["-singlestep"] if singlestep else []
        command = [*runner, *flags, "-d", "in_asm,exec,nochain", "-D", str(log), str(executable), *map(str, args)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{executable.name} failed under qemu ({result.returncode}): {result.stderr}")
        blocks, runs, calls = _read_log(log, None if window is None else (entry, caller, symbols))
    measurement = Measurement(calls=calls if window is not None else 1, instructions=0)
    by_symbol_category: dict[str, Counter] = defaultdict(Counter)
    for key, count in runs.items():
        block = blocks[key]
        measurement.block_runs[block[0].address] += count
        measurement.blocks[block[0].address] = block
        measurement.block_symbol[block[0].address] = symbols.at(block[0].address)
        for instruction in block:
            measurement.executions[instruction.address] += count
            if instruction.category == "vfp_load":
                measurement.vfp_registers_loaded += count * instruction.transfers
            by_symbol_category[symbols.at(instruction.address)][instruction.category] += count
    measurement.by_symbol_category = dict(by_symbol_category)
    for symbol, categories in by_symbol_category.items():
        total = sum(categories.values())
        measurement.by_symbol[symbol] += total
        measurement.by_category.update(categories)
        measurement.instructions += total
    if window is not None and calls == 0:
        raise RuntimeError(f"{executable.name} never reached {window[0]}")
    return measurement


def _read_log(log: Path, window):
    """Blocks (key -> instructions), runs per block key (inside the window), and the number of windows."""
    blocks: dict[tuple, list[Instruction]] = {}
    runs: Counter = Counter()
    pending: list[Instruction] = []
    inside, calls = window is None, 0
    entry, caller, symbols = window if window is not None else (None, None, None)
    in_caller: dict[int, bool] = {}
    with open(log, errors="replace") as lines:
        for line in lines:
            if line.startswith("Trace"):
                match = _TRACE.match(line)
                if match is None:
                    continue
                pc = int(match.group(2), 16)
                key = (match.group(1), pc)
                if pending:
                    blocks[key] = pending  # translated just before this, its first run
                    pending = []
                if window is not None:
                    if pc == entry and not inside:
                        inside, calls = True, calls + 1
                    elif inside:
                        if pc not in in_caller:
                            in_caller[pc] = symbols.holds(caller, pc)
                        if in_caller[pc]:
                            inside = False
                if inside:
                    runs[key] += 1
                continue
            match = _INSTRUCTION.match(line)
            if match:
                pending.append(Instruction(int(match.group(1), 16), match.group(2), match.group(3).strip()))
    unknown = [key for key in runs if key not in blocks]
    if unknown:
        raise RuntimeError(f"qemu's log ran blocks it never listed (first at {unknown[0][1]:#x}); "
                           "is this qemu's in_asm format?")
    return blocks, runs, calls


def op_macs(op) -> int:
    """Multiply-accumulates of one exported op (``c_backend.export(...).ops``) per inference: what the meter's
    instructions per MAC divide by. Ops that multiply no weights count 0."""
    if isinstance(op, SparseDense):
        return op.positions * op.nonzero
    if isinstance(op, Dense):
        return op.positions * op.inputs * op.units
    if isinstance(op, Conv):
        return op.out_h * op.out_w * op.filters * op.k_h * op.k_w * op.in_c
    return 0


def build_dir(directory) -> Path:
    """Build an exported model (:func:`c_backend.export`) for ARMv6 with its Makefile; return the executable."""
    return build(directory, "pi-zero")


def build_source(source, output, cc=CC, cflags=CFLAGS) -> Path:
    """Compile one C file for ARMv6 (tests and experiments); return the executable."""
    output = Path(output)
    result = subprocess.run([cc, *cflags.split(), "-o", str(output), str(source)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"compiling {source} failed:\n{result.stderr}")
    return output


# The timing model of the cycle estimate (ARM1176JZF-S with VFP11, Raspberry Pi Zero at 1 GHz); see
# estimate_cycles for how it is used. Latencies are from issue to when a dependent instruction may issue.
VFP_ARITHMETIC_LATENCY = 8  # vmla/vmul/vadd/vsub .f32: fully pipelined, one per cycle, result after 8 cycles
VFP_LOAD_LATENCY = 4  # vldr/vldm: a loaded register is usable 4 cycles after its transfer
VFP_DIVIDE_CYCLES = 19  # vdiv/vsqrt .f32: not pipelined
VLDM_PER_CYCLE = 2  # the VFP11 load/store path is 64 bits: two single registers per cycle
CACHE_BYTES = 16 * 1024  # L1 data cache
LINE_BYTES = 32
MISS_CYCLES = 30  # a line refill from the 128 KB L2 the ARM shares with the GPU (assumed)
CLOCK_HZ = 1e9

_VFP_REGISTER = re.compile(r"\b([sd])(\d+)\b")


def _vfp_registers(text: str) -> list[str]:
    """The single-precision registers named in operand text (lists and ranges expanded; d<n> is s<2n>, s<2n+1>)."""
    names = _register_list(text) if "{" in text else [m.group(0) for m in _VFP_REGISTER.finditer(text)]
    singles = []
    for name in names:
        if len(name) > 1 and name[0] in "sd" and name[1:].isdigit():
            number = int(name[1:])
            singles += [f"s{2 * number}", f"s{2 * number + 1}"] if name[0] == "d" else [name]
    return singles


def _transfer_cycles(instruction: Instruction, per_cycle: int) -> int:
    return -(-instruction.transfers // per_cycle) if "{" in instruction.operands else 1


def _block_cycles(block: list[Instruction], ready: dict[str, float] | None = None) -> tuple[float, dict]:
    """Cycles to issue ``block`` in order, one instruction per cycle, waiting for VFP operands; and the times
    (relative to the block's end) at which VFP registers still in flight become ready."""
    time = 0.0
    ready = dict(ready or {})
    for instruction in block:
        category, base = instruction.category, instruction.mnemonic.split(".")[0]
        if category == "vfp_load":
            time += _transfer_cycles(instruction, VLDM_PER_CYCLE)
            for register in _vfp_registers(instruction.operands):
                ready[register] = time + VFP_LOAD_LATENCY - 1
        elif category == "vfp_store":
            sources = _vfp_registers(instruction.operands)
            time = max([time, *(ready.get(r, 0.0) for r in sources)]) + _transfer_cycles(instruction, VLDM_PER_CYCLE)
        elif base.startswith("vmrs"):
            time = max([time, *ready.values()]) + 1  # waits for the flags of the last vcmp
        elif category in ("vfp_mac", "vfp_other"):
            first, _, rest = instruction.operands.partition(",")
            destination, sources = _vfp_registers(first), _vfp_registers(rest)
            if base.startswith(("vcmp", "vmla", "vmls", "vnmla", "vnmls", "vfma", "vfms", "vfnma", "vfnms")):
                sources = sources + destination  # compared, or accumulated into
            if base.startswith("vcmp"):
                destination = []
            time = max([time, *(ready.get(r, 0.0) for r in sources)])
            if base.startswith(("vdiv", "vsqrt")):
                time += VFP_DIVIDE_CYCLES
                latency = 0
            else:
                time += 1
                latency = 0 if base.startswith("vmov") else VFP_ARITHMETIC_LATENCY - 1
            for register in destination:
                ready[register] = time + latency
        elif category in ("load", "store"):
            time += _transfer_cycles(instruction, 1)
        else:
            time += 1
    return time, {r: t - time for r, t in ready.items() if t > time}


def estimate_cycles(measurement: Measurement, data_bytes: int = 0) -> dict:
    """Estimated ARM1176 cycles for what ``measurement`` counted, per call.

    Assumptions (one place: the constants above): one instruction issues per cycle, in order; a VFP
    instruction waits for its operands (arithmetic result after 8 cycles, a loaded register after 4), so a
    chain of vmla into one accumulator costs 8 cycles per MAC while independent accumulators overlap; vldm and
    vstm move two single registers per cycle, ldm/stm/push/pop one; vdiv/vsqrt block for 19 cycles; integer
    results, branches (predicted) and loads hitting the cache cost their issue cycle only. A block that runs
    many times is timed in its steady state (timed twice in a row, the second time counted), so loop-carried
    accumulator chains are seen. Data: when ``data_bytes`` (weights, buffers of one inference) exceed the 16 KB
    L1 data cache, every 32-byte line of it is assumed to miss once per inference at 30 cycles (refill from L2);
    below, the data stays cached between inferences. Not modelled: integer load-use interlocks, branch
    mispredictions at loop exits, instruction-cache misses, TLB misses.

    Returns:
        ``{"issue": instructions, "stalls": cycles beyond one per instruction (VFP waits, multi-register
        transfers), "memory": miss cycles, "cycles": total, "ms":
        milliseconds at 1 GHz}``, all per call.
    """
    issue = stalls = 0.0
    for _, instructions, cycles in _block_estimates(measurement):
        issue += instructions
        stalls += cycles - instructions
    calls = max(measurement.calls, 1)
    memory = (data_bytes // LINE_BYTES) * MISS_CYCLES if data_bytes > CACHE_BYTES else 0
    cycles = (issue + stalls) / calls + memory
    return {"issue": issue / calls, "stalls": stalls / calls, "memory": float(memory), "cycles": cycles,
            "ms": cycles / CLOCK_HZ * 1e3}


def _block_estimates(measurement: Measurement):
    """(block start, instructions, cycles) of every block counted, over all calls."""
    for start, runs in measurement.block_runs.items():
        block = measurement.blocks[start]
        once, in_flight = _block_cycles(block)
        steady = _block_cycles(block, in_flight)[0] if runs > 1 else once
        yield start, len(block) * runs, once + steady * (runs - 1)


def cycles_by_group(measurement: Measurement, group) -> dict[str, float]:
    """The core part of :func:`estimate_cycles` (no cache misses) per call, split by ``group(symbol)`` of the
    function each block starts in (e.g. the actor of an ``_invoke`` function)."""
    result: dict[str, float] = defaultdict(float)
    for start, _, cycles in _block_estimates(measurement):
        result[group(measurement.block_symbol[start])] += cycles / max(measurement.calls, 1)
    return dict(result)
