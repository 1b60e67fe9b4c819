"""Soak: a 1,000-trial Optuna search by 3 ``keras-grs prune`` workers, one of them SIGKILLed and restarted again and again.

The workers are separate processes of ``python -m keras_grs prune --backend optuna --storage URL``, each with its
own ``--out``, sharing one study, as on several machines (see tests/prune_workers.py). The model is an MLP of
``--groups`` hidden Dense layers of ``--width`` units on small simulated data (one batch per epoch, one fine-tuning
epoch per candidate), searched by GRS with a tolerance so loose that every step is accepted until every layer has one
unit. A GRS step evaluates one candidate per layer still above one unit (with 3 layers and 3 workers, one each), and
the k-th layer to reach one unit cannot get there before step k x (width - 1), so whatever order the layers go down
in, the search takes at least (1 + 2 + 3) x (width - 1) trials besides the initial one: 1,026 for the default width
172. On this data the candidates' accuracies tie and the cost breaks the ties, so the layers go down nearly one after
another (the middle one first) and the count stays near that bound: a first run at width 128 was on course for about
800.

**Storage: SQLite** (``sqlite:///WORK/optuna.db``). keras-grs gives database storages Optuna's heartbeat
(``open_storage``: 10 s, grace 30 s), so the trial a killed worker was running is marked failed and its candidate
claimed again by a live worker; a journal file (``journal:///``) has no heartbeat, so a killed worker's trial would
stay RUNNING and keep its candidate from every other worker.

Worker 0 is killed (SIGKILL, at a random moment within ``--jitter`` seconds after the study reached the next
multiple of ``--kill-every`` trials, counted as checkpoint files) and restarted at once with ``--resume``. The
supervisor samples every worker's resident set size (VmRSS in /proc/PID/status) every ``--sample`` seconds; a
trial's RSS is its worker's last sample before the trial completed (the worker is the one whose ``--out`` holds the
trial's checkpoint). Checks, printed and written to ``results/soak.md`` and ``results/soak.json``:

- total trials; no candidate completed by two trials (trials set aside by ``discard``, a damaged checkpoint's
  documented re-run, are listed apart); no lost trial (every trial is complete, pruned at the end, or failed by
  the heartbeat after its worker was killed, and then its candidate was completed by a later trial; none is left
  running); every worker exits 0 and prints no traceback;
- every file intact: each worker's directory as the fault suite checks it (``tests/faults/harness.py``:
  no temporary or zero-byte file, every .json parses, every .keras loads, every checkpoint matches its recorded
  size and SHA-256), and every completed trial's checkpoint present and intact;
- RSS flat: per worker process (an incarnation: worker 0 has one per restart), the trials from ``--flat-from`` on,
  minus the first ``--warmup`` trials of a restarted incarnation (imports, the compiled training program, the
  study's trials loaded: its warm-up), must lie within +/- ``--flat-percent`` of the incarnation's level when
  judging starts (the median of its first ``--reference`` judged trials), so growth shows as the last trials'
  distance from the first.

    python benchmarks/soak.py                        # the full soak (make bench-soak; SOAK_ARGS=...)
    python benchmarks/soak.py --width 24 --kill-every 40 --kills 2 --name soak_quick   # a few minutes
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this tree's keras_grs (the one the workers run); the harness

from common import RESULTS, machine, write  # noqa: E402
from faults.harness import check_run  # noqa: E402

from keras_grs.files import write_json  # noqa: E402

FEATURES = 8
STUDY = "0_soak"  # keras-grs prune names a model's study INDEX_NAME
CHECKPOINTS = "tuner/checkpoints/*/trial_*.weights.h5"


def write_inputs(directory: Path, width: int, groups: int, seed: int) -> tuple[Path, Path]:
    """The data (300 samples of a linear rule on 8 features) and an untrained MLP of ``groups`` x ``width`` units."""
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, FEATURES)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype("int32")
    np.savez(directory / "data.npz", x_train=x[:200], y_train=y[:200], x_val=x[200:], y_val=y[200:])
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((FEATURES,)),
                              *[keras.layers.Dense(width, activation="relu") for _ in range(groups)],
                              keras.layers.Dense(2, activation="softmax")], name="soak")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(directory / "soak.keras")
    return directory / "soak.keras", directory / "data.npz"


def worker_argv(model: Path, data: Path, out: Path, storage: str, args) -> list[str]:
    return [sys.executable, "-m", "keras_grs", "prune", str(model), "--data", str(data), "--out", str(out),
            "--backend", "optuna", "--storage", storage, "--method", "grs", "--tolerance", str(args.tolerance),
            "--epochs", "1", "--initial-epochs", "20", "--batch-size", "256", "--seed", str(args.seed),
            "--acceptance", "seed", "--no-eup", "--quiet"]


@dataclass
class Incarnation:
    """One process of one worker: its pid, when it ran, how it ended and its RSS samples (time, bytes)."""

    worker: int
    pid: int
    started: float
    process: subprocess.Popen = field(repr=False)
    log: Path
    ended: float | None = None
    returncode: int | None = None
    killed: bool = False
    samples: list[tuple[float, int]] = field(default_factory=list)


def rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def supervise(model, data, work: Path, storage: str, args, log) -> tuple[list[Incarnation], list[dict]]:
    """Run the workers to the end, killing and restarting worker 0; every incarnation, and the kills."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    outs = [work / f"worker{i}" for i in range(args.workers)]
    incarnations: list[Incarnation] = []
    live: dict[int, Incarnation] = {}

    def start(worker: int, resume: bool) -> None:
        log_path = work / f"worker{worker}.{sum(i.worker == worker for i in incarnations)}.log"
        argv = worker_argv(model, data, outs[worker], storage, args) + (["--resume"] if resume else [])
        with open(log_path, "w") as stream:
            process = subprocess.Popen(argv, stdout=stream, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        live[worker] = Incarnation(worker, process.pid, time.time(), process, log_path)
        incarnations.append(live[worker])

    rng = random.Random(args.seed)
    for worker in range(args.workers):
        start(worker, resume=False)
    kills, next_kill, kill_at = [], args.kill_every, None
    while live:
        now = time.time()
        for worker, inc in list(live.items()):
            returncode = inc.process.poll()
            if returncode is not None:
                inc.ended, inc.returncode = now, returncode
                del live[worker]
                continue
            sample = rss(inc.pid)
            if sample is not None:
                inc.samples.append((now, sample))
        done = sum(len(list(out.glob(CHECKPOINTS))) for out in outs)
        if kill_at is None and done >= next_kill and 0 in live:
            kill_at = now + rng.uniform(0, args.jitter)  # a random moment: any stage of a trial
        if kill_at is not None and now >= kill_at:
            kill_at, next_kill = None, next_kill + args.kill_every
            if 0 in live:
                inc = live.pop(0)
                inc.process.send_signal(signal.SIGKILL)
                inc.process.wait()
                inc.ended, inc.returncode, inc.killed = time.time(), inc.process.returncode, True
                kills.append({"time": inc.ended, "trials_done": done, "pid": inc.pid})
                log(f"killed worker 0 (pid {inc.pid}) at {done} checkpoints; restarting with --resume")
                start(0, resume=True)
        if time.time() - incarnations[0].started > args.timeout:
            for inc in live.values():
                inc.process.send_signal(signal.SIGKILL)
            raise SystemExit(f"the soak did not finish within {args.timeout} s")
        time.sleep(args.sample)
    return incarnations, kills


def study_trials(storage: str) -> list[dict]:
    import optuna

    from keras_grs.optuna.samplers import KEY_ATTR, discarded
    from keras_grs.optuna.study import CHECKPOINT_ATTR

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=STUDY, storage=storage)
    set_aside = discarded(study)
    return [{"number": t.number, "state": "DISCARDED" if t.number in set_aside else t.state.name,
             "key": t.system_attrs.get(KEY_ATTR), "checkpoint": t.user_attrs.get(CHECKPOINT_ATTR),
             "started": t.datetime_start.timestamp() if t.datetime_start else None,
             "completed": t.datetime_complete.timestamp() if t.datetime_complete else None}
            for t in study.get_trials(deepcopy=False)]


def trial_checks(trials: list[dict]) -> dict:
    """Repeats, lost trials and the re-runs of killed trials, from the study's trials."""
    completed = [t for t in trials if t["state"] == "COMPLETE"]
    keys = [t["key"] for t in completed]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    done = set(keys)
    failed = [t for t in trials if t["state"] == "FAIL"]
    # Once every worker has exited, a trial still RUNNING is one a kill interrupted: Optuna marks such a trial
    # failed only when a trial starts after its heartbeat's grace period, so a kill near the end leaves it as it was.
    killed = failed + [t for t in trials if t["state"] == "RUNNING"]
    # a trial killed before it had claimed a candidate holds no key: nothing of the search was in it
    lost = [t["number"] for t in killed if t["key"] is not None and t["key"] not in done]
    return {"trials": len(trials), "completed": len(completed), "pruned": sum(t["state"] == "PRUNED" for t in trials),
            "failed": len(failed), "left_running": len(killed) - len(failed), "killed_rerun": len(killed) - len(lost),
            "discarded": [t["number"] for t in trials if t["state"] == "DISCARDED"],
            "repeated": repeated, "lost": lost, "waiting": [t["number"] for t in trials if t["state"] == "WAITING"]}


def file_checks(outs: list[Path], trials: list[dict]) -> dict:
    from keras_grs.files import CorruptFileError, verify

    problems = []
    for out in outs:
        problems += [f"{out.name}: {p}" for p in check_run(out, "optuna")]
    checked = 0
    for t in trials:
        if t["state"] != "COMPLETE":
            continue
        try:
            if not verify(Path(t["checkpoint"])):
                problems.append(f"trial {t['number']}: checkpoint has no size/SHA-256 record")
            checked += 1
        except (CorruptFileError, TypeError, OSError) as error:
            problems.append(f"trial {t['number']}: {error}")
    files = sum(1 for out in outs for p in out.rglob("*") if p.is_file())
    return {"files": files, "checkpoints_checked": checked, "problems": problems}


def worker_of(checkpoint: str, outs: list[Path]) -> int:
    return next(i for i, out in enumerate(outs) if out.resolve() in Path(checkpoint).parents)


def rss_checks(trials, incarnations, outs, args) -> list[dict]:
    """Per incarnation: the RSS of each trial it completed (its last sample before the trial's end), and whether
    those from ``--flat-from`` on (after a restarted incarnation's warm-up) stay within the band."""
    rows = []
    for inc in incarnations:
        mine = sorted((t for t in trials if t["state"] == "COMPLETE" and worker_of(t["checkpoint"], outs) == inc.worker
                       and inc.started <= t["completed"] <= (inc.ended or float("inf"))), key=lambda t: t["completed"])
        series = []
        for t in mine:
            before = [s for when, s in inc.samples if when <= t["completed"]]
            if before:
                series.append((t["number"], before[-1]))
        restarted = any(i.worker == inc.worker and i.started < inc.started for i in incarnations)
        warmup = args.warmup if restarted else 0
        judged = [(n, s) for n, s in series[warmup:] if n >= args.flat_from]
        row = {"worker": inc.worker, "pid": inc.pid, "restarted": restarted, "killed": inc.killed,
               "returncode": inc.returncode, "seconds": round((inc.ended or time.time()) - inc.started, 1),
               "trials": len(series), "warmup_skipped": min(warmup, len(series)), "judged": len(judged),
               "series": series}
        if judged:
            values = [s for _, s in judged]
            # the level the process starts the judged trials at (a median: one sample taken mid-allocation is noise)
            reference = statistics.median(values[:args.reference])
            row.update(reference_mb=reference / 2**20, min_pct=100 * (min(values) / reference - 1),
                       max_pct=100 * (max(values) / reference - 1), first_mb=values[0] / 2**20,
                       last_mb=values[-1] / 2**20, slope_mb_per_100=slope(judged) * 100 / 2**20)
            row["flat"] = max(abs(row["min_pct"]), abs(row["max_pct"])) <= args.flat_percent
        rows.append(row)
    return rows


def slope(points) -> float:
    """Least-squares bytes per trial number."""
    xs, ys = [float(n) for n, _ in points], [float(s) for _, s in points]
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def tracebacks(incarnations) -> list[str]:
    return [inc.log.name for inc in incarnations if "Traceback" in inc.log.read_text()]


def render(summary: dict, rows: list[dict], args) -> list[str]:
    t, f = summary["trials"], summary["files"]
    verdict = lambda ok: "yes" if ok else "**NO**"  # noqa: E731
    lines = [
        "# Soak: a 1,000-trial search by 3 Optuna workers, one killed and restarted",
        "",
        f"`python benchmarks/soak.py {' '.join(summary['argv'])}` (`make bench-soak`), {summary['date']}; "
        f"{summary['machine']}.",
        "",
        f"GRS on an MLP {'x'.join([str(args.width)] * args.groups)} (8 features, 200 training samples, one batch per "
        f"epoch, 1 epoch per candidate, tolerance {args.tolerance}) by {args.workers} `keras-grs prune --backend "
        f"optuna` processes on one SQLite study (`sqlite:///`, Optuna's heartbeat: a killed worker's trial is marked "
        f"failed and its candidate claimed again; a journal file has no heartbeat). Worker 0 was SIGKILLed "
        f"{len(summary['kills'])} times, each at a random moment within {args.jitter:g} s after every "
        f"{args.kill_every} trials, and restarted at once with `--resume`. Wall time {summary['seconds']:.0f} s.",
        "",
        "| check | result | ok |",
        "|---|---|---|",
        f"| trials | {t['trials']} ({t['completed']} completed, {t['pruned']} pruned after the end, {t['failed']} failed"
        f" by the heartbeat after a kill, {t['left_running']} left running by a kill near the end) | "
        f"{verdict(t['completed'] >= args.min_trials)} |",
        f"| kills of worker 0 | {len(summary['kills'])} (at {', '.join(str(k['trials_done']) for k in summary['kills'])}"
        f" trials) | {verdict(len(summary['kills']) >= args.kills)} |",
        f"| candidates completed twice | {len(t['repeated'])} {t['repeated'][:5] or ''} (re-runs of damaged "
        f"checkpoints set aside: {len(t['discarded'])}) | {verdict(not t['repeated'])} |",
        f"| lost trials (killed, candidate never completed; or never started) | {len(t['lost'] + t['waiting'])} "
        f"{(t['lost'] + t['waiting'])[:5] or ''} (killed trials whose candidate a later trial completed, or that had "
        f"claimed none: {t['killed_rerun']}) | {verdict(not t['lost'] and not t['waiting'])} |",
        f"| files intact | {f['files']} files in the workers' directories, {f['checkpoints_checked']} trial "
        f"checkpoints verified, {len(f['problems'])} problems | {verdict(not f['problems'])} |",
        f"| workers' exits | {summary['exits']} | {verdict(summary['exits_ok'])} |",
        f"| tracebacks printed | {len(summary['tracebacks'])} | {verdict(not summary['tracebacks'])} |",
        f"| RSS flat from trial {args.flat_from} (+/- {args.flat_percent:g}%) | see below | "
        f"{verdict(summary['rss_flat'])} |",
        "",
        f"RSS per worker process (VmRSS sampled every {args.sample:g} s from /proc; a trial's RSS is its worker's last "
        f"sample before the trial completed). Judged: the trials numbered {args.flat_from} and later, after the first "
        f"{args.warmup} trials of a restarted process (its warm-up: imports, the compiled training program, the "
        f"study loaded); every one against its process's level at the start, the median of its first "
        f"{args.reference} judged trials (a restarted process is a new one, with a level of its own).",
        "",
        "| worker | process | ended | trials | judged | level MB | min | max | first -> last MB | slope MB/100 trials "
        "| flat |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ended = "killed" if r["killed"] else f"exit {r['returncode']}"
        kind = "restart" if r["restarted"] else "first"
        if r["judged"]:
            lines.append(f"| {r['worker']} | {kind} (pid {r['pid']}) | {ended} | {r['trials']} | {r['judged']} | "
                         f"{r['reference_mb']:.0f} | {r['min_pct']:+.1f}% | {r['max_pct']:+.1f}% | "
                         f"{r['first_mb']:.0f} -> {r['last_mb']:.0f} | {r['slope_mb_per_100']:+.2f} | "
                         f"{verdict(r['flat'])} |")
        else:
            lines.append(f"| {r['worker']} | {kind} (pid {r['pid']}) | {ended} | {r['trials']} | 0 | | | | | | "
                         "too few trials to judge |")
    if summary["files"]["problems"]:
        lines += ["", "File problems:", *[f"- {p}" for p in summary["files"]["problems"][:20]]]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--width", type=int, default=172, help="units of every hidden layer (172)")
    parser.add_argument("--groups", type=int, default=3, help="hidden layers (3)")
    parser.add_argument("--tolerance", type=float, default=0.3, help="so loose that every step is accepted (0.3)")
    parser.add_argument("--kill-every", type=int, default=180, help="kill worker 0 after every N trials (180)")
    parser.add_argument("--kills", type=int, default=4, help="at least this many kills, or the soak fails (4)")
    parser.add_argument("--jitter", type=float, default=5.0, help="a kill comes within this many seconds (5)")
    parser.add_argument("--min-trials", type=int, default=1000, help="at least this many completed trials (1000)")
    parser.add_argument("--flat-from", type=int, default=100, help="RSS judged from this trial number on (100)")
    parser.add_argument("--flat-percent", type=float, default=5.0)
    parser.add_argument("--warmup", type=int, default=20, help="trials of a restarted process not judged (20)")
    parser.add_argument("--reference", type=int, default=10,
                        help="a process's RSS level: the median of its first N judged trials (10)")
    parser.add_argument("--sample", type=float, default=1.0, help="seconds between RSS samples (1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--work", type=Path, help="working directory (default: a new temporary one)")
    parser.add_argument("--name", default="soak", help="results/NAME.md and .json (soak)")
    parser.add_argument("--analyze", action="store_true", help="check the finished soak in --work again, run nothing")
    args = parser.parse_args(argv)
    if args.analyze and args.work is None:
        parser.error("--analyze needs --work: the directory of a finished soak")
    if args.workers < 2:
        parser.error("--workers must be at least 2: one is killed while the others go on")
    work = args.work or Path(tempfile.mkdtemp(prefix="kgrs-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()

    def log(text):
        print(f"[{time.time() - started:6.0f} s] {text}", flush=True)

    storage = f"sqlite:///{work / 'optuna.db'}"
    record = work / "supervisor.json"  # what only the supervisor saw, so that --analyze can check a run again
    if args.analyze:
        saved = json.loads(record.read_text())
        incarnations = [Incarnation(**{**inc, "log": Path(inc["log"]), "process": None}) for inc in saved["processes"]]
        kills, seconds = saved["kills"], saved["seconds"]
        shown = saved.get("argv") or [a for a in (sys.argv[1:] if argv is None else argv) if a != "--analyze"]
    else:
        model, data = write_inputs(work, args.width, args.groups, args.seed)
        log(f"{args.workers} workers on {storage}")
        incarnations, kills = supervise(model, data, work, storage, args, log)
        seconds = time.time() - started
        shown = sys.argv[1:] if argv is None else argv
        write_json(record, {"argv": shown, "kills": kills, "seconds": seconds, "processes": [
            {k: str(v) if k == "log" else v for k, v in vars(inc).items() if k != "process"} for inc in incarnations]})
    outs = [work / f"worker{i}" for i in range(args.workers)]
    trials = study_trials(storage)
    rows = rss_checks(trials, incarnations, outs, args)
    exits = [inc.returncode for inc in incarnations if not inc.killed]
    summary = {
        "argv": shown, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(), "seconds": seconds, "work": str(work), "kills": kills,
        "trials": trial_checks(trials), "files": file_checks(outs, trials), "exits": exits,
        "exits_ok": all(code == 0 for code in exits), "tracebacks": tracebacks(incarnations),
        "rss_flat": all(r.get("flat", True) for r in rows) and any(r["judged"] for r in rows),
    }
    t = summary["trials"]
    summary["ok"] = bool(t["completed"] >= args.min_trials and len(kills) >= args.kills and not t["repeated"]
                         and not t["lost"] and not t["waiting"] and not summary["files"]["problems"] and summary["exits_ok"]
                         and not summary["tracebacks"] and summary["rss_flat"])
    lines = render(summary, rows, args)
    lines += ["", f"Soak {'passed' if summary['ok'] else 'FAILED'}."]
    write(f"{args.name}.md", lines)
    write_json(RESULTS / f"{args.name}.json", {**summary, "args": {k: str(v) for k, v in vars(args).items()},
                                                "processes": rows}, indent=1)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
