"""What the on-disk cache of compiled programs (``keras_grs.xla_cache``) saves a new process.

Each job runs in fresh processes, three ways, alternated round after round: with the cache off
(``KERAS_GRS_XLA_CACHE=0``), with an empty cache (a first run on a machine: it compiles, and writes what it
compiled), and with the cache that first run left (a second run: it loads). Wall seconds of the whole process
(TensorFlow's import included) and, for the searches, the search's own seconds as the job prints them.

Jobs: ``demo`` (``python -m keras_grs demo`` into a new directory), ``cnn1`` (the capped batched cnn1 search of
``make bench-search``: 11 trials at 100 epochs), ``nn1`` (the complete nn1 search at the seed's protocol,
``protocol_warm.py fresh``).

Run: .venv/bin/python benchmarks/compile_cache.py [--jobs demo cnn1 nn1] [--rounds 2]
     (writes benchmarks/results/compile_cache.md)
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, write

HERE = Path(__file__).parent
JOBS = {
    "demo": lambda out: [sys.executable, "-m", "keras_grs", "demo", "--out", str(out / "demo")],
    "cnn1": lambda out: [sys.executable, str(HERE / "search_speed.py"), "--models", "cnn1", "--max-trials", "11",
                         "--batched-only", "--quality-epochs", "0"],
    "nn1": lambda out: [sys.executable, str(HERE / "protocol_warm.py"), "fresh"],
}
# the search's own seconds in what a job prints (the demo prints none)
INNER = re.compile(r"(?:cnn1 batched|nn1 protocol, fresh): ([0-9.]+) s")
MODES = ("off", "empty cache", "warm cache")


def run(job, mode, cache, work) -> tuple[float, float | None]:
    """(process wall seconds, search seconds or None) of one fresh process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_XLA_FLAGS", None)
    env["KERAS_GRS_XLA_CACHE"] = "0" if mode == "off" else str(cache)
    start = time.perf_counter()
    done = subprocess.run(JOBS[job](Path(tempfile.mkdtemp(dir=work))), env=env, capture_output=True, text=True,
                          cwd=HERE.parent)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{job} ({mode}) failed:\n{done.stderr[-3000:]}")
    inner = INNER.search(done.stdout)
    return wall, float(inner.group(1)) if inner else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", nargs="+", choices=sorted(JOBS), default=["demo", "cnn1", "nn1"])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each job and mode, alternated")
    args = parser.parse_args()
    times = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as work:
        for r in range(args.rounds):
            for job in args.jobs:
                cache = Path(work) / f"cache-{job}-{r}"  # empty for the first run, then what it compiled
                for mode in MODES:
                    times[job, mode].append(run(job, mode, cache, work))
                    print(job, mode, times[job, mode][-1], flush=True)

    def cell(values):
        return ", ".join(f"{v:.1f}" for v in values) + (f" (median {statistics.median(values):.1f})"
                                                       if len(values) > 2 else "")

    lines = [
        "# Compiled programs kept on disk: what a new process saves",
        "",
        f"Machine: {machine()}.",
        "",
        f"Each job in fresh processes, alternated over {args.rounds} round(s): the cache off, an empty cache (a first "
        "run: compiles and writes), the cache that run left (a second run: loads). Seconds, one figure per run "
        "(`benchmarks/compile_cache.py`).",
        "",
        "| job | " + " | ".join(f"{m}: process s | {m}: search s" for m in MODES) + " |",
        "|---|" + "---|---|" * len(MODES),
    ]
    for job in args.jobs:
        row = [job]
        for mode in MODES:
            walls = [w for w, _ in times[job, mode]]
            inner = [i for _, i in times[job, mode] if i is not None]
            row += [cell(walls), cell(inner) if inner else "-"]
        lines.append("| " + " | ".join(row) + " |")
    write("compile_cache.md", lines)


if __name__ == "__main__":
    main()
