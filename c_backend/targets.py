"""The machines the generated C is written for: one :class:`Target` per machine, in :data:`TARGETS`.

A target says which precisions it runs, which kernel variant the C carries, the flags of the generated Makefile,
and how *this* machine checks the code for it (compiler, flags, and the program that runs the binary: nothing
for the host, ``qemu-arm`` for the Pi Zero). :func:`c_backend.export`, :func:`c_backend.verify`, the ARMv6 meter
and ``keras-grs export-c --target`` all read this registry.

Adding a target (a Cortex-M board, say) is one more entry: its compiler flags, precisions, kernel variant and
check; a new kernel variant (CMSIS-NN calls, for instance) also needs its templates to look at ``target.kernels``.

    >>> from c_backend.targets import get
    >>> get("pi-zero").cflags
    '-O2 -std=c99 -Wall -Wextra -pedantic -march=armv6zk -mfpu=vfp -mfloat-abi=hard'
    >>> get("esp32")
    Traceback (most recent call last):
    ...
    ValueError: unknown target 'esp32'; known targets: host, pi-zero, portable
"""

from __future__ import annotations

from dataclasses import dataclass

C99 = "-O2 -std=c99 -Wall -Wextra -pedantic"
STRICT = "-O2 -std=c99 -Wall -Wextra -Werror -pedantic"  # the checks build with warnings as errors
# What each kernel variant puts in the C: "arm" adds the ARMv6 assembly paths (VFP vldmia loops for float, SMLAD
# loops for int8) behind preprocessor tests, so they compile only where the compiler targets ARM and the plain C
# elsewhere; "c" writes the plain C kernels only, for any C99 compiler.
KERNELS = ("arm", "c")
PRECISIONS = ("float32", "int8")


@dataclass(frozen=True)
class Check:
    """How this machine builds and runs a target's code to compare it with Keras: the compiler (None: the generated
    Makefile's ``$(CC)``), all its flags, and the command that runs the binary (empty: run it directly)."""

    cc: str | None
    cflags: str
    runner: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    """A machine the C is generated for.

    Attributes:
        name: what ``export(target=...)`` and ``export-c --target`` take.
        description: one line for help texts and the generated files.
        arch_flags: compiler flags for the machine, added to :data:`C99` in the generated Makefile.
        precisions: the ``precision`` values the target runs.
        kernels: the kernel variant, one of :data:`KERNELS`.
        check: how this machine builds and runs the code for the target (:class:`Check`).
    """

    name: str
    description: str
    arch_flags: str
    precisions: tuple[str, ...]
    kernels: str
    check: Check

    def __post_init__(self):
        if self.kernels not in KERNELS:
            raise ValueError(f"target {self.name!r}: kernels must be one of {', '.join(KERNELS)}, got {self.kernels!r}")
        unknown = sorted(set(self.precisions) - set(PRECISIONS))
        if unknown:
            raise ValueError(f"target {self.name!r}: unknown precisions {unknown}; known: {', '.join(PRECISIONS)}")

    @property
    def cflags(self) -> str:
        """The generated Makefile's default ``CFLAGS``."""
        return f"{C99} {self.arch_flags}".strip()

    def supports(self, precision: str) -> None:
        """Refuse a precision the target does not run, naming those it does."""
        if precision not in self.precisions:
            raise ValueError(f"target {self.name!r} runs precision {', '.join(self.precisions)}, not {precision!r}")


# Raspberry Pi OS on the Pi Zero is armhf for ARMv6; this machine checks with Debian's armel cross compiler (soft
# float calling convention, same VFP instructions), statically linked, under qemu's ARM1176.
ARMV6_CHECK = Check("arm-linux-gnueabi-gcc", f"{STRICT} -march=armv6zk -mfpu=vfp -mfloat-abi=softfp -static",
                    ("qemu-arm", "-cpu", "arm1176"))

TARGETS = {target.name: target for target in (
    Target("host", "this machine's C compiler", "", PRECISIONS, "arm", Check(None, STRICT)),
    Target("pi-zero", "Raspberry Pi Zero (ARM1176, ARMv6 with VFP), Raspberry Pi OS",
           "-march=armv6zk -mfpu=vfp -mfloat-abi=hard", PRECISIONS, "arm", ARMV6_CHECK),
    Target("portable", "any C99 compiler: plain C kernels, no inline assembly", "", PRECISIONS, "c",
           Check(None, STRICT)),
)}


def get(target) -> Target:
    """The :class:`Target` named ``target`` (a :class:`Target` is returned as it is); an unknown name is refused
    with the known ones."""
    if isinstance(target, Target):
        return target
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known targets: {', '.join(TARGETS)}")
    return TARGETS[target]
