"""Compiled programs kept on disk between processes (TensorFlow's persistent XLA cache).

The batched evaluator compiles one XLA program per shape of problem: 2-4 s on two cores for nn1 or cnn1, a tenth to
a quarter of a short search, paid again by every new process (each command-line run, a resumed search, every
worker of a distributed search). TensorFlow can keep compiled programs in a directory and load them instead of
compiling: each entry is stored under the fingerprint of the program it holds and checked against it on load, and
written under a temporary name then renamed, so processes that share the directory never read a torn entry. A
loaded program is the very program that would have been compiled: the same numbers, to the bit.

``import keras_grs`` turns the cache on (through ``TF_XLA_FLAGS``, which TensorFlow reads at its first XLA
compilation, and which subprocesses inherit) unless:

- ``KERAS_GRS_XLA_CACHE`` is ``0``, ``off``, ``false`` or ``no`` (or empty): no cache;
- ``TF_XLA_FLAGS`` already names a cache directory (``--tf_xla_persistent_cache_directory``): that one is used;
- the directory cannot be created or written (a read-only home): no cache, nothing else changes;
- TensorFlow compiled an XLA program before ``keras_grs`` was imported: TensorFlow has read its flags already.

Where: ``KERAS_GRS_XLA_CACHE`` (a directory) or ``$XDG_CACHE_HOME/keras-grs/xla`` (``~/.cache/keras-grs/xla``), in a
subdirectory per TensorFlow version and CPU (``tf2.21.0-<hash>``): an executable compiled for one processor's
instructions, or by one TensorFlow, is never loaded by another. Entries are about 2 MB each; when the cache holds
more than :data:`BUDGET_BYTES` (all versions together), the entries used longest ago are removed at import until
it holds three quarters of that. Deleting the directory is always safe.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

VARIABLE = "KERAS_GRS_XLA_CACHE"
FLAG = "--tf_xla_persistent_cache_directory"
OFF = {"", "0", "off", "false", "no"}
BUDGET_BYTES = 512 * 2**20
ENTRY_PREFIX = "xla_compile_cache"  # TensorFlow's file names: xla_compile_cache__<signature>__<hash>__<device>.pb


def root() -> Path | None:
    """The cache's root directory from the environment, or None when the cache is turned off."""
    value = os.environ.get(VARIABLE)
    if value is not None:
        return None if value.strip().lower() in OFF else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = Path.home() / ".cache"
        except (RuntimeError, KeyError):  # no home directory to be found: no cache
            return None
    return Path(base) / "keras-grs" / "xla"


def machine_tag() -> str:
    """``tf<version>-<hash>``: the TensorFlow version, and a hash of what decides the code XLA emits for this
    machine (the processor's model and instruction-set flags, the XLA flags in the environment)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tf_version = version("tensorflow")
    except PackageNotFoundError:  # an unusual distribution of TensorFlow (tensorflow-cpu, a local build)
        import tensorflow as tf

        tf_version = tf.__version__
    cpu = [platform.machine()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            cpu += sorted({line.strip() for line in file if line.split(":")[0].strip() in ("model name", "flags")})
    except OSError:  # not Linux: the platform's description stands for the processor
        cpu.append(platform.processor())
    other = " ".join(part for part in os.environ.get("TF_XLA_FLAGS", "").split() if not part.startswith(FLAG))
    digest = hashlib.sha256("\n".join(cpu + [os.environ.get("XLA_FLAGS", ""), other]).encode()).hexdigest()
    return f"tf{tf_version}-{digest[:12]}"


def enable() -> Path | None:
    """Point TensorFlow's persistent XLA cache at this machine's directory (see the module docstring); the
    directory, or None when the cache stays off or another one was configured."""
    if FLAG in os.environ.get("TF_XLA_FLAGS", ""):
        return None
    top = root()
    if top is None:
        return None
    directory = top / machine_tag()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        return None
    evict(top)
    flags = os.environ.get("TF_XLA_FLAGS", "")
    os.environ["TF_XLA_FLAGS"] = f"{flags} {FLAG}={directory}".strip()
    return directory


def evict(top: Path, budget: int = BUDGET_BYTES) -> list[Path]:
    """When the entries under ``top`` (every version's subdirectory) take more than ``budget`` bytes, remove those
    used longest ago (by access time, else modification time) until they take at most three quarters of it; the
    removed paths. A file another process removes first, or cannot stat, is skipped."""
    entries = []
    for path in top.glob(f"*/{ENTRY_PREFIX}*.pb"):  # whole entries, never one being written
        try:
            stat = path.stat()
        except OSError:
            continue
        entries.append((max(stat.st_atime, stat.st_mtime), stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    if total <= budget:
        return []
    removed = []
    for _, size, path in sorted(entries):
        if total <= budget * 3 // 4:
            break
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
        removed.append(path)
    return removed
