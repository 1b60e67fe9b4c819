"""The soak benchmark's verdicts (benchmarks/soak.py) on made-up studies and RSS samples whose answer is known."""

import sys
from argparse import Namespace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import soak  # noqa: E402

MB = 2**20


def trial(number, state, key, checkpoint=None, completed=None):
    return {"number": number, "state": state, "key": key, "checkpoint": checkpoint, "started": None,
            "completed": completed}


def test_a_killed_trial_whose_candidate_ran_again_is_not_lost_but_one_never_completed_is():
    checks = soak.trial_checks([
        trial(0, "COMPLETE", "init"),
        trial(1, "FAIL", "grs.c1"),  # killed, then evaluated by trial 2
        trial(2, "COMPLETE", "grs.c1"),
        trial(3, "RUNNING", None),  # killed before it claimed a candidate
        trial(4, "RUNNING", "grs.c2"),  # killed near the end, and nobody evaluated its candidate: lost
        trial(5, "PRUNED", None),
    ])
    assert checks["lost"] == [4]
    assert checks["killed_rerun"] == 2 and checks["left_running"] == 2 and checks["failed"] == 1
    assert checks["repeated"] == [] and checks["completed"] == 2 and checks["pruned"] == 1


def test_a_candidate_completed_twice_is_a_repeat_unless_the_first_was_set_aside():
    assert soak.trial_checks([trial(0, "COMPLETE", "a"), trial(1, "COMPLETE", "a")])["repeated"] == ["a"]
    checks = soak.trial_checks([trial(0, "DISCARDED", "a"), trial(1, "COMPLETE", "a")])
    assert checks["repeated"] == [] and checks["discarded"] == [0]


def process(tmp_path, worker, started, rss_of, trials, restarted_from=None):
    """An incarnation completing ``trials`` (numbers) one per second from ``started``, with RSS rss_of(i)."""
    samples = [(started + i + 0.5, int(rss_of(i) * MB)) for i in range(len(trials))]
    records = [trial(n, "COMPLETE", f"k{n}", str(tmp_path / f"worker{worker}" / "ckpt" / f"trial_{n}.weights.h5"),
                     started + i + 0.9) for i, n in enumerate(trials)]
    inc = soak.Incarnation(worker, 100 + worker, started, None, tmp_path / "log", ended=started + len(trials) + 1)
    inc.samples = samples
    return inc, records


def judge(tmp_path, incarnations_and_trials):
    incarnations = [inc for inc, _ in incarnations_and_trials]
    trials = [t for _, records in incarnations_and_trials for t in records]
    outs = [tmp_path / "worker0", tmp_path / "worker1"]
    args = Namespace(warmup=5, flat_from=100, flat_percent=5.0, reference=10)
    return soak.rss_checks(trials, incarnations, outs, args)


def test_rss_that_grows_by_a_tenth_after_trial_100_is_not_flat_and_growth_before_it_is_not_judged(tmp_path):
    growing = process(tmp_path, 1, 0.0, lambda i: 500 + (i - 100) * 0.5 if i >= 100 else 300 + i, range(200))
    (row,) = judge(tmp_path, [growing])
    assert row["judged"] == 100 and not row["flat"]
    assert row["max_pct"] > 9  # from 502 MB (its first ten judged trials) to 549.5 MB
    assert row["slope_mb_per_100"] > 49
    steady = process(tmp_path, 1, 0.0, lambda i: 500 + (i % 3) if i >= 100 else 300 + i, range(200))
    (row,) = judge(tmp_path, [steady])
    assert row["flat"] and row["reference_mb"] == 501


def test_a_restarted_process_is_judged_after_its_warm_up_and_against_its_own_level(tmp_path):
    first = process(tmp_path, 0, 0.0, lambda i: 500, range(100, 150))
    # the restart settles at another level than the first process, after a warm-up of five trials
    restart = process(tmp_path, 0, 100.0, lambda i: 300 + 40 * i if i < 5 else 520, range(150, 200))
    rows = judge(tmp_path, [first, restart])
    assert [r["restarted"] for r in rows] == [False, True]
    assert rows[1]["warmup_skipped"] == 5 and rows[1]["judged"] == 45
    assert all(r["flat"] for r in rows)
    assert rows[1]["reference_mb"] == 520
