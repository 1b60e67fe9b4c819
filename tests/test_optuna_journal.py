"""Optuna's JournalStorage file backend as keras-grs's storage argument: `--storage journal:///PATH`.

A journal file needs no server: several processes of one machine (or of several machines, on a shared disk whose
file locks work) append to it. Three `keras-grs prune` workers share one study there (one leaves early, two run at
once); the details of the workers are in tests/prune_workers.py.
"""

import time

import optuna
import pytest
from prune_workers import check_shared_like_single, prune_arguments, run_workers, study_on, write_inputs

from keras_grs import optuna as kgo
from keras_grs.cli import main
from keras_grs.optuna.study import open_storage

WORKERS = 2


def test_workers_on_one_journal_file_share_the_work_and_take_the_single_process_path(tmp_path):
    model, data = write_inputs(tmp_path)
    journal = f"journal:///{tmp_path / 'shared' / 'journal.log'}"  # absolute: journal:////tmp/...
    started = time.perf_counter()
    runs, finishers = run_workers(model, data, tmp_path, journal, WORKERS)
    seconds = time.perf_counter() - started
    single = f"journal:///{tmp_path / 'single.log'}"
    assert main(prune_arguments(model, data, tmp_path / "single", single)) == 0

    assert (tmp_path / "shared" / "journal.log").stat().st_size > 0
    trials = check_shared_like_single(study_on(journal), study_on(single), runs, finishers)
    print(f"one worker that left and {WORKERS} at once: {trials} trials in {seconds:.0f} s")


def test_a_relative_journal_url_is_a_file_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = open_storage("journal:///runs/journal.log")
    study = kgo.create_study(kgo.RRSSampler(seed=0), storage=storage, study_name="s")
    assert (tmp_path / "runs" / "journal.log").is_file()
    assert optuna.load_study(study_name="s", storage=open_storage("journal:///runs/journal.log")).study_name == \
        study.study_name


@pytest.mark.parametrize("url, message", [
    ("journal:///", "journal:///PATH"),
    ("journal://host/file.log", "journal:///PATH"),
    ("journal:relative.log", "unknown storage URL"),
    ("redis://localhost:6379", "JournalRedisBackend"),
])
def test_journal_urls_it_cannot_take_are_refused_naming_the_form_it_takes(url, message):
    with pytest.raises(ValueError, match=message):
        open_storage(url)


def test_a_directory_is_not_a_journal_file(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        open_storage(f"journal:///{tmp_path}")


def test_the_command_line_refuses_a_journal_url_without_a_path(tmp_path, capsys):
    model, data = write_inputs(tmp_path)
    assert main(prune_arguments(model, data, tmp_path / "run", "journal:///")) == 2
    assert "journal:///PATH" in capsys.readouterr().err


def test_the_dashboard_opens_a_journal_url_itself(tmp_path, monkeypatch):
    """optuna-dashboard reads any file as SQLite: `keras-grs dashboard journal:///...` hands it the opened storage."""
    import optuna_dashboard

    url = f"journal:///{tmp_path / 'journal.log'}"
    kgo.create_study(kgo.RRSSampler(seed=0), storage=open_storage(url), study_name="shown")
    served = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda storage, **kw: served.append(storage))
    assert main(["dashboard", url]) == 0
    (storage,) = served
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["shown"]
