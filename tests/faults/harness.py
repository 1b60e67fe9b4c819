"""Kill ``keras-grs prune`` at chosen stages, resume it until it finishes, and check everything it left behind.

Used by ``tests/test_faults_kill.py`` (a few kills, part of ``make test``) and ``benchmarks/faults.py`` (the long
form). A kill is one of two kinds:

- a **write kill** (:class:`Kill` with ``pattern``): the run is started with ``KERAS_GRS_FAULT_KILL=PATTERN:N``
  (see :func:`keras_grs.files._fault_point`), so it SIGKILLs itself when its N-th matching file is complete under
  its temporary name but not yet renamed. This hits a stage exactly: the initial model's or a candidate's
  checkpoint (all of its training lost), ``compact.keras`` (right after EUP, which writes nothing of its own, so
  all of EUP is lost), the report, a C file.
- a **timed kill** (:class:`Kill` with ``after``): SIGKILL from outside after that many seconds, anywhere: in the
  middle of an epoch, of a JSON write, of a compile of the C code.

Either way the stage the process was in is read afterwards from what it wrote (:func:`stage_at`). Then the run is
resumed with ``--resume``; once it finishes, :func:`check_run` inspects the directory.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from keras_grs import files
from keras_grs.runlock import LOCK_FILE

REPO = Path(__file__).resolve().parents[2]
STAGES = ("start-up", "initial training", "GRS step", "JGRS jump", "EUP", "report writing", "C export")
CHECKPOINT_PATTERNS = {"keras-tuner": "*/trial_*/checkpoint.weights.h5", "optuna": "*/checkpoints/*/trial_*.weights.h5"}
# write kills that reach the stages after the search; the count picks which matching write
SEARCH_OVER = "search over"
AFTER_SEARCH = {"EUP": ("*/compact.keras", 1), "report writing": ("*/report.*", 1), "C export": ("*/c/*", 1),
                "final report": ("*/report.json", 2)}


@dataclass
class Kill:
    """Where to kill one attempt: at the ``count``-th write matching ``pattern``, or ``after`` seconds."""

    pattern: str | None = None
    count: int = 1
    after: float | None = None

    def describe(self) -> str:
        return f"write {self.pattern}:{self.count}" if self.pattern else f"after {self.after:.1f} s"


@dataclass
class Attempt:
    kill: Kill | None
    returncode: int
    stage: str | None  # where a killed attempt was, None when it was not killed
    traceback: bool
    stderr_tail: str
    hung: bool = False  # killed by the attempt's timeout, not by a planned kill


@dataclass
class Run:
    """A run killed and resumed until it finished: its attempts, the final exit status and the problems found."""

    out: Path
    backend: str
    attempts: list[Attempt] = field(default_factory=list)
    lost_trials: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def kills(self) -> list[Attempt]:
        return [a for a in self.attempts if a.stage is not None and not a.hung]

    @property
    def finished(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].returncode == 0


def prune_argv(data, out, backend="keras-tuner", model="nn1", max_trials=8, seed=2, extra=()) -> list[str]:
    """A tiny JGRS ``prune`` command line (one epoch per candidate, one attempt per phase) for ``data``."""
    return ["prune", model, "--data", str(data), "--out", str(out), "--method", "jgrs", "--epochs", "1",
            "--initial-epochs", "1", "--seed", str(seed), "--tolerance", "0.9", "--max-trials", str(max_trials),
            "--phases", "0.5:1,near:1", "--backend", backend, "--quiet", *extra]


def _environment(kill: Kill | None) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))  # this tree's keras_grs, not another
    env.pop(files.FAULT_ENV, None)
    if kill is not None and kill.pattern:
        env[files.FAULT_ENV] = f"{kill.pattern}:{kill.count}"
    return env


def attempt(argv, out: Path, backend: str, kill: Kill | None, timeout: float = 600) -> Attempt:
    """Start ``python -m keras_grs ARGV`` once, kill it as ``kill`` says, and say how it ended and where."""
    with tempfile.TemporaryFile("w+") as stderr:
        since = time.time() - 0.05  # file times are taken from a coarser clock
        process = subprocess.Popen([sys.executable, "-m", "keras_grs", *argv], stdout=subprocess.DEVNULL,
                                   stderr=stderr, env=_environment(kill), cwd=REPO)
        timed = kill is not None and kill.after is not None
        hung = False
        try:
            process.wait(timeout=kill.after if timed else timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            hung = not timed
        stderr.seek(0)
        text = stderr.read()
    killed = process.returncode == -signal.SIGKILL
    stage = stage_at(out, backend, since) if killed else None
    return Attempt(kill, process.returncode, stage, "Traceback" in text, text.strip()[-600:], hung)


def run_with_kills(argv, out: Path, backend: str, kills: list[Kill], timeout: float = 600, check=True) -> Run:
    """Run ``argv`` with each kill in turn (``--resume`` from the second attempt), then resume until it exits.

    After every attempt the finished trials are recorded; a finished trial that a later attempt lost or ran again
    is reported in ``Run.lost_trials``."""
    run = Run(Path(out), backend)
    known: dict[str, object] = {}
    completed_at = []
    for kill in [*kills, None, None]:
        if run.attempts and run.attempts[-1].returncode != -signal.SIGKILL:
            break
        args = [*argv, "--resume"] if run.attempts else list(argv)
        run.attempts.append(attempt(args, run.out, backend, kill, timeout))
        now = completed_trials(run.out, backend)
        for key, score in known.items():
            if now.get(key) != score:
                run.lost_trials.append(key)
        known.update(now)
        completed_at.append(set(now))
    for a, completed in zip(run.attempts, completed_at):
        if a.stage == SEARCH_OVER:  # every trial of the finished run was done: EUP (or selection) was running
            a.stage = "EUP" if completed == completed_at[-1] else "start-up"
    if check:
        run.problems = check_attempts(run) + (check_run(run.out, backend) if run.finished else [])
    return run


def check_attempts(run: Run) -> list[str]:
    problems = []
    for i, a in enumerate(run.attempts):
        if a.hung:
            problems.append(f"attempt {i + 1} did not end within its timeout (it was at {a.stage})")
        if a.traceback:
            problems.append(f"attempt {i + 1} printed a traceback: {a.stderr_tail}")
        if a.returncode not in (0, -signal.SIGKILL):
            problems.append(f"attempt {i + 1} exited with {a.returncode}: {a.stderr_tail}")
    if not run.finished:
        problems.append("the run did not finish")
    if run.lost_trials:
        problems.append(f"finished trials lost or run again: {sorted(set(run.lost_trials))}")
    return problems


# -- what a run directory holds --------------------------------------------------------------------------------
def _study(out: Path):
    import optuna

    storage = f"sqlite:///{out / 'tuner' / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = optuna.get_all_study_names(storage)
    return [optuna.load_study(study_name=name, storage=storage) for name in names]


def trial_records(out: Path, backend: str) -> list[dict]:
    """Every trial of every model: ``{"model", "trial_id", "state", "key", "score", "started"}``."""
    records = []
    if backend == "optuna":
        if not (out / "tuner" / "optuna.db").exists():
            return []
        from keras_grs.optuna.samplers import KEY_ATTR, discarded

        for study in _study(out):
            set_aside = discarded(study)  # completed, but evaluated again (a damaged checkpoint): not a result
            for t in study.get_trials(deepcopy=False):
                state = "DISCARDED" if t.number in set_aside else t.state.name
                records.append({"model": study.study_name, "trial_id": str(t.number), "state": state,
                                "key": t.system_attrs.get(KEY_ATTR), "score": t.values[0] if t.values else None,
                                "started": t.datetime_start.timestamp() if t.datetime_start else 0.0})
        return records
    from keras_grs.tuner.oracles import CANDIDATE_FILE

    for trial_json in sorted((out / "tuner").glob("*/trial_*/trial.json")):
        state = json.loads(trial_json.read_text())
        candidate = trial_json.parent / CANDIDATE_FILE
        key = json.loads(candidate.read_text()).get("grs_key") if candidate.exists() else None
        newest = max(p.stat().st_mtime for p in trial_json.parent.iterdir())
        records.append({"model": trial_json.parent.parent.name, "trial_id": state["trial_id"],
                        "state": "COMPLETE" if state["status"] == "COMPLETED" else state["status"], "key": key,
                        "score": state.get("score"), "started": newest})
    return records


def completed_trials(out: Path, backend: str) -> dict[str, object]:
    """``model/key -> score`` of the finished trials."""
    return {f"{r['model']}/{r['key']}": r["score"] for r in trial_records(out, backend) if r["state"] == "COMPLETE"}


def phase_stage(key: str | None) -> str:
    """The stage a candidate key belongs to: ``init`` -> initial training, ``far*`` -> JGRS jump, else GRS step."""
    if key == "init":
        return "initial training"
    return "JGRS jump" if key and key.startswith("far") else "GRS step"


def stage_at(out: Path, backend: str, since: float) -> str:
    """Where a process started at ``since`` was when it died, from the files it wrote (and those it was writing)."""
    written = [p for p in out.rglob("*") if p.is_file() and p.stat().st_mtime >= since]
    partial = {p.name.split("-", 2)[-1]: p for p in written if p.name.startswith(files.PARTIAL_PREFIX)}
    names = {p.relative_to(out).as_posix() for p in written if not p.name.startswith(files.PARTIAL_PREFIX)}
    report = out / "report.json"
    if "report.json" in names and "c_export" in json.loads(report.read_text()):
        return "report writing"
    if any(n.startswith("c/") for n in names) or any(p.parent.name == "c" for p in partial.values()):
        return "C export"
    if names & {"compact.keras", "eup.keras", "report.json", "report.md"} or any(
            n.startswith("plots/") for n in names) or set(partial) & {"eup.keras", "report.json", "report.md"}:
        return "report writing"
    if "compact.keras" in partial:
        return "EUP"
    records = trial_records(out, backend)
    running = [r for r in records if r["state"] not in ("COMPLETE", "COMPLETED", "FAIL", "FAILED")
               and r["started"] >= since]
    if running:
        return phase_stage(running[-1]["key"])
    if names <= {"run.json"} or not any(r["state"] == "COMPLETE" for r in records):
        return "start-up"
    return SEARCH_OVER  # or between two trials: told apart once the run has finished (see run_with_kills)


def check_run(out: Path, backend: str) -> list[str]:
    """What is wrong with a finished run directory (an empty list when nothing is)."""
    import keras

    problems = []
    every = [p for p in out.rglob("*") if p.is_file()]
    for p in every:
        name = p.relative_to(out).as_posix()
        if p.name.startswith(files.PARTIAL_PREFIX):
            problems.append(f"temporary file left behind: {name}")
        elif p.name == LOCK_FILE:
            problems.append(f"lock file left behind: {name}")
        elif p.stat().st_size == 0:
            problems.append(f"zero-byte file: {name}")
        elif p.suffix == ".json":
            try:
                json.loads(p.read_text())
            except ValueError as error:
                problems.append(f"{name} is not valid JSON: {error}")
        elif p.suffix == ".keras":
            try:
                files.verify(p)
                keras.models.load_model(p)
            except Exception as error:  # any way a model file can be broken
                problems.append(f"{name} does not load: {type(error).__name__}: {error}")
        elif p.name.endswith(".weights.h5"):
            try:
                if not files.verify(p):
                    problems.append(f"{name} has no size/SHA-256 record")
            except files.CorruptFileError as error:
                problems.append(str(error))
    records = trial_records(out, backend)
    for model in {r["model"] for r in records}:
        mine = [r for r in records if r["model"] == model]
        ids = [r["trial_id"] for r in mine]
        if len(ids) != len(set(ids)):
            problems.append(f"{model}: trial ids repeat: {sorted(ids)}")
        keys = [r["key"] for r in mine if r["state"] == "COMPLETE"]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            problems.append(f"{model}: candidates evaluated twice: {twice}")
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None
    if report is None:
        return problems + ["no report.json"]
    for model in report["models"]:
        path = model["path"]
        for before, after in zip(path, path[1:]):
            shrinks = all(after["widths"][g] <= w for g, w in before["widths"].items()) and after["params"] < before[
                "params"]
            if not shrinks:
                problems.append(f"{model['name']}: the accepted path grows from {before['structure']} to "
                                f"{after['structure']}")
    return problems


def decisions(out: Path) -> list[dict]:
    """What a run decided, per model: the accepted path (phase, structure), the final structure, EUP's sparsity,
    and the scores on the way (equal too when the training is reproducible)."""
    report = json.loads((Path(out) / "report.json").read_text())
    return [{"path": [(row["phase"], row["structure"]) for row in m["path"]], "structure": m["structure"],
             "eup_nonzero_params": m["eup_nonzero_params"],
             "scores": [round(row["objective"], 6) for row in m["path"]]} for m in report["models"]]


def random_kills(rng: random.Random, backend: str, n: int, duration: float) -> list[Kill]:
    """``n`` kills spread over the stages: write kills at checkpoints (the first one is the initial model's),
    after the search and in the C export, and timed kills anywhere in a run of about ``duration`` seconds."""
    kills = []
    for i in range(n):
        kind = rng.choice(("checkpoint", "checkpoint", "after-search", "timed"))
        if kind == "checkpoint":
            kills.append(Kill(CHECKPOINT_PATTERNS[backend], rng.randint(1, 3)))
        elif kind == "after-search":
            pattern, count = AFTER_SEARCH[rng.choice(sorted(AFTER_SEARCH))]
            if pattern == "*/c/*":
                count = rng.randint(1, 8)
            kills.append(Kill(pattern, count))
        else:
            kills.append(Kill(after=rng.uniform(3.0, duration)))
    return kills
