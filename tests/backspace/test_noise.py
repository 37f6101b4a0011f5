"""augment_with_noise: rates, what random noise may draw, both encodings, errors."""

from __future__ import annotations

import random

import pytest

from seqlevel.backspace import apply_actions, augment_with_noise, encode

BK = 20


def test_rate_run_lengths_and_random_noise_support():
    rng = random.Random(0)
    ids = [1] + [rng.randrange(3, 20) for _ in range(4000)]
    prompt, acts = augment_with_noise(ids, 0.1, max_run=3, rng=1, backspace_id=BK, vocab_size=21,
                                      exclude_ids=[0, 1, 2])
    assert apply_actions(prompt, acts, BK) == ids
    n_bk = sum(a == BK for a in acts)
    noise = [a for a, t in zip(acts, acts.targets) if a != t]
    assert len(noise) == n_bk  # environment mode: every noise token, and only they, differ from their target
    assert not {0, 1, 2, BK} & set(noise)
    # runs start with probability 0.1 per position and have mean length 2: ~800 backspaces (±5 sigma)
    assert 650 < n_bk < 950
    runs, k = [], 0
    for a in acts:
        if a == BK:
            k += 1
        elif k:
            runs.append(k)
            k = 0
    assert set(runs) == {1, 2, 3}


def test_environment_vs_action_encoding():
    ids = [1, 5, 6]
    p_env, env = augment_with_noise(ids, 1.0, rng=0, backspace_id=BK, vocab_size=21, exclude_ids=[0, 1, 2])
    p_act, act = augment_with_noise(ids, 1.0, rng=0, backspace_id=BK, vocab_size=21, exclude_ids=[0, 1, 2],
                                    mode="action")
    assert list(env) == list(act)  # same rng, same trajectory
    n1, n2 = env[0], env[3]
    assert list(env) == [n1, BK, 5, n2, BK, 6]
    assert env.targets == [5, BK, 5, 6, BK, 6]  # the noise token is never a target
    assert act.targets == [n1, BK, 5, n2, BK, 6]
    e = encode(p_env, env, BK)
    assert e.labels.tolist() == [5, BK, 5, 6, BK, 6, -100]  # encode picks up actions.targets
    assert e.input_ids.tolist() == [1, n1, 1, 5, n2, 5, 6]


def test_environment_targets_inside_a_run_are_backspaces():
    _, acts = augment_with_noise([1, 5], 1.0, lambda p, t, r: 9, max_run=1, rng=0, backspace_id=BK)
    assert list(acts) == [9, BK, 5] and acts.targets == [5, BK, 5]
    gen = random.Random(0)
    while True:  # find a seed with a run of 3
        _, acts = augment_with_noise([1, 5], 1.0, lambda p, t, r: 9, max_run=3, rng=gen, backspace_id=BK)
        if len(acts) == 7:
            break
    assert list(acts) == [9, 9, 9, BK, BK, BK, 5] and acts.targets == [5, BK, BK, BK, BK, BK, 5]


def test_zero_noise_is_the_clean_sequence():
    prompt, acts = augment_with_noise([1, 2, 3, 4], 0.0, rng=0, backspace_id=BK, vocab_size=21, prompt_len=2)
    assert prompt == [1, 2] and list(acts) == [3, 4] and acts.targets == [3, 4]


def test_bad_arguments():
    kw = dict(backspace_id=BK, vocab_size=21)
    with pytest.raises(ValueError, match="p_noise"):
        augment_with_noise([1, 2], 1.5, **kw)
    with pytest.raises(ValueError, match="max_run"):
        augment_with_noise([1, 2], 0.1, max_run=0, **kw)
    with pytest.raises(ValueError, match="mode"):
        augment_with_noise([1, 2], 0.1, mode="env", **kw)
    with pytest.raises(ValueError, match="noise must be"):
        augment_with_noise([1, 2], 0.1, noise="gaussian", **kw)
    with pytest.raises(ValueError, match="vocab_size"):
        augment_with_noise([1, 2], 0.1, backspace_id=BK)
    with pytest.raises(ValueError, match="prompt_len"):
        augment_with_noise([1, 2], 0.1, prompt_len=0, **kw)
    with pytest.raises(ValueError, match="backspace id"):
        augment_with_noise([1, 2], 1.0, lambda p, t, r: BK, backspace_id=BK)


def test_a_noise_callable_may_decline_and_no_insertion_happens():
    from seqlevel.backspace import augment_with_noise

    def only_after_5(prefix, target, rng):
        return 7 if prefix[-1] == 5 else None  # a wrong token exists only after token 5

    prompt, actions = augment_with_noise([1, 5, 6, 5, 6], 1.0, only_after_5, max_run=2, rng=0, backspace_id=9)
    assert prompt == [1]
    # no insertion before the first 5 (after <bos>) or before the 5 that follows 6; runs only after a 5
    live = []
    for a, t in zip(actions, actions.targets):
        if a == 7:
            assert live[-1] in (5, 7)
        live = live[:-1] if a == 9 else live + [a]
    assert [a for a in actions if a not in (7, 9)] == [5, 6, 5, 6]
    assert 7 in actions
