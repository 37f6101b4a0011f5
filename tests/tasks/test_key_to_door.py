"""Key-to-Door: dynamics, calibration of random play (~3%), token encoding."""

import numpy as np
import pytest

from seqlevel.tasks import key_to_door as ktd


def test_random_play_succeeds_about_three_percent():
    # B.7 calibration: 3.1% for (T1, T3) = (16, 15); binomial s.e. at n=40k is 0.0009
    rate = ktd.random_success_rate(40_000, seed=3)
    assert 0.026 <= rate <= 0.036, rate


def test_door_needs_the_key_and_optimal_play_wins_in_shortest_time():
    env = ktd.KeyToDoor(1, seed=0)
    # without the key: walk phase 1 away from the key (south into the wall), then straight north in phase 3
    for _ in range(ktd.T1 + ktd.T2):
        env.step(np.array([1]))
    assert env.phase[0] == 3 and not env.has_key[0]
    for _ in range(ktd.T3):
        env.step(np.array([0]))
    assert env.done[0] and not env.success[0]
    # with the key: go to the key by BFS-free greedy moves (row first, then column), idle, then north twice
    env = ktd.KeyToDoor(1, seed=5)
    kr, kc = ktd._KEY_CELLS[env.key[0]]
    t = 0
    while not env.has_key[0]:
        r, c = env.pos[0]
        a = 0 if r > kr and (r != 4 or 2 <= c <= 4) and (r != 3 or True) else None
        if a is None:
            if r == 4 and not 2 <= c <= 4:
                a = 3 if c < 2 else 2  # move toward the gap
            else:
                a = 2 if c > kc else 3
        env.step(np.array([a]))
        t += 1
    assert t <= 8
    while env.phase[0] != 3:
        env.step(np.array([1]))
    env.step(np.array([0]))
    env.step(np.array([0]))
    assert env.success[0] and env.steps_to_win[0] == ktd.SHORTEST_WIN


def test_trajectory_tokens():
    tr = ktd.random_trajectories(300, seed=1)
    assert len(tr.tokens) == 300
    for toks, won in zip(tr.tokens, tr.success):
        assert toks[0] == ktd.BOS and toks[-1] == ktd.EOS
        assert ktd.KEY0 <= toks[1] < ktd.OBS1
        acts = [t for t in toks if t in ktd.ACTION_IDS]
        assert not any(ktd.OBS2 <= t < ktd.OBS3 for t in toks)  # the empty room writes actions only
        assert all(0 <= t < ktd.VOCAB_SIZE for t in toks)
        n_steps = len(acts)
        assert (n_steps < ktd.T1 + ktd.T2 + ktd.T3) == bool(won)  # only a win ends early
    ds = ktd.dataset(200, seed=2, successes_only=True)
    assert all(a == 1 for a in ds["attribute"])


@pytest.mark.parametrize("seed", [0, 1])
def test_observations_hide_the_key_after_phase_one(seed):
    env = ktd.KeyToDoor(500, seed=seed)
    rng = np.random.default_rng(seed)
    while not (env.phase == 3).all():
        obs, _ = env.step(rng.integers(0, 4, 500))
    # in phase 3 the observation only depends on the position: same cell -> same token, key or not
    assert ((obs >= ktd.OBS3) & (obs < ktd.VOCAB_SIZE)).all()
    assert len(set(obs[env.has_key]) | set(obs[~env.has_key])) == 1  # everyone at the centre


def test_behaviour_action_values_match_monte_carlo_rollouts():
    """Exact DP of Q^β against uniform-random rollouts from fixed states (tolerance: 4 binomial s.e.)."""
    q, p_door = ktd.behaviour_action_values()
    assert 0.26 < p_door < 0.29  # tasks.md B.7: P(door | key) ≈ 0.27
    n = 20_000
    for (r, c), key in [((4, 4), 1), ((5, 1), 3)]:
        for a in range(4):
            env = ktd.KeyToDoor(n, seed=100 + a)
            env.key[:] = key
            env.pos[:] = (r, c)
            env.step(np.full(n, a))
            rng = np.random.default_rng(a)
            while not env.done.all():
                env.step(rng.integers(0, 4, n))
            est, true = env.success.mean(), q[0, r, c, key, a]
            assert abs(est - true) <= 4 * np.sqrt(true * (1 - true) / n), (r, c, key, a, est, true)


def test_greedy_play_on_exact_action_values_always_wins():
    """The ceiling of CAT's greedy one-step improvement: a perfect head finds the key in every layout."""
    res = ktd.play_behaviour_greedy(2000, seed=7)
    assert res["key_rate"] == 1.0 and res["win_rate"] == 1.0


def test_key_room_decisions_replay_the_environment():
    """The decisions read off the tokens are exactly the key-room states (key not yet held) of the environment run
    that random_trajectories made (replayed with the same seeds), with the realised actions and labels."""
    n, seed = 50, 4
    tr = ktd.random_trajectories(n, seed)
    d = ktd.key_room_decisions(tr.tokens, tr.success)
    env, rng = ktd.KeyToDoor(n, seed), np.random.default_rng(seed + 1)
    want = set()
    for t in range(ktd.T1):
        a = rng.integers(0, 4, n)
        for i in range(n):
            if not env.has_key[i]:
                want.add((i, 2 + 2 * t, t, int(env.pos[i, 0]), int(env.pos[i, 1]), int(env.key[i]), int(a[i]),
                          int(env.success[i] or False)))
        env.step(a)
    while not env.done.all():
        env.step(rng.integers(0, 4, n))
    want = {w[:-1] + (int(env.success[w[0]]),) for w in want}
    got = set(zip(*(getattr(d, f).tolist() for f in ("seq", "pos", "t", "r", "c", "key", "action", "label"))))
    assert got == want and len(got) > n * 5
    q, _ = ktd.behaviour_action_values()
    np.testing.assert_array_equal(d.exact_q(), q[d.t, d.r, d.c, d.key])
