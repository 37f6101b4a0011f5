"""The steer rules of ``decoding/steer.py``: each one's effect on the scores, and in ``generate``."""

import torch

from seqlevel.decoding import generate
from seqlevel.decoding.steer import BanTokens, ForcedBackspaces, ForceFirst


class _Ctx:
    def __init__(self, rows, step):
        self.rows, self.step = torch.tensor(rows), step


def test_ban_tokens_sets_banned_ids_to_minus_inf_and_skips_none():
    ban = BanTokens([2, None, 0, 2])
    assert ban.ids == [0, 2]
    s = ban(torch.zeros(3, 5), _Ctx([0, 1, 2], 0))
    assert torch.isinf(s[:, [0, 2]]).all() and (s[:, [1, 3, 4]] == 0).all()
    x = torch.randn(2, 4)
    assert BanTokens([None])(x, _Ctx([0, 1], 0)) is x


def test_force_first_forces_step_zero_only_and_applies_ban_throughout():
    steer = ForceFirst(torch.tensor([3, 4, 1]), BanTokens([0]))
    s = steer(torch.zeros(2, 6), _Ctx([2, 0], 0))  # rows 2 and 0 of the batch are live
    assert s.argmax(1).tolist() == [1, 3] and torch.isinf(s).sum() == 10
    later = steer(torch.zeros(2, 6), _Ctx([2, 0], 1))
    assert torch.isinf(later[:, 0]).all() and (later[:, 1:] == 0).all()
    assert torch.equal(ForceFirst(torch.tensor([1]))(torch.ones(1, 3), _Ctx([0], 1)), torch.ones(1, 3))


def test_forced_backspaces_follow_the_schedule_only():
    sched = torch.tensor([[True, False], [False, True]])
    steer = ForcedBackspaces(sched, backspace_id=4)
    scores = torch.zeros(2, 5)
    scores[:, 4] = 10.0  # the model would like to backspace everywhere
    s0 = steer(scores, _Ctx([0, 1], 0))
    assert s0.argmax(1).tolist() == [4, 0] and torch.isinf(s0[1, 4])
    assert steer(scores[:1], _Ctx([1], 1)).argmax(1).tolist() == [4]
    assert scores[0, 4] == 10.0  # the input is not modified


def test_forced_backspaces_in_generate_give_the_scheduled_share(make_model):
    model = make_model("tiny-gpt2", vocab_size=32).eval()
    sched = torch.zeros(3, 8, dtype=torch.bool)
    sched[:, 3] = True
    out = generate(model, torch.randint(0, 30, (3, 4)), max_new_actions=8, eos_token_id=None, backspace_id=31,
                   do_sample=False, steer=ForcedBackspaces(sched, 31))
    assert out.num_backspaces.tolist() == [1, 1, 1]
    assert all(a[3] == 31 and 31 not in a[:3] + a[4:] for a in out.actions)


def test_forced_backspaces_equal_force_action_on_banned_scores():
    from seqlevel.decoding.steer import force_action

    g = torch.Generator().manual_seed(0)
    sched = torch.rand(6, 4, generator=g) < 0.5
    scores = torch.randn(6, 9, generator=g)
    for step in range(4):
        banned = scores.clone()
        banned[:, 8] = float("-inf")
        ref = force_action(banned, sched[:, step], 8)
        assert torch.equal(ForcedBackspaces(sched, 8)(scores, _Ctx(list(range(6)), step)), ref)
