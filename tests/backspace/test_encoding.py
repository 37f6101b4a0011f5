"""encode/collate: one masked forward pass equals recomputing every live state from scratch (SequenceMatch §4.3)."""

from __future__ import annotations

import random

import pytest
import torch

from seqlevel.backspace import apply_actions, collate, encode, model_inputs, model_limits

V, BK, PAD, EOS = 48, 47, 0, 1
N_TRAJ = 200
TOL = 1e-5  # max abs logit error, fp32


def _random_trajectories(n: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """~35% backspaces, bursts of consecutive backspaces, backspaces at the prompt boundary, some final <eos>."""
    rng = random.Random(seed)
    out = [
        ([5], [BK, BK, 7, BK, BK, 8]),  # backspace at the prompt boundary, first action a backspace
        ([5, 6, 7], [9, 10, BK, BK, BK, BK, 11, EOS]),  # consecutive backspaces past the boundary, then <eos>
        ([4, 4], [BK, EOS]),  # backspace then <eos>
        ([3], []),  # no action at all
    ]
    while len(out) < n:
        prompt = [rng.randrange(2, BK) for _ in range(rng.randint(1, 5))]
        actions: list[int] = []
        for _ in range(rng.randint(0, 24)):
            if rng.random() < 0.25:  # bursts average 1.6 backspaces: ~35% of actions
                actions.extend([BK] * (1 if rng.random() < 0.7 else rng.randint(2, 4)))
            else:
                actions.append(rng.randrange(2, BK))
        if rng.random() < 0.3:
            actions.append(EOS)
        out.append((prompt, actions))
    return out


def _scratch_logits(model, states: list[tuple[int, ...]]) -> dict[tuple[int, ...], torch.Tensor]:
    """Last-position logits of every state, each run from scratch (right-padded batch, standard causal mask)."""
    L = max(len(s) for s in states)
    ids = torch.full((len(states), L), PAD, dtype=torch.long)
    am = torch.zeros((len(states), L), dtype=torch.long)
    for i, s in enumerate(states):
        ids[i, : len(s)] = torch.tensor(s)
        am[i, : len(s)] = 1
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=am).logits  # (N, L, V)
    last = am.sum(1) - 1
    return {s: logits[i, last[i]] for i, s in enumerate(states)}


@pytest.mark.parametrize("preset", ["tiny-gpt2", "tiny-llama"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_single_pass_equals_from_scratch(make_model, preset, attn):
    model = make_model(preset, vocab_size=V, attn=attn)
    trajs = _random_trajectories(N_TRAJ)
    n_bk = sum(a == BK for _, acts in trajs for a in acts)
    n_act = sum(len(acts) for _, acts in trajs)
    assert 0.25 < n_bk / n_act < 0.45  # the workload really is backspace-heavy
    batch = collate([encode(p, a, BK, eos_id=EOS) for p, a in trajs], pad_id=PAD)  # right-padded, B = 200
    with torch.no_grad():
        logits = model(**model_inputs(batch)).logits  # (B, T, V)
    assert torch.isfinite(logits).all()  # padded rows attend to themselves: no NaN
    slot_states = []  # (b, slot, live state)
    for b, (p, a) in enumerate(trajs):
        for k in range(len(a) + 1):
            slot_states.append((b, len(p) - 1 + k, tuple(apply_actions(p, a[:k], BK))))
    ref = _scratch_logits(model, sorted({s for _, _, s in slot_states}))
    err = max((logits[b, t] - ref[s]).abs().max().item() for b, t, s in slot_states)
    assert err <= TOL, f"max abs logit error {err:.2e} > {TOL}"
    # a few states run one at a time, unbatched, as the strictest "from scratch"
    for b, t, s in slot_states[:: len(slot_states) // 15]:
        with torch.no_grad():
            one = model(input_ids=torch.tensor([s])).logits[0, -1]
        assert (logits[b, t] - one).abs().max().item() <= TOL


def test_bool_mask_matches_float_mask_under_sdpa(make_model):
    model = make_model("tiny-llama", vocab_size=V, attn="sdpa")
    encs = [encode(p, a, BK) for p, a in _random_trajectories(12, seed=3)]
    with torch.no_grad():
        a = model(**model_inputs(collate(encs, PAD))).logits
        b = model(**model_inputs(collate(encs, PAD, mask_format="bool"))).logits
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_worked_example_layout():
    P, a, b, c = 10, 11, 12, 13
    e = encode([P], [a, b, BK, c], BK)
    assert e.input_ids.tolist() == [P, a, b, a, c]
    assert e.position_ids.tolist() == [0, 1, 2, 1, 2]
    rows = [set(r.nonzero().flatten().tolist()) for r in e.attention_mask]
    assert rows == [{0}, {0, 1}, {0, 1, 2}, {0, 3}, {0, 3, 4}]
    assert e.labels.tolist() == [a, b, BK, c, -100]
    assert e.valid.tolist() == [True, True, True, True, False]
    assert e.step.tolist() == [0, 1, 2, 3, 4]
    assert not e.eos_abs.any()


def test_prompt_boundary_backspace_rewrites_last_prompt_token():
    e = encode([4, 5], [BK, BK, 6], BK)
    assert e.input_ids.tolist() == [4, 5, 5, 5, 6]
    assert e.position_ids.tolist() == [0, 1, 1, 1, 2]
    assert e.attention_mask[3].nonzero().flatten().tolist() == [0, 3]  # superseded copies are not attended


def test_eos_makes_the_last_slot_absorbing():
    e = encode([4], [6, BK, EOS], BK, eos_id=EOS)
    assert e.eos_abs.tolist() == [False, False, False, True]
    assert e.labels.tolist() == [6, BK, EOS, EOS]  # the absorbing state's action is <eos> again
    assert e.valid.tolist() == [True, True, True, False]


def test_collate_layout_and_padding():
    encs = [encode([4], [6, BK, EOS], BK, eos_id=EOS), encode([4, 5, 6], [7], BK, is_data=False)]
    batch = collate(encs, PAD)
    assert batch["input_ids"].shape == (2, 4) and batch["attention_mask"].shape == (2, 1, 4, 4)
    assert batch["attention_mask"].dtype == torch.float32
    mn = torch.finfo(torch.float32).min
    assert batch["attention_mask"][1, 0].tolist() == [[0, mn, mn, mn], [0, 0, mn, mn], [0, 0, 0, mn], [0, 0, 0, 0]]
    assert batch["attention_mask"][0, 0, 3].tolist() == [mn, mn, 0, 0]  # slot 2 re-wrote the prompt
    b2 = collate([encs[0], encode([4], [6], BK)], PAD)
    assert b2["attention_mask"][1, 0, 2:].tolist() == [[mn, mn, 0, mn], [mn, mn, mn, 0]]  # pads: self only
    assert b2["labels"][1].tolist() == [6, -100, -100, -100]
    assert b2["valid"][1].tolist() == [True, False, False, False]
    assert batch["is_data"].tolist() == [True, False]
    assert batch["lengths"].tolist() == [4, 4]
    assert collate(encs, PAD, dtype=torch.bfloat16)["attention_mask"].dtype == torch.bfloat16
    assert collate(encs, PAD, pad_to_multiple_of=8)["input_ids"].shape == (2, 8)


def test_targets_override_labels():
    e = encode([4], [9, BK, 6], BK, targets=[6, BK, 6])
    assert e.labels.tolist() == [6, BK, 6, -100]
    assert e.input_ids.tolist() == [4, 9, 4, 6]


# ---- bad input -------------------------------------------------------------------------------------------------


def test_backspace_outside_vocabulary(make_model):
    vocab, ctx = model_limits(make_model("tiny-gpt2", vocab_size=V))
    assert (vocab, ctx) == (V, 256)
    with pytest.raises(ValueError, match="add_backspace_token"):
        encode([4], [5, V, 6], backspace_id=V, vocab_size=vocab)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        encode([4], [5, 99], backspace_id=BK, vocab_size=vocab)


def test_actions_containing_pad_id():
    with pytest.raises(ValueError, match="pad id"):
        collate([encode([4], [5, PAD, 6], BK)], pad_id=PAD)
    collate([encode([4], [5, PAD], BK, eos_id=PAD)], pad_id=PAD)  # a final <eos> sharing the pad id is fine


def test_trajectory_longer_than_context():
    with pytest.raises(ValueError, match="context"):
        encode([4] * 10, [5] * 20, BK, max_length=16)
    with pytest.raises(ValueError, match="context"):
        collate([encode([4] * 10, [5] * 20, BK)], PAD, max_length=16)


def test_mask_ids_length_mismatch():
    e = encode([4], [5, 6], BK)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        type(e)(**{**e.__dict__, "attention_mask": e.attention_mask[:2, :2]})
    with pytest.raises(ValueError, match="position_ids has shape"):
        type(e)(**{**e.__dict__, "position_ids": e.position_ids[:2]})


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        encode([], [5], BK)
    with pytest.raises(ValueError, match="targets has length"):
        encode([4], [5, 6], BK, targets=[5])
    with pytest.raises(ValueError, match="truncate"):
        encode([4], [5, EOS, 6], BK, eos_id=EOS)
    with pytest.raises(ValueError, match="mask_format"):
        collate([encode([4], [5], BK)], PAD, mask_format="int")
    with pytest.raises(ValueError, match="empty"):
        collate([], PAD)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_half_precision_model_takes_a_mask_of_its_dtype(make_model, attn):
    model = make_model("tiny-llama", vocab_size=V, attn=attn).to(torch.bfloat16)
    encs = [encode(p, a, BK) for p, a in _random_trajectories(8, seed=5)]
    with torch.no_grad():
        logits = model(**model_inputs(collate(encs, PAD, dtype=torch.bfloat16))).logits
        ref = make_model("tiny-llama", vocab_size=V, attn=attn)(**model_inputs(collate(encs, PAD))).logits
    assert torch.isfinite(logits).all()
    assert (logits.float() - ref).abs().max().item() < 0.1  # bf16 rounding only


def _naive_collate(encs, pad_id, T):
    """The per-row loop collate replaced (issue 16): each field copied row by row into right-padded tensors."""
    B = len(encs)
    out = {"input_ids": torch.full((B, T), pad_id), "position_ids": torch.zeros(B, T, dtype=torch.long),
           "labels": torch.full((B, T), -100), "valid": torch.zeros(B, T, dtype=torch.bool),
           "eos_abs": torch.zeros(B, T, dtype=torch.bool), "step": torch.zeros(B, T, dtype=torch.long)}
    allowed = torch.eye(T, dtype=torch.bool).repeat(B, 1, 1)
    for b, e in enumerate(encs):
        n = len(e)
        for k in out:
            out[k][b, :n] = getattr(e, k)
        allowed[b, :n, :n] = e.attention_mask
    out["allowed"] = allowed[:, None]
    return out


def test_tensor_collate_equals_the_per_row_loop():
    rng = random.Random(3)
    encs = []
    for b in range(23):
        prompt = [rng.randrange(3, BK) for _ in range(rng.randrange(1, 6))]
        acts = [BK if rng.random() < 0.3 else rng.randrange(3, BK) for _ in range(rng.randrange(0, 12))]
        encs.append(encode(prompt, acts + [EOS] * (rng.random() < 0.5), BK, eos_id=EOS, is_data=b % 2 == 0))
    for multiple in (None, 8):
        batch = collate(encs, PAD, pad_to_multiple_of=multiple)
        ref = _naive_collate(encs, PAD, batch["input_ids"].shape[1])
        for k in ("input_ids", "position_ids", "labels", "valid", "eos_abs", "step"):
            assert torch.equal(batch[k], ref[k]), k
        assert torch.equal(batch["attention_mask"] == 0, ref["allowed"])
        assert torch.equal(collate(encs, PAD, mask_format="bool", pad_to_multiple_of=multiple)["attention_mask"],
                           ref["allowed"])
    assert batch["is_data"].tolist() == [b % 2 == 0 for b in range(23)]
    assert batch["lengths"].tolist() == [len(e) for e in encs]
