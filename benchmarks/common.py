"""What the search benchmarks share: the machine's description, the seed's data, pretraining, one timed search."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# every benchmark compiles its programs as a first run on a machine does (keras_grs.xla_cache would otherwise load
# them from earlier runs, and the timings would depend on what ran before); KERAS_GRS_XLA_CACHE=<dir> to time a
# warm cache
os.environ.setdefault("KERAS_GRS_XLA_CACHE", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_grs  # noqa: E402
from keras_grs import datasets, models  # noqa: E402
from keras_grs.files import write_json  # noqa: E402
from keras_grs.scoring import accuracy  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def machine() -> str:
    """One line: CPU, cores, memory, Python and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{cpu}, {os.cpu_count()} cores{memory}, no GPU; Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}, Keras {keras.__version__}")


def calcium_splits(model_name: str, seed: int, n_frames: int = 3000, n_neurons: int = 140, difficulty="realistic"):
    """The seed's data shape (3000 frames, 140 neurons; 12x12 images for the CNNs), 70/20/10 split."""
    image = model_name.startswith("cnn")
    x, y = datasets.calcium(n_neurons=n_neurons, n_frames=n_frames, seed=seed, image=image, difficulty=difficulty)
    return datasets.split(x, y, val=0.2, test=0.1, seed=seed)


def pretrained(model_name: str, train, epochs: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = models.build(model_name, train[0].shape[1:])
    model.fit(*train, epochs=epochs, batch_size=32, verbose=0)
    return model


@dataclass
class Run:
    """One finished (or capped) search and its compact model's figures."""

    method: str
    evaluator: str
    seconds: float
    trials: int
    finished: bool
    initial_params: int
    initial_flops: int
    initial_test: float
    structure: str
    params: int
    flops: int
    test: float
    compact: keras.Model
    sittings: int = 1  # the sittings a search kept in a directory ran over (its seconds add them up)

    @property
    def al(self) -> float:
        """Test accuracy loss, percentage points."""
        return accuracy_loss(self.initial_test, self.test)

    @property
    def fci(self) -> float:
        """FLOP count improvement, percent."""
        return improvement(self.initial_flops, self.flops)

    @property
    def pci(self) -> float:
        """Parameter count improvement, percent."""
        return improvement(self.initial_params, self.params)


def accuracy_loss(initial: float, final: float) -> float:
    """The seed's AL: test accuracy lost, percentage points."""
    return 100 * (initial - final)


def improvement(initial: float, final: float) -> float:
    """The seed's FCI/PCI: the share of FLOPs or parameters removed, percent."""
    return 100 * (1 - final / initial)


def search(model: keras.Model, data, *, method="grs", evaluator="batched", epochs=100, seed=0, max_trials=None,
           tolerance=0.985, phases=None, acceptance="seed", directory=None, objective=None, test_score=accuracy
           ) -> Run:
    """Prune a trained model (its weights are copied, never changed) and time the search.

    The seed's acceptance rule by default, so that the seed's tables and the earlier figures stay reproducible;
    ``acceptance="guard"`` for the default of keras-grs. With ``directory`` the search lives there and a search
    stopped part-way (a killed sitting) continues from its last trial when called again with the same arguments
    and a model of the same weights (``model.sha256``; other weights, e.g. pretrained again with other rounding,
    start the search again); its seconds are those of every sitting added up, each with its own warm-up
    (``elapsed.json``). The caller removes the directory once the result is stored. ``objective``: the tuner's
    (its default, ``val_accuracy``, when None); ``test_score(model, x, y)``: the figure ``Run.test`` and
    ``Run.initial_test`` hold (test accuracy by default)."""
    with tempfile.TemporaryDirectory() if directory is None else contextlib.nullcontext(directory) as directory:
        return _search(model, data, Path(directory), method=method, evaluator=evaluator, epochs=epochs, seed=seed,
                       max_trials=max_trials, tolerance=tolerance, phases=phases, acceptance=acceptance,
                       objective=objective, test_score=test_score)


def _search(model, data, directory: Path, *, method, evaluator, epochs, seed, max_trials, tolerance, phases,
            acceptance, objective, test_score) -> Run:
    train, validation, test = data
    options = {"phases": phases} if phases else {}
    if objective is not None:
        options["objective"] = objective
    fingerprint = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights())).hexdigest()
    start_file = directory / "model.sha256"
    if start_file.exists() and start_file.read_text() != fingerprint:  # pretrained again, differently
        print(f"warning: {directory} holds a search of other starting weights; it starts again", flush=True)
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    start_file.write_text(fingerprint)
    elapsed = directory / "elapsed.json"
    earlier = json.loads(elapsed.read_text()) if elapsed.exists() else {"seconds": 0.0, "sittings": 0}
    tuner = keras_grs.GRSTuner.from_model(model, train_first=False, method=method, seed=seed,
                                          evaluator=evaluator, tolerance=tolerance, max_trials=max_trials,
                                          directory=str(directory), acceptance=acceptance, **options)
    tuner.oracle.verbose = 0

    trial_ended = tuner.on_trial_end

    def on_trial_end(trial):  # after keras-tuner has stored the trial: the time a resumed sitting adds to
        trial_ended(trial)
        write_json(elapsed, {"seconds": earlier["seconds"] + time.perf_counter() - start,
                             "sittings": earlier["sittings"] + 1})

    tuner.on_trial_end = on_trial_end
    start = time.perf_counter()
    tuner.search(*train, validation_data=validation, epochs=epochs, batch_size=32, verbose=0, progress=False)
    seconds = earlier["seconds"] + time.perf_counter() - start
    sittings = json.loads(elapsed.read_text())["sittings"] if elapsed.exists() else earlier["sittings"]
    compact = tuner.get_best_models(1)[0]
    finished = tuner.oracle.plan().finished
    trials = len(tuner.oracle.trials)
    return Run(method, evaluator, seconds, trials, finished, keras_grs.count_params(model),
               keras_grs.count_flops(model), test_score(model, *test), str(keras_grs.analyze(compact)),
               keras_grs.count_params(compact), keras_grs.count_flops(compact), test_score(compact, *test), compact,
               sittings)


def evaluator_runs(model, data, **options) -> dict:
    """The same search (:func:`search`, ``options``) with one fit per candidate and with the batched evaluator, in
    that order: {evaluator: (its Run, how it trained)}, "one fit per candidate" or "batched" (the batched evaluator
    trained every step itself: it never fell back)."""
    runs = {}
    for evaluator in ("keras", "batched"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run = search(model, data, evaluator=evaluator, **options)
        fell_back = any("one fit per trial" in str(w.message) for w in caught)
        runs[evaluator] = (run, "one fit per candidate" if evaluator == "keras" or fell_back else "batched")
    return runs


def evaluator_rows(runs, first: str = "") -> list[str]:
    """The table rows of :func:`evaluator_runs`' runs: evaluator, how it trained, trials, wall seconds, structure,
    params, test score, speed-up over the keras run (``first``: a column before them all, e.g. the model)."""
    lead = f"| {first} " if first else ""
    return [f"{lead}| {evaluator} | {path} | {run.trials} | {run.seconds:.1f} | {run.structure} | {run.params:,} | "
            f"{run.test:.4f} | **{runs['keras'][0].seconds / run.seconds:.1f}x** |"
            for evaluator, (run, path) in runs.items()]


def forget_programs() -> None:
    """Drop the compiled fits this process keeps for later searches, so that the next one traces its own: for a
    benchmark that compares settings of the batched evaluator read while a program is traced."""
    from keras_grs.evaluate import batched

    batched._PROGRAMS = batched._ProgramCache(batched.SHARED_PROGRAMS)


def write(name: str, lines: list[str]) -> Path:
    """Write a result file atomically and echo it."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / name
    temporary = out.with_suffix(".tmp")
    temporary.write_text("\n".join(lines) + "\n")
    os.replace(temporary, out)
    print("\n".join(lines), flush=True)
    return out


def fit_best(model: keras.Model, train, validation, epochs: int) -> keras.Model:
    """Fit ``model`` (batch 32) and leave in it the weights of its best epoch on validation accuracy: the rule the
    search applies to every candidate it fine-tunes, so a baseline trained here is scored the same way."""
    best = {"score": -np.inf, "weights": model.get_weights()}

    def keep(epoch, logs):
        if logs["val_accuracy"] > best["score"]:
            best.update(score=logs["val_accuracy"], weights=model.get_weights())

    model.fit(*train, validation_data=validation, epochs=epochs, batch_size=32, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=keep)])
    model.set_weights(best["weights"])
    return model


def stats(values) -> tuple[float, float, float]:
    values = np.asarray(list(values), dtype=float)
    return float(values.min()), float(values.max()), float(values.mean())
