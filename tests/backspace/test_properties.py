"""Property tests (hypothesis) tying apply_actions, encode and augment_with_noise together."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlevel.backspace import apply_actions, augment_with_noise, encode

BK = 9
tokens = st.integers(min_value=0, max_value=8)
prompts = st.lists(tokens, min_size=1, max_size=5)
actions = st.lists(st.one_of(tokens, st.just(BK)), max_size=25)


def _state_at(e, t: int) -> list[int]:
    """The live state a slot represents, read back from the mask (live slots in slot order = position order)."""
    return e.input_ids[e.attention_mask[t]].tolist()


@settings(max_examples=150, deadline=None)
@given(prompts, actions)
def test_apply_actions_invariants(prompt, acts):
    out = apply_actions(prompt, acts, BK)
    assert out[: len(prompt)] == prompt  # the prompt is protected
    assert BK not in out[len(prompt):]
    n_tok, n_bk = sum(a != BK for a in acts), sum(a == BK for a in acts)
    assert max(len(prompt), len(prompt) + n_tok - n_bk) <= len(out) <= len(prompt) + n_tok
    assert apply_actions(prompt, acts + [BK] * len(acts), BK) == prompt  # enough backspaces clear everything
    assert apply_actions(prompt, [a for a in acts if a != BK], BK) == prompt + [a for a in acts if a != BK]


@settings(max_examples=150, deadline=None)
@given(prompts, actions)
def test_encode_slots_represent_the_live_states(prompt, acts):
    e = encode(prompt, acts, BK)
    m, K = len(prompt), len(acts)
    T = m + K
    assert len(e) == T and e.attention_mask.shape == (T, T)
    mask = e.attention_mask
    assert torch.equal(mask, mask & torch.ones(T, T, dtype=torch.bool).tril())  # never attends the future
    assert bool(mask.diagonal().all())  # every slot attends itself
    for t in range(T):
        live = mask[t].nonzero().flatten()
        assert e.position_ids[live].tolist() == list(range(len(live)))  # positions 0..L-1, no gaps, no repeats
        assert int(e.position_ids[t]) == len(live) - 1
    for k in range(K + 1):
        assert _state_at(e, m - 1 + k) == apply_actions(prompt, acts[:k], BK)
    for t in range(m):
        assert _state_at(e, t) == prompt[: t + 1]
    assert e.labels[m - 1 : T - 1].tolist() == acts
    assert int(e.valid.sum()) == K and e.step[m - 1 :].tolist() == list(range(K + 1))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(min_value=3, max_value=20), min_size=2, max_size=20),
    st.integers(min_value=1, max_value=3),
    st.floats(min_value=0.0, max_value=1.0),
    st.integers(min_value=1, max_value=3),
    st.sampled_from(["environment", "action"]),
    st.integers(min_value=0, max_value=2**31),
)
def test_noise_augmentation_recovers_the_data(ids, prompt_len, p, max_run, mode, seed):
    bk = 21
    prompt_len = min(prompt_len, len(ids))
    prompt, acts = augment_with_noise(ids, p, max_run=max_run, rng=seed, backspace_id=bk, vocab_size=22,
                                      prompt_len=prompt_len, mode=mode, exclude_ids=[0, 1, 2])
    assert prompt == ids[:prompt_len]
    assert apply_actions(prompt, acts, bk) == ids  # every noise run is deleted again
    assert len(acts.targets) == len(acts)
    # walk the trajectory: in "environment" mode the target is the next data token on the data path, else <bksp>
    live = list(prompt)
    for a, tgt in zip(acts, acts.targets):
        on_path = live == ids[: len(live)]
        if mode == "environment":
            assert tgt == (ids[len(live)] if on_path else bk)
        else:
            assert tgt == a
        if a == bk:
            live.pop()
        else:
            live.append(a)
    if p == 0.0:
        assert list(acts) == ids[prompt_len:]


def test_callable_noise_gets_the_live_prefix_and_target():
    seen = []

    def ground_truth(prefix, target, rng):
        seen.append((tuple(prefix), target))
        return target + 1  # an off-by-one digit, say

    prompt, acts = augment_with_noise([1, 5, 6, 7], 1.0, ground_truth, max_run=2, rng=random.Random(0),
                                      backspace_id=30)
    assert apply_actions(prompt, acts, 30) == [1, 5, 6, 7]
    assert seen[0] == ((1,), 5)
    targets = [t for _, t in seen]
    assert targets == sorted(targets) and set(targets) == {5, 6, 7}  # p_noise=1: a run before every data token
    for prefix, t in seen:  # the live prefix: the data so far, then the run's earlier noise tokens
        clean = [1, 5, 6, 7][: [1, 5, 6, 7].index(t)]
        assert list(prefix[: len(clean)]) == clean and set(prefix[len(clean):]) <= {t + 1}


def test_callable_noise_must_be_an_error():
    with pytest.raises(ValueError, match="correct next token"):
        augment_with_noise([1, 5], 1.0, lambda prefix, target, rng: target, rng=0, backspace_id=30)
