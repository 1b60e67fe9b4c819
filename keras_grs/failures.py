"""Failed trials, said plainly: which trial failed and why, for both backends.

A search counts a failed trial as a rejected candidate and goes on, but a run that had failures is not a normal
result (the structure may be larger than a clean run's): :func:`keras_grs.prune` records them per model
(``ModelResult.failed_trials``), the report lists them and the CLI exits with status 3. When the trials keep failing
(keras-tuner's ``max_consecutive_failed_trials`` in a row, or an Optuna trial that raised) the search stops with
:class:`SearchFailed`.
"""

from __future__ import annotations


class SearchFailed(RuntimeError):
    """A search stopped because its trials failed. ``trial_id`` and ``error`` name the last failure."""

    def __init__(self, model_name: str, trial_id: str | None, error: str, why: str):
        self.model_name, self.trial_id, self.error = model_name, trial_id, error
        where = f"trial {trial_id}" if trial_id is not None else "a trial"
        super().__init__(f"the search of model {model_name!r} stopped: {why}; {where} failed with {error}")


def last_line(message) -> str:
    """The last non-empty line of a trial's message (a traceback ends with the exception)."""
    lines = [line.strip() for line in str(message or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def tuner_failures(oracle) -> list[dict]:
    """The FAILED trials of a keras-tuner oracle, in the order they ended: ``{"trial_id", "error"}``.

    A failed candidate that a later trial evaluated after all (a retry) is not a failure of the run."""
    from keras_grs.tuner.oracles import KEY

    order = [t for t in getattr(oracle, "end_order", []) if t in oracle.trials]
    order += [t for t in oracle.trials if t not in order]
    trials = [oracle.trials[t] for t in order]

    def key(trial):
        return oracle.bookkeeping(trial.trial_id).get(KEY)

    done = {key(t) for t in trials if t.status == "COMPLETED"}
    return [{"trial_id": t.trial_id, "error": last_line(t.message)}
            for t in trials if t.status == "FAILED" and key(t) not in done]


def study_failures(study) -> list[dict]:
    """The trials of an Optuna study that raised and whose candidate never completed: ``{"trial_id", "error"}``.

    Trials of a process that died (killed, or its machine) are marked failed by Optuna's heartbeat and their
    candidate runs again: they are not failures of the run."""
    from optuna.trial import TrialState

    from keras_grs.optuna.samplers import ERROR_ATTR, KEY_ATTR, raised

    trials = study.get_trials(deepcopy=False)
    done = {t.system_attrs.get(KEY_ATTR) for t in trials if t.state == TrialState.COMPLETE}
    return [{"trial_id": str(t.number), "error": t.user_attrs.get(ERROR_ATTR, "the trial raised (see the log)")}
            for t in trials if raised(t) and t.system_attrs.get(KEY_ATTR) not in done]


def tuner_search_failed(model_name, oracle, error: Exception) -> SearchFailed | None:
    """keras-tuner's consecutive-failure stop as a :class:`SearchFailed` (None when ``error`` is something else)."""
    failed = tuner_failures(oracle)
    limit = oracle.max_consecutive_failed_trials
    in_a_row = 0
    for trial_id in getattr(oracle, "end_order", []):  # the rule keras-tuner applies, from its public trial states
        in_a_row = in_a_row + 1 if oracle.trials[trial_id].status == "FAILED" else 0
    if not failed or not limit or in_a_row < limit:
        return None
    return SearchFailed(model_name, failed[-1]["trial_id"], failed[-1]["error"],
                        f"{limit} trials failed in a row (max_consecutive_failed_trials={limit})")


def study_search_failed(model_name, study, error: Exception, failed_before: int) -> SearchFailed | None:
    """An exception that escaped an Optuna trial, naming the trial it failed (None when no trial failed, e.g. a
    check before the first trial)."""
    failed = study_failures(study)
    if len(failed) <= failed_before:
        return None
    return SearchFailed(model_name, failed[-1]["trial_id"], f"{type(error).__name__}: {last_line(error)}",
                        "a trial raised")


def failure_summary(failed: list[dict], limit: int = 3) -> str:
    """``trial 03: RuntimeError: ...; trial 07: ...`` (the first ``limit``, then how many more)."""
    shown = "; ".join(f"trial {f['trial_id']}: {f['error']}" for f in failed[:limit])
    return shown + (f"; and {len(failed) - limit} more" if len(failed) > limit else "")
