"""The ``keras-grs`` command line (also ``python -m keras_grs``).

Commands: ``prune`` (the whole job), ``export-c`` (a model as C), ``report`` (re-render a run's report),
``analyze`` (a model's width groups), ``dashboard`` (optuna-dashboard), ``demo`` (what ``make demo`` runs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RUN_FILE = "run.json"
UNSAFE_HELP = "load the model file with Keras' safe mode off (runs code it holds, e.g. Lambda layers): trusted only"


class CommandError(Exception):
    """A problem with the user's input: printed as ``keras-grs: error: ...``, exit status 2."""


def load_model(spec: str, input_shape: tuple[int, ...] | None = None, num_classes: int = 2, safe_mode: bool = True):
    """A model from a ``.keras`` file or a built-in name (nn1, cnn1, ...). Files load in Keras' safe mode (no
    Lambda layer or other code from the file runs) unless ``safe_mode=False`` (``--unsafe-model``)."""
    from keras_grs import models
    from keras_grs.inputs import check_model_file

    if spec in models.NAMES:
        if input_shape is None:
            input_shape = (12, 12, 1) if spec.startswith("cnn") else (140,)
        return models.build(spec, input_shape, num_classes=num_classes)
    path = Path(spec)
    if not path.is_file():
        raise CommandError(f"model {spec!r} is neither a built-in model ({', '.join(models.NAMES)}) nor a file")
    check_model_file(path)
    import warnings

    import keras

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return keras.models.load_model(path, safe_mode=safe_mode)
    except Exception as error:  # keras raises many kinds for a bad file
        if "safe_mode" in str(error):  # Keras' safe mode refused code stored in the file
            raise CommandError(f"model file {spec!r} holds code (a Lambda layer or similar) that Keras' safe mode "
                               "refuses to run; pass --unsafe-model only if you trust this file") from None
        raise CommandError(f"cannot read model file {spec!r}: {error}") from None


def format_table(rows) -> str:
    sizes = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).rjust(n) for c, n in zip(r, sizes)).rstrip() for r in rows)


def format_analysis(model) -> str:
    """A readable table of a model's width groups, parameters and FLOPs."""
    from keras_grs import analyze, count_flops, count_params, flops_by_layer

    structure = analyze(model)
    flops = flops_by_layer(model)
    rows = [("group", "width", "min", "dependents", "FLOPs")]
    for g in structure.groups:
        rows.append((g.name, str(g.width), str(g.min_width), ", ".join(g.dependents), f"{flops[g.layer]:,}"))
    sizes = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"model {model.name}: structure {structure}"]
    for r in rows:
        lines.append("  " + "  ".join(cell.ljust(size) for cell, size in zip(r, sizes)).rstrip())
    lines.append(f"  params {count_params(model):,}   FLOPs {count_flops(model):,} (2 per multiply-accumulate)")
    return "\n".join(lines)


def format_summary(result) -> str:
    """Initial vs compact (vs EUP) per model, scored by the search's objective on validation, guard and test data,
    and which one was selected."""
    first = result.results[0]
    name = first.objective.removeprefix("val_")
    rows = [("model", "", "structure", "params", "nonzero", "FLOPs", f"val {name}", f"guard {name}", f"test {name}")]

    def num(value):
        return "-" if value is None else f"{value:.4f}"

    for i, r in enumerate(result.results):
        mark = "*" if i == result.selected else " "
        rows.append((f"{mark}{r.name}", "initial", r.initial_structure, f"{r.initial_params:,}", f"{r.initial_params:,}",
                     f"{r.initial_flops:,}", num(r.initial_val_score), num(r.initial_guard_score),
                     num(r.initial_test_score)))
        rows.append(("", "compact", r.structure, f"{r.params:,}", f"{r.params:,}", f"{r.flops:,}",
                     num(r.val_score), num(r.guard_score), num(r.test_score)))
        if r.eup is not None:
            rows.append(("", "EUP", r.structure, f"{r.params:,}", f"{r.eup_nonzero_params:,}",
                         f"{r.eup_nonzero_flops:,}", num(r.eup_val_score), num(r.eup_guard_score),
                         num(r.eup_test_score)))
    note = f"\n(* selected: {result.results[result.selected].name}; acceptance {first.acceptance})"
    return format_table(rows) + note


# -- prune ------------------------------------------------------------------------------------------------------
def parse_phases(text: str | None):
    """``0.5:3,0.2:3,near:3`` -> [(0.5, 3), (0.2, 3), (None, 3)]."""
    if text is None:
        return None
    phases = []
    for part in text.split(","):
        rate, _, attempts = part.partition(":")
        try:
            phases.append((None if rate.strip() == "near" else float(rate), int(attempts or 3)))
        except ValueError:
            raise CommandError(f"--phases: cannot read {part!r}; write RATE:ATTEMPTS or near:ATTEMPTS") from None
    return phases


def _file_digest(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _class_ids_for_builtins(data, specs):
    """Built-in models train on class ids (sparse cross-entropy): one-hot labels are turned into ids for them."""
    from keras_grs import models

    one_hot = [k for k in ("y_train", "y_val", "y_test") if k in data and data[k].ndim == 2 and data[k].shape[1] > 1]
    if not one_hot:
        return data
    builtin = [spec in models.NAMES for spec in specs]
    if any(builtin) and not all(builtin):
        raise CommandError("one-hot labels cannot serve built-in models (class ids) and model files together; "
                           "store class ids in the data file")
    if all(builtin):
        data = dict(data)
        for key in one_hot:
            data[key] = data[key].argmax(axis=1).astype("int32")
    return data


def _num_classes(data) -> int:
    import numpy as np

    y = data["y_train"]
    if y.ndim == 2 and y.shape[1] > 1:
        return int(y.shape[1])
    labels = [np.asarray(data[k]).reshape(-1) for k in ("y_train", "y_val", "y_test") if k in data]
    return max(2, int(max(label.max() for label in labels)) + 1)


def run_settings(args) -> dict:
    """What defines a run: a resumed run must have the same."""
    return {
        "models": list(args.models),
        "data": str(Path(args.data).resolve()),
        "data_sha256": _file_digest(args.data),
        "method": args.method,
        "tolerance": args.tolerance,
        "epochs": args.epochs,
        "initial_epochs": args.initial_epochs,
        "batch_size": args.batch_size,
        "eup": not args.no_eup,
        "selection": args.selection,
        "seed": args.seed,
        "phases": args.phases,
        "max_trials": args.max_trials,
        "backend": args.backend,
        "storage": args.storage,
        "objective": args.objective,
        "acceptance": args.acceptance,
        "guard_fraction": args.guard_fraction,
        "epoch_score": args.epoch_score,
        # absent from runs started before the options existed: unset reads the same
        "frozen": sorted(args.frozen) or None,
        "width_multiple": None if args.width_multiple == 1 else args.width_multiple,
    }


def parse_frozen(values: list[str] | None) -> list[str]:
    """``--frozen a,b --frozen c`` -> ["a", "b", "c"]."""
    names = [name.strip() for value in values or [] for name in value.split(",")]
    if any(not name for name in names):
        raise CommandError(f"--frozen: an empty group name in {','.join(values)!r}; write NAME[,NAME...]")
    return names


def parse_width_multiple(text: str | None) -> int:
    """``--width-multiple K``: a positive integer (1 when not given)."""
    if text is None:
        return 1
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise CommandError(f"--width-multiple must be a positive integer, got {text!r}")
    return value


def check_prune_arguments(args):
    """Everything the job needs, checked before anything is written. Returns (data, models, settings)."""
    from keras_grs.inputs import check_data, load_npz
    from keras_grs.search import check_tolerance
    from keras_grs.selection import CRITERIA

    try:
        check_tolerance(args.tolerance)
    except ValueError as error:
        raise CommandError(f"--tolerance: {error}") from None
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
    from keras_grs.guard import DEFAULT_GUARD_FRACTION, check_guard_fraction
    from keras_grs.scoring import objective_direction

    if args.guard_fraction is None:
        args.guard_fraction = DEFAULT_GUARD_FRACTION
    try:
        check_guard_fraction(args.guard_fraction)
    except ValueError as error:
        raise CommandError(f"--guard-fraction: {error}") from None
    try:
        objective_direction(args.objective)
    except ValueError as error:
        raise CommandError(f"--objective: {error}") from None
    if args.initial_epochs is not None and args.initial_epochs < 1:
        raise CommandError("--initial-epochs must be at least 1")
    check_options(args)
    args.frozen = parse_frozen(args.frozen)
    args.width_multiple = parse_width_multiple(args.width_multiple)
    if args.selection not in CRITERIA:
        raise CommandError(f"--selection must be one of {', '.join(CRITERIA)}")
    phases = parse_phases(args.phases)
    if phases is not None and args.method != "jgrs":
        raise CommandError("--phases only applies to --method jgrs")
    if phases is not None:
        from keras_grs.search import check_phases

        try:
            check_phases(phases)
        except ValueError as error:
            raise CommandError(f"--phases: {error}") from None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {str(out)!r} exists and is not a directory")
    from keras_grs.runlock import check_not_locked

    check_not_locked(out)  # a run in progress there: say whose, before loading anything
    if args.storage is not None:
        if "://" not in args.storage:
            raise CommandError(f"--storage {args.storage!r} is not a storage URL (sqlite:///PATH, postgresql://...)")
        find_storage(args.storage)  # refuses an unknown scheme before anything is written
    data = load_npz(args.data)
    data = _class_ids_for_builtins(data, args.models)
    settings = run_settings(args)
    check_run_directory(out, args.resume, settings)
    test = (data["x_test"], data["y_test"]) if "x_test" in data else None
    if args.selection in ("maxtestacc", "besttest") and test is None:
        raise CommandError(f"--selection {args.selection} needs x_test and y_test in the data file")
    if args.acceptance == "guard":
        from keras_grs.guard import split_guard

        try:
            split_guard((data["x_val"], data["y_val"]), args.guard_fraction, seed=args.seed)
        except ValueError as error:
            raise CommandError(f"--guard-fraction: {error}") from None
    num_classes = _num_classes(data)
    safe_mode = not args.unsafe_model
    if args.seed is not None:  # before the built-in models are built: their initial weights follow the seed too
        import keras

        keras.utils.set_random_seed(args.seed)
    models = [load_model(spec, data["x_train"].shape[1:], num_classes, safe_mode) for spec in args.models]
    from keras_grs import analyze
    from keras_grs.pipeline import check_constraints

    for spec, model in zip(args.models, models):
        if not model.compiled:
            raise CommandError(f"model {spec!r} is not compiled: save it after model.compile(...)")
        analyze(model)
        try:
            check_data(model, data["x_train"], data["y_train"], (data["x_val"], data["y_val"]), test)
        except ValueError as error:
            raise CommandError(f"model {spec!r}: {error}") from None
    for option, frozen in (("--width-multiple", []), ("--frozen", args.frozen)):  # the multiple alone first
        try:
            check_constraints(models, frozen, args.width_multiple)
        except ValueError as error:
            raise CommandError(f"{option}: {error}") from None
    return data, models, settings, phases


def check_run_directory(out: Path, resume: bool, settings: dict) -> None:
    """An empty (or new) directory, or with ``resume`` a run started with the same settings. Checked once before
    anything is written and again once the directory's lock is held, when no other process can change it."""
    from keras_grs.runlock import is_lock_file

    if out.is_dir() and any(not is_lock_file(p) for p in out.iterdir()):
        if not resume:
            raise CommandError(
                f"output directory {str(out)!r} is not empty; pass --resume to continue the run it holds, or choose "
                "another --out"
            )
        saved_path = out / RUN_FILE
        if not saved_path.is_file():
            raise CommandError(f"--resume: {str(out)!r} holds no {RUN_FILE}, so it is not a keras-grs run")
        try:
            saved = json.loads(saved_path.read_text())
        except ValueError:
            raise CommandError(f"--resume: {str(saved_path)!r} is not valid JSON; the run cannot be resumed") from None
        changed = sorted(k for k in settings if saved.get(k) != settings[k])
        if changed:
            raise CommandError(
                "--resume: the run in " + repr(str(out)) + " was started with other settings: "
                + "; ".join(f"{k} was {saved.get(k)!r}, now {settings[k]!r}" for k in changed)
            )


def check_options(args) -> None:
    """Option values that parse but make no sense."""
    if args.max_trials is not None and args.max_trials < 1:
        raise CommandError("--max-trials must be at least 1")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise CommandError("--seed must be in 0..4294967295")


def cmd_prune(args) -> int:
    data, models, settings, phases = check_prune_arguments(args)
    from keras_grs.files import remove_partials
    from keras_grs.runlock import RunLock

    out = Path(args.out)
    previous = signal.signal(signal.SIGTERM, _stop)  # a polite kill stops like Ctrl-C: lock released, no traceback
    try:
        with RunLock(out, command="keras-grs prune"):
            check_run_directory(out, args.resume, settings)  # again: another process may have started meanwhile
            remove_partials(out)  # what a killed run was writing
            return _prune_locked(args, out, data, models, settings, phases)
    except KeyboardInterrupt:
        again = "the same command" + ("" if args.resume else " plus --resume")
        print(f"keras-grs: stopped; finished trials are kept: run {again} to continue", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(signum, frame):
    raise KeyboardInterrupt


def _prune_locked(args, out, data, models, settings, phases) -> int:
    import keras

    from keras_grs import prune
    from keras_grs.files import write_json

    write_json(out / RUN_FILE, settings, indent=2)
    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)
    test = (data["x_test"], data["y_test"]) if "x_test" in data else None
    result = prune(
        models,
        data["x_train"],
        data["y_train"],
        (data["x_val"], data["y_val"]),
        test_data=test,
        method=args.method,
        tolerance=args.tolerance,
        eup=not args.no_eup,
        selection=args.selection,
        epochs=args.epochs,
        initial_epochs=args.initial_epochs,
        batch_size=args.batch_size,
        directory=str(out / "tuner"),
        seed=args.seed,
        phases=phases,
        max_trials=args.max_trials,
        verbose=0 if args.quiet else 1,
        backend=args.backend,
        storage=args.storage,
        evaluator=args.evaluator,
        objective=args.objective,
        acceptance=args.acceptance,
        guard_fraction=args.guard_fraction,
        epoch_score=args.epoch_score,
        frozen=args.frozen,
        width_multiple=args.width_multiple,
    )
    result.save(out)
    export_run_c(result, out, data)
    print(format_summary(result))
    for model_result in result.results:
        for warning in model_result.warnings:
            print(f"WARNING: {warning}")
    print(f"report: {out / 'report.md'}; models: {out / 'compact.keras'}" + ("" if args.no_eup else f", {out / 'eup.keras'}"))
    return _failed_trials_status(result)


def _failed_trials_status(result) -> int:
    """0, or 3 with a warning when trials failed: the result is written but is not a normal one."""
    from keras_grs.failures import failure_summary

    failed = [(r.name, r.failed_trials) for r in result.results if r.failed_trials]
    for name, trials in failed:
        print(f"keras-grs: warning: model {name!r}: {len(trials)} trial(s) FAILED ({failure_summary(trials)}); they "
              "counted as rejected candidates, so this is not a normal result", file=sys.stderr)
    return 3 if failed else 0


def export_run_c(result, out: Path, data) -> None:
    """Write the selected model (after EUP when there is one) as C into ``out/c``, verify it against Keras on the
    validation data, and record the check in the report."""
    import c_backend
    from keras_grs.report import write_report

    from keras_grs.structure import UnsupportedLayerError

    model = result.eup_model if result.eup_model is not None else result.model
    c_dir = out / "c"
    try:
        exported = c_backend.export(model, c_dir, name=model.name)
    except UnsupportedLayerError as error:  # graphs (residual, concatenating) have no C actors yet
        result.report["c_export"] = {"skipped": str(error)}
        write_report(result.report, out)
        print(f"C code: not written, the C backend does not support this model yet: {error}")
        return
    check = c_backend.verify(model, c_dir, data["x_val"], data["y_val"])
    result.report["c_export"] = {
        "directory": str(c_dir),
        "name": exported.name,
        "model": "eup" if result.eup_model is not None else "compact",
        "actors": [op["kind"] for op in exported.ops],
        **check.as_dict(),
    }
    write_report(result.report, out)
    print(f"C code: {c_dir} ({len(exported.ops)} actors); compiled and run on the validation data: max |C - Keras| "
          f"{check.max_abs_diff:.2e}, same class for {check.agreement:.2%} of samples")


def cmd_export_c(args) -> int:
    import c_backend

    from keras_grs.inputs import check_split, load_npz

    model = load_model(args.model, safe_mode=not args.unsafe_model)
    data = None
    if args.verify or args.int8:
        if not args.verify:
            raise CommandError("--int8 needs --verify DATA.npz: its samples calibrate the quantization")
        data = load_npz(args.verify)
        check_split("validation data", data["x_val"], data["y_val"])
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"{str(out)!r} exists and is not a directory")
    exported = c_backend.export(
        model, out, name=args.name, target=args.target, precision="int8" if args.int8 else "float32",
        sparse=args.sparse, calibration=data["x_train"][:512] if args.int8 else None,
    )
    print(f"wrote {len(exported.files)} files to {out}: {', '.join(op['actor'] for op in exported.ops)}")
    if data is not None:
        check = c_backend.verify(model, out, data["x_val"], data["y_val"])
        print(f"verified on {check.samples} validation samples: max |C - Keras| {check.max_abs_diff:.3e}, same class "
              f"{check.agreement:.2%}, accuracy Keras {check.keras_accuracy:.4f} / C {check.c_accuracy:.4f}")
    return 0


def cmd_report(args) -> int:
    from keras_grs.report import read_report, write_report

    try:
        report = read_report(args.directory)
    except FileNotFoundError as error:
        raise CommandError(str(error)) from None
    for path in write_report(report, args.directory):
        print(path)
    return 0


def find_storage(target: str) -> str:
    """A storage URL from a URL, an SQLite file, or a run directory holding one (DIR/optuna.db, DIR/tuner/optuna.db)."""
    from keras_grs.optuna.study import DB_FILE, STORAGE_SCHEMES

    if "://" in target:
        if target.split(":", 1)[0].split("+", 1)[0] not in STORAGE_SCHEMES:
            raise CommandError(f"unknown storage URL {target!r}")
        return target
    path = Path(target)
    for candidate in (path, path / DB_FILE, path / "tuner" / DB_FILE):
        if candidate.is_file():
            return f"sqlite:///{candidate.resolve()}"
    raise CommandError(f"no Optuna storage at {target!r}: give a storage URL, an SQLite file or a run directory")


def cmd_dashboard(args) -> int:
    storage = find_storage(args.target)
    from optuna_dashboard import run_server

    print(f"optuna-dashboard for {storage} at http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    run_server(storage, host=args.host, port=args.port)
    return 0


def cmd_analyze(args) -> int:
    shape = tuple(args.input_shape) if args.input_shape else None
    print(format_analysis(load_model(args.model, shape, args.num_classes, safe_mode=not args.unsafe_model)))
    return 0


def cmd_demo(args) -> int:
    """JGRS + EUP on nn1 and cnn1 with the simulated calcium data, selection, report with plots."""
    import numpy as np

    from keras_grs import datasets

    out = Path(args.out)
    x, y = datasets.calcium(n_neurons=140, n_frames=3000, seed=args.seed, image=True)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = datasets.split(x, y, val=0.2, test=0.1, seed=args.seed)
    print(f"simulated calcium data: {len(x)} frames of 140 neurons as {x.shape[1]}x{x.shape[2]} images; "
          f"train {len(x_train)}, validation {len(x_val)}, test {len(x_test)}")
    out.mkdir(parents=True, exist_ok=True)
    data_path = out / "calcium.npz"
    if not data_path.exists():
        np.savez(data_path, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test)
    traces = out / "calcium_traces.png"
    if not traces.exists():
        import matplotlib.pyplot as plt

        plt.close(datasets.plot_traces(traces, seed=args.seed))
    print(f"example traces of the simulated neurons: {traces}")
    run_dir = out / "run"
    argv = ["prune", "nn1", "cnn1", "--data", str(data_path), "--method", "jgrs", "--out", str(run_dir),
            "--epochs", str(args.epochs), "--initial-epochs", str(args.initial_epochs), "--seed", str(args.seed),
            "--tolerance", str(args.tolerance), "--phases", args.phases, "--resume"]
    if args.max_trials:
        argv += ["--max-trials", str(args.max_trials)]
    print("keras-grs " + " ".join(argv), flush=True)
    return main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keras-grs", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prune", help="prune models, apply EUP, select one, write models and a report")
    p.add_argument("models", nargs="+", metavar="MODEL", help="a .keras file or a built-in name (nn1, cnn1, ...)")
    p.add_argument("--data", required=True, help="an .npz with x_train, y_train, x_val, y_val [, x_test, y_test]")
    p.add_argument("--out", required=True, help="the run directory (must be empty unless --resume)")
    p.add_argument("--method", choices=["grs", "jgrs", "rrs", "nwm"], default="grs")
    p.add_argument("--tolerance", type=float, default=0.985,
                   help="valid when score >= T x the initial score (a loss: <= the initial loss / T); default 0.985")
    p.add_argument("--objective", default="val_accuracy",
                   help="the score kept within tolerance through search, EUP and selection: val_accuracy (default), "
                        "val_loss, or a metric the models are compiled with (val_auc, ...)")
    p.add_argument("--acceptance", choices=["guard", "seed"], default="guard",
                   help="guard (default): a guard split held back from the search confirms the final structure; "
                        "seed: the seed's rule (the last accepted structure)")
    p.add_argument("--epoch-score", choices=["last", "best", "best_latest"],
                   help="a candidate's score and weights: last (default with the guard: its last epoch), best "
                        "(default with the seed's rule: its first best epoch) or best_latest (its last best epoch)")
    p.add_argument("--guard-fraction", type=float,
                   help="share of the validation data held back as the guard, in (0, 0.9) (default 0.4)")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs per candidate (10)")
    p.add_argument("--initial-epochs", type=int, help="epochs to train each initial model (default: --epochs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-eup", action="store_true", help="skip thresholding and quantization")
    p.add_argument("--selection", default="minflops",
                   help="minparams, minflops (default), maxvalacc, maxtestacc, bestval, besttest (best objective)")
    p.add_argument("--seed", type=int)
    p.add_argument("--phases", help="JGRS phases, e.g. 0.5:3,0.2:3,near:3 (the default)")
    p.add_argument("--max-trials", type=int, help="cap on trials per model")
    p.add_argument("--frozen", action="append", metavar="NAME[,NAME]",
                   help="width groups the search never prunes (names as `keras-grs analyze` lists them); "
                        "repeatable")
    p.add_argument("--width-multiple", metavar="K",
                   help="keep every width a multiple of K (SIMD kernels like 4 or 8); a width that is not one "
                        "loses its remainder at its first removal; default 1")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument("--quiet", action="store_true", help="no per-trial progress lines")
    p.add_argument("--unsafe-model", action="store_true", help=UNSAFE_HELP)
    p.add_argument("--evaluator", choices=["batched", "keras"], default="batched",
                   help="batched (default): a step's candidates trained together in one compiled computation; "
                        "keras: one model.fit per candidate")
    p.add_argument("--backend", choices=["keras-tuner", "optuna"], default="keras-tuner",
                   help="keras-tuner (GRSTuner projects) or optuna (studies driven by the method's sampler)")
    p.add_argument("--storage", help="Optuna storage URL: the optuna backend's studies (default: DIR/tuner/optuna.db), "
                   "or where keras-tuner trials are mirrored")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("dashboard", help="start optuna-dashboard on a run directory or storage URL")
    p.add_argument("target", metavar="DIR_OR_URL")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("export-c", help="write a model as LIDE-style dataflow C (and check it against Keras)")
    p.add_argument("model", help="a .keras file or a built-in model name")
    p.add_argument("out", help="the directory to write")
    p.add_argument("--name", help="C name of the model (default: the model's name)")
    p.add_argument("--target", choices=["host", "pi-zero"], default="host", help="the Makefile's default build")
    p.add_argument("--int8", action="store_true", help="every layer in int8 (TFLite's scheme), calibrated on x_train")
    p.add_argument("--sparse", choices=["auto", "never", "always"], default="auto")
    p.add_argument("--verify", metavar="DATA.npz", help="compile, run on x_val and compare with Keras")
    p.add_argument("--unsafe-model", action="store_true", help=UNSAFE_HELP)
    p.set_defaults(func=cmd_export_c)

    p = sub.add_parser("report", help="re-render report.md and the plots of a run directory")
    p.add_argument("directory")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("analyze", help="print a model's width groups, params and FLOPs")
    p.add_argument("model", help="a .keras file or a built-in model name (nn1, nn2, cnn1, cnn2, *_scaled)")
    p.add_argument("--input-shape", type=int, nargs="+", help="input shape of a built-in model (default 140 or 12 12 1)")
    p.add_argument("--num-classes", type=int, default=2)
    p.add_argument("--unsafe-model", action="store_true", help=UNSAFE_HELP)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("demo", help="JGRS + EUP on nn1 and cnn1 with simulated calcium data (what `make demo` runs)")
    p.add_argument("--out", default="keras_grs_demo", help="where data and run go; an existing demo is resumed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=0.985)
    p.add_argument("--initial-epochs", type=int, default=30)
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per candidate")
    p.add_argument("--phases", default="0.5:2,0.25:2,0.1:2,near:1")
    p.add_argument("--max-trials", type=int, default=60, help="cap on trials per model (0: none)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from keras_grs.failures import SearchFailed
    from keras_grs.files import DiskFullError
    from keras_grs.runlock import RunLocked
    from keras_grs.structure import UnsupportedLayerError

    try:
        return args.func(args)
    except (CommandError, UnsupportedLayerError, ValueError, RunLocked) as error:
        print(f"keras-grs: error: {' '.join(str(error).split())}", file=sys.stderr)  # one line
        return 2
    except DiskFullError as error:
        print(f"keras-grs: error: {error.strerror}", file=sys.stderr)
        return 1
    except SearchFailed as error:
        print(f"keras-grs: error: {error}; fix the cause and run again in a new --out (with --resume the failed "
              "candidates stay rejected)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
