"""The search methods' decisions, against fake deterministic evaluators (no Keras training)."""

import math

import numpy as np
import pytest

from keras_grs.search import GroupSpec, Outcome, Phase, SearchError, make_search, run
from keras_grs.search.engine import jump_size


def linear_score(costs, base=1.0):
    """Score drops by costs[g] for every unit removed from group g."""

    def evaluate(candidate):
        return Outcome(score=base - sum(c * (w0 - w) for c, w0, w in zip(costs, evaluate.widths0, candidate.widths)))

    return evaluate


def groups(*widths, min_width=1):
    return [GroupSpec(f"g{i}", w, min_width) for i, w in enumerate(widths)]


def run_logged(search, evaluate):
    """Run a search and keep the batches it asked for."""
    batches, outcomes = [], {}
    while True:
        plan = search.plan(outcomes)
        if plan.finished:
            return plan, batches
        batches.append(plan.pending)
        for c in plan.pending:
            outcomes[c.key] = evaluate(c)


def test_grs_offers_one_candidate_per_group_and_keeps_the_best_valid_one():
    search = make_search("grs", groups(4, 4), tolerance=0.985, seed=0)
    evaluate = linear_score([0.001, 0.01])
    evaluate.widths0 = (4, 4)
    plan, batches = run_logged(search, evaluate)
    # initial, then steps with one candidate per group above minimum width, each removing one unit
    assert [len(b) for b in batches[:2]] == [1, 2]
    for batch in batches[1:]:
        assert len({c.parent for c in batch}) == 1
        assert all(sum(c.widths) == sum(plan.candidates[c.parent].widths) - 1 for c in batch)
    # the cheap group g0 goes first, down to its minimum; then g1 loses one unit (total loss 0.013 < 0.015)
    assert [s.widths for s in plan.path] == [(4, 4), (3, 4), (2, 4), (1, 4), (1, 3)]
    # the last step's only candidate (1, 2) scores 0.977 < 0.985: the search stopped
    assert batches[-1][0].widths == (1, 2) and len(batches[-1]) == 1
    assert plan.final == plan.path[-1].key and plan.reference == 1.0


def test_grs_picks_the_highest_score_then_the_fewest_flops():
    search = make_search("grs", groups(3, 3), tolerance=0.5, seed=0)

    def evaluate(c):
        return Outcome(score=1.0, flops=100 * c.widths[0] + 10 * c.widths[1])

    plan = run(search, evaluate)
    # equal scores: g0 (100 FLOPs per unit) goes first, always
    assert [s.widths for s in plan.path][:3] == [(3, 3), (2, 3), (1, 3)]
    assert plan.path[-1].widths == (1, 1)


def test_grs_stops_when_every_group_is_at_its_minimum():
    search = make_search("grs", [GroupSpec("a", 5, 3), GroupSpec("b", 2, 2)], tolerance=0.9, seed=0)
    plan = run(search, lambda c: Outcome(score=1.0))
    assert plan.finished and plan.path[-1].widths == (3, 2)
    assert len(plan.candidates) == 3  # init + two steps of one candidate (b is already at its minimum)


def test_grs_does_not_freeze_a_group_whose_candidate_failed():
    # g1 fails while g0 is wide, and becomes prunable once g0 is small: it must be tried again.
    search = make_search("grs", groups(3, 3), tolerance=0.9, seed=0)

    def evaluate(c):
        a, b = c.widths
        return Outcome(score=1.0 if (b == 3 or a <= 1) else 0.0)

    plan = run(search, evaluate)
    assert plan.path[-1].widths == (1, 1)
    assert plan.verdicts[[k for k, c in plan.candidates.items() if c.widths == (3, 2)][0]] == "failed"


def test_unit_choice_is_random_but_reproducible_by_seed():
    def removed(seed):
        plan = run(make_search("grs", groups(16), tolerance=0.5, seed=seed), lambda c: Outcome(score=1.0))
        return [plan.candidates[s.key].removed for s in plan.path[1:]]

    assert removed(1) == removed(1)
    assert removed(1) != removed(2)


def test_replay_continues_from_any_prefix_of_outcomes():
    search = make_search("jgrs", groups(32, 16, 8), tolerance=0.98, seed=3)
    evaluate = linear_score([0.0005, 0.001, 0.002])
    evaluate.widths0 = (32, 16, 8)
    full = run(search, evaluate)
    outcomes = {}
    for _ in range(5):  # evaluate a few batches, then start again from the stored outcomes only
        plan = search.plan(outcomes)
        for c in plan.pending[:1]:
            outcomes[c.key] = evaluate(c)
    assert outcomes
    again = make_search("jgrs", groups(32, 16, 8), tolerance=0.98, seed=3)
    plan = again.plan(outcomes)
    while not plan.finished:
        for c in plan.pending:
            outcomes[c.key] = evaluate(c)
        plan = again.plan(outcomes)
    assert [s.key for s in plan.path] == [s.key for s in full.path]
    assert set(outcomes) == set(full.candidates)


def _plan_view(plan):
    return (plan.finished, [c.key for c in plan.pending], plan.final, [s.key for s in plan.path], plan.reference,
            plan.verdicts, sorted(plan.candidates), plan.phase_ends)


@pytest.mark.parametrize("method", ["grs", "rrs", "nwm", "jgrs"])
def test_a_plan_continued_from_the_last_one_equals_a_replay_from_scratch(method):
    """The engine keeps its replay between plans; each answer must be the one a fresh replay gives, also when an
    outcome it consumed disappears (a discarded trial) and is evaluated again."""
    rng = np.random.default_rng(7)
    noise = {}

    def evaluate(c):
        noise.setdefault(c.key, rng.normal(0, 0.004))
        norms = {f"g{i}": [100.0 - u for u in units] for i, units in enumerate(c.units)}
        return Outcome(score=1.0 - 0.002 * (44 - sum(c.widths)) + noise[c.key], flops=sum(c.widths),
                       unit_norms=norms)

    def fresh(outcomes):
        return make_search(method, groups(24, 12, 8), tolerance=0.97, seed=5).plan(outcomes)

    search = make_search(method, groups(24, 12, 8), tolerance=0.97, seed=5)
    outcomes, plans, replays = {}, 0, []
    while True:
        plan = search.plan(outcomes)
        assert _plan_view(plan) == _plan_view(fresh(outcomes))
        replays.append(search._replay)  # kept alive, so their ids stay distinct
        plans += 1
        if plan.finished:
            break
        for c in plan.pending[:2]:  # part of a batch at a time, as parallel workers report
            outcomes[c.key] = evaluate(c)
        if plans in (6, 9):  # a consumed outcome goes (a damaged checkpoint's trial runs again), then comes back
            del outcomes[list(outcomes)[1]]
    assert plans > 10 and len({id(r) for r in replays}) == 3  # replayed from scratch only when an outcome went
    earlier = search.plan({})  # back to nothing known: the initial candidate again
    assert earlier.pending[0].key == "init" and not earlier.finished


def test_rrs_prunes_random_groups_one_candidate_at_a_time_and_stops_at_the_first_failure():
    chosen = set()
    for seed in range(6):
        search = make_search("rrs", groups(6, 6, 6), tolerance=0.9, seed=seed)
        plan, batches = run_logged(search, lambda c: Outcome(score=1.0 if sum(c.widths) > 12 else 0.0))
        assert all(len(b) == 1 for b in batches)
        assert plan.path[-1].widths and sum(plan.path[-1].widths) == 13
        assert sum(batches[-1][0].widths) == 12  # the single failure ended the search
        for step in plan.path[1:]:
            (group, _), = plan.candidates[step.key].removed
            chosen.add(group)
    assert chosen == {"g0", "g1", "g2"}


def test_nwm_walks_groups_in_order_and_removes_the_smallest_l1_unit():
    limits = {0: 3, 1: 2, 2: 4}  # each group fails below this width

    def evaluate(c):
        ok = all(w >= limits[i] for i, w in enumerate(c.widths))
        # norm of a unit = 100 - its original index: the highest original index is the smallest
        norms = {f"g{i}": [100.0 - u for u in units] for i, units in enumerate(c.units)}
        return Outcome(score=1.0 if ok else 0.0, unit_norms=norms)

    search = make_search("nwm", groups(6, 5, 6), tolerance=0.99, seed=0)
    plan, batches = run_logged(search, evaluate)
    pruned = [plan.candidates[b[0].key].removed[0][0] for b in batches[1:]]
    assert pruned == sorted(pruned)  # natural order: g0 ... then g1 ... then g2
    assert plan.path[-1].widths == (3, 2, 4)
    final = plan.candidates[plan.final]
    assert final.units == ((0, 1, 2), (0, 1), (0, 1, 2, 3))  # the highest original indices went first
    # after a failure, NWM continues from the last valid model
    failed = [k for k, v in plan.verdicts.items() if v == "failed"]
    assert len(failed) == 3
    for key in failed:
        assert plan.verdicts[plan.candidates[key].parent] in ("accepted", "initial")


def test_nwm_without_unit_norms_is_a_clear_error():
    search = make_search("nwm", groups(4), tolerance=0.9)
    with pytest.raises(ValueError, match="L1 norms"):
        run(search, lambda c: Outcome(score=1.0))


def test_jgrs_jumps_then_refines_with_attempts_per_phase():
    search = make_search("jgrs", groups(32, 16, 8), tolerance=0.98, seed=0)
    evaluate = linear_score([0.0005, 0.001, 0.002])
    evaluate.widths0 = (32, 16, 8)
    plan, batches = run_logged(search, evaluate)
    # far phase 1: three attempts run together, each jumping by half of every group
    assert len(batches[1]) == 3
    assert {c.widths for c in batches[1]} == {(16, 8, 4)}
    assert {c.phase for c in batches[1]} == {"far1"}
    assert list(plan.phase_ends) == ["far1", "far2", "near"]
    phases = [s.phase for s in plan.path]
    assert phases == sorted(phases, key=["initial", "far1", "far2", "near"].index)
    # the result is valid and at most half the start (the loss budget allows (8, 12, 6) at best)
    final = plan.path[-1]
    assert final.score >= 0.98 and sum(final.widths) <= 28


def test_jgrs_keeps_the_attempt_with_the_fewest_flops():
    # one attempt's random units are "lucky": score depends on which original units survive
    search = make_search("jgrs", groups(16), tolerance=0.9, seed=5, phases=[(0.5, 4)])

    def evaluate(c):
        return Outcome(score=1.0 if 0 in c.units[0] else 0.0, flops=len(c.units[0]))

    plan = run(search, evaluate)
    ends = [plan.candidates[k] for k, v in plan.verdicts.items() if v == "accepted"]
    best = min(len(c.units[0]) for c in ends)
    assert plan.path[-1].widths == (best,)


def test_jump_size_rounds_up_and_respects_the_minimum():
    assert jump_size(32, 1, 0.5) == 16
    assert jump_size(5, 1, 0.5) == 3
    assert jump_size(3, 2, 0.5) == 1
    assert jump_size(2, 2, 0.5) == 0
    assert jump_size(7, 1, 0.2) == math.ceil(1.4)


def test_phases_are_checked():
    with pytest.raises(ValueError, match="decrease"):
        make_search("jgrs", groups(8), phases=[(0.2, 3), (0.5, 3)])
    with pytest.raises(ValueError, match="near phase"):
        make_search("jgrs", groups(8), phases=[(None, 3), (0.5, 3)])
    with pytest.raises(ValueError, match="attempt"):
        make_search("jgrs", groups(8), phases=[(0.5, 0)])
    with pytest.raises(ValueError, match="only apply"):
        make_search("grs", groups(8), phases=[(0.5, 1)])
    assert make_search("jgrs", groups(8), phases=[Phase(0.5, 1), {"rate": None, "attempts": 2}])


def test_a_failed_evaluation_counts_as_not_valid_and_a_failed_initial_stops():
    search = make_search("rrs", groups(4), tolerance=0.9, seed=0)
    plan = run(search, lambda c: Outcome(score=None if c.widths == (3,) else 1.0))
    assert plan.path[-1].widths == (4,) and plan.finished
    with pytest.raises(SearchError, match="initial"):
        run(make_search("grs", groups(4)), lambda c: Outcome(score=None))


@pytest.mark.parametrize("tolerance", [0, -0.5, 1.01, "0.9", True, float("nan")])
def test_bad_tolerances_are_refused(tolerance):
    with pytest.raises(ValueError, match="tolerance"):
        make_search("grs", groups(4), tolerance=tolerance)


def test_unknown_method_and_unit_selection():
    with pytest.raises(ValueError, match="unknown method 'xyz'"):
        make_search("xyz", groups(4))
    with pytest.raises(ValueError, match="unit selection"):
        make_search("grs", groups(4), units="biggest")


# -- objectives of either direction, and the guard's walk back ---------------------------------------------------
def test_a_minimized_loss_is_valid_only_within_reference_over_tolerance():
    search = make_search("grs", groups(4, 4), tolerance=0.9, seed=0, direction="min")

    def evaluate(c):  # the loss grows by 0.1 per unit removed from g0, 0.01 per unit of g1
        return Outcome(score=1.0 + 0.1 * (4 - c.widths[0]) + 0.01 * (4 - c.widths[1]))

    plan = run(search, evaluate)
    # valid while loss <= 1 / 0.9 = 1.111: the cheap group g1 goes first (lower loss is better), down to 1;
    # then g0 once (1.03 + 0.1 = 1.13 > 1.111 fails): the path never accepts a loss beyond the bound
    assert all(step.score <= 1.0 / 0.9 for step in plan.path)
    assert plan.path[-1].widths == (4, 1)
    assert {plan.verdicts[k] for k, c in plan.candidates.items() if evaluate(c).score > 1.0 / 0.9} == {"failed"}


def test_a_maximized_score_read_as_a_loss_would_accept_everything_worse():
    # the same evaluator with the seed's direction: every worse loss counts as valid, so direction matters
    search = make_search("rrs", groups(3), tolerance=0.9, seed=0, direction="max")
    plan = run(search, lambda c: Outcome(score=1.0 + (3 - c.widths[0])))
    assert plan.path[-1].widths == (1,)
    search = make_search("rrs", groups(3), tolerance=0.9, seed=0, direction="min")
    assert run(search, lambda c: Outcome(score=1.0 + (3 - c.widths[0]))).path[-1].widths == (3,)


@pytest.mark.parametrize("direction", ["maximize", "MIN", "max"])
def test_directions_are_spelled_the_keras_tuner_or_the_optuna_way(direction):
    assert make_search("grs", groups(2), direction=direction).direction in ("max", "min")


def test_an_unknown_direction_is_refused():
    with pytest.raises(ValueError, match="direction must be"):
        make_search("grs", groups(2), direction="up")


def test_the_final_structure_walks_back_to_the_last_one_the_guard_confirms():
    search = make_search("rrs", groups(6), tolerance=0.95, seed=0)

    def evaluate(c):  # validation stays perfect, the guard drops with every unit below 4
        w = c.widths[0]
        return Outcome(score=1.0, guard=1.0 if w >= 4 else 0.5)

    plan = run(search, evaluate)
    assert plan.path[-1].widths == (1,)  # the search itself accepted everything
    assert plan.candidates[plan.final].widths == (4,)  # the guard confirms down to 4 units
    assert plan.guard_reference == 1.0 and plan.path[plan.final_index].key == plan.final
    rows = plan.path_rows(["g0"], str)
    assert [r["final"] for r in rows].count(True) == 1 and rows[plan.final_index]["guard"] == 1.0


def test_without_guard_scores_the_final_structure_is_the_last_accepted():
    search = make_search("rrs", groups(4), tolerance=0.95, seed=0)
    plan = run(search, lambda c: Outcome(score=1.0))
    assert plan.final == plan.path[-1].key and plan.guard_reference is None


def test_a_guard_that_never_confirms_keeps_the_initial_structure():
    search = make_search("rrs", groups(4), tolerance=0.95, seed=0)
    plan = run(search, lambda c: Outcome(score=1.0, guard=1.0 if c.widths[0] == 4 else 0.1))
    assert plan.final == plan.path[0].key


def test_a_lucky_guard_score_after_failing_ones_does_not_carry_the_final_structure():
    search = make_search("rrs", groups(5), tolerance=0.95, seed=0)
    guards = {5: 1.0, 4: 1.0, 3: 0.5, 2: 1.0, 1: 0.5}  # width 2 passes the guard by luck, after width 3 failed

    plan = run(search, lambda c: Outcome(score=1.0, guard=guards[c.widths[0]]))
    # the monotone fit pools 3 and 2 to 0.75: the last structure within tolerance is width 4, not the lucky 2
    assert plan.candidates[plan.final].widths == (4,)


@pytest.mark.parametrize("samples, final_width", [(46, 1), (None, 6), (2000, 5)])
def test_the_guard_walks_back_only_on_evidence_beyond_its_sampling_noise(samples, final_width):
    """Each unit below 6 costs one sample of 46 on the guard (2.2 points, tolerance 2%): within a 46-sample guard's
    noise, so nothing is walked back. Without a sample count any excess counts (width 6). Measured on 2,000
    samples, losing 1/46 (0.17 points beyond the tolerance) is still noise but 2/46 is not (width 5)."""
    search = make_search("rrs", groups(8), tolerance=0.98, seed=0)

    def evaluate(c):
        lost = max(0, 6 - c.widths[0]) if samples != 46 else min(1, max(0, 6 - c.widths[0]))
        return Outcome(score=1.0, guard=1.0 - lost / 46, guard_samples=samples)

    plan = run(search, evaluate)
    assert plan.path[-1].widths == (1,)
    assert plan.candidates[plan.final].widths == (final_width,)


@pytest.mark.parametrize("traded", [0, 12])
def test_the_walk_back_rejects_a_shortfall_whatever_errors_the_structure_trades(traded):
    """Two structures with the same guard score (8 of 200 samples lost net, 2 points beyond a 2% tolerance): one
    loses 8 samples the initial structure got right and gains none, the other loses 20 and gains 12. A paired test
    calls the second noise; the walk back tries step after step from the end until one passes, so it takes the
    shortfall's smallest noise for both (measured lenient otherwise: docs/concepts.md). Width 1 gets everything
    wrong."""
    from keras_grs.guard import pack_outcomes

    reference = np.arange(200) >= 10  # right on 190 of 200
    step = reference.copy()
    step[10:10 + 8 + traded] = False  # lost
    step[:traded] = True  # gained
    rights = {3: reference, 2: step, 1: np.zeros(200, bool)}
    search = make_search("rrs", groups(3), tolerance=0.98, seed=0)
    plan = run(search, lambda c: Outcome(score=1.0, guard=float(rights[c.widths[0]].mean()), guard_samples=200,
                                         guard_right=pack_outcomes(rights[c.widths[0]])))
    assert [s.widths for s in plan.path] == [(3,), (2,), (1,)]
    assert plan.path[1].guard == pytest.approx(182 / 200)
    assert plan.candidates[plan.final].widths == (3,)


def test_a_step_that_wins_back_guard_samples_after_a_rejected_one_is_pooled_with_it():
    """Width 3 loses 16 of 200 guard samples (clearly beyond a 2% tolerance); width 2, a subset of its units, loses
    only 2: on its own within noise, by luck. The path only removes units, so the guard scores are read through a
    monotone fit: 3 and 2 pool to 9 lost, beyond both steps' noise, and the walk back keeps width 4."""
    from keras_grs.guard import pack_outcomes
    from keras_grs.search.engine import beyond_paired_noise

    reference = np.arange(200) >= 10
    lost = {4: 0, 3: 16, 2: 2}
    rights = {w: np.where(np.arange(200) < 10 + n, False, reference) for w, n in lost.items()}
    rights[1] = np.zeros(200, bool)
    assert not beyond_paired_noise(reference, rights[2], 0.98)  # alone, width 2 would pass
    search = make_search("rrs", groups(4), tolerance=0.98, seed=0)
    plan = run(search, lambda c: Outcome(score=1.0, guard=float(rights[c.widths[0]].mean()), guard_samples=200,
                                         guard_right=pack_outcomes(rights[c.widths[0]])))
    assert [s.widths for s in plan.path] == [(4,), (3,), (2,), (1,)]
    assert plan.candidates[plan.final].widths == (4,)


def test_a_guard_shortfall_far_beyond_its_noise_walks_back_even_on_a_small_guard():
    search = make_search("rrs", groups(4), tolerance=0.98, seed=0)
    plan = run(search, lambda c: Outcome(score=1.0, guard=1.0 if c.widths[0] >= 3 else 0.6, guard_samples=46))
    assert plan.candidates[plan.final].widths == (3,)


def test_a_minimized_guard_score_walks_back_in_its_direction():
    search = make_search("rrs", groups(4), tolerance=0.9, seed=0, direction="min")
    losses = {4: 1.0, 3: 1.05, 2: 1.5, 1: 1.6}
    plan = run(search, lambda c: Outcome(score=1.0, guard=losses[c.widths[0]]))
    assert plan.candidates[plan.final].widths == (3,)  # 1.05 <= 1 / 0.9; 1.5 is not
