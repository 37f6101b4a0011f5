"""generate(): exactness against from-scratch forwards, parity with naive and Hugging Face decoders, seeding."""

from __future__ import annotations

import pytest
import torch

from seqlevel.backspace import apply_actions
from seqlevel.decoding import BiasAction, force_action, generate

V, BKSP, EOS = 64, 63, 2
TOL = 1e-5  # fp32, max abs logit difference


def _prompts(padding: str):
    """A batch of 4 prompts of lengths 6, 4, 2, 5 padded on the given side (``mixed`` = both sides)."""
    g = torch.Generator().manual_seed(1)
    lengths = [6, 4, 2, 5]
    ids = torch.zeros(4, 6, dtype=torch.long)
    am = torch.zeros(4, 6, dtype=torch.long)
    for i, n in enumerate(lengths):
        side = padding if padding != "mixed" else ("left" if i % 2 else "right")
        cols = slice(6 - n, 6) if side == "left" else slice(0, n)
        ids[i, cols] = torch.randint(3, V - 1, (n,), generator=g)
        am[i, cols] = 1
    return ids, am


class _Recorder:
    """Steer that records what it sees, biases <bksp> and forces it on a fixed random schedule."""

    needs_hidden_states = True

    def __init__(self, bias: float = 3.0, p_force: float = 0.2, seed: int = 0):
        self.bias, self.p_force = bias, p_force
        self.g = torch.Generator().manual_seed(seed)
        self.seen = []

    def __call__(self, scores, ctx):
        self.seen.append((scores.clone(), [ctx.live_ids(r) for r in range(len(ctx.rows))],
                          [h.clone() for h in ctx.hidden_states], ctx.rows.clone()))
        scores = scores.clone()
        scores[:, ctx.backspace_id] += self.bias
        forced = torch.rand(len(ctx.rows), generator=self.g) < self.p_force
        if ctx.step == 0:
            forced[:] = True  # backspace at the prompt boundary: a no-op
        return force_action(scores, forced, ctx.backspace_id)


@pytest.mark.parametrize("padding", ["left", "right", "mixed"])
def test_every_step_matches_from_scratch_forward(make_model, family, attn, padding):
    model = make_model(family, vocab_size=V, attn=attn)
    ids, am = _prompts(padding)
    rec = _Recorder()
    out = generate(model, ids, am, max_new_actions=40, eos_token_id=EOS, backspace_id=BKSP, seed=0, steer=rec)
    worst_logit = worst_hidden = 0.0
    for scores, lives, hidden, rows in rec.seen:
        for k, live in enumerate(lives):
            ref = model(torch.tensor([live]), output_hidden_states=True)
            worst_logit = max(worst_logit, (ref.logits[0, -1] - scores[k]).abs().max().item())
            for h, h_ref in zip(hidden, ref.hidden_states):
                worst_hidden = max(worst_hidden, (h_ref[0, -1] - h[k]).abs().max().item())
    assert worst_logit < TOL, f"next-action logits differ from a from-scratch forward by {worst_logit}"
    assert worst_hidden < TOL, f"hidden states differ from a from-scratch forward by {worst_hidden}"
    assert int(out.num_backspaces.sum()) >= 20  # backspaces were frequent, so the holes were exercised
    assert all(a[0] == BKSP for a in out.actions)  # step 0 was forced: a no-op at the prompt boundary
    for i in range(4):
        assert out.prompts[i] + out.sequences[i] == apply_actions(out.prompts[i], out.actions[i], BKSP)


def _backspace_rule(scores: torch.Tensor, step: int) -> torch.Tensor:
    """A deterministic policy with frequent backspaces: <bksp> whenever (top token id + step) is a multiple of 3.

    It depends on the step, not only on the state, so greedy decoding does not cycle after a backspace.
    """
    top = scores[:, :BKSP].argmax(dim=-1)
    return force_action(scores, (top + step) % 3 == 0, BKSP)


def _naive_greedy(model, prompt, n_actions):
    """Reference: recompute the live state from scratch for every action, greedy under ``_backspace_rule``."""
    live, actions = list(prompt), []
    for step in range(n_actions):
        logits = model(torch.tensor([live])).logits[:, -1]  # (1, V)
        a = int(_backspace_rule(logits, step).argmax())
        actions.append(a)
        if a != BKSP:
            live = live + [a]
        elif len(live) > len(prompt):  # backspace at the prompt boundary is a no-op
            live = live[:-1]
        if a == EOS:
            break
    return actions, live[len(prompt):]


@pytest.mark.parametrize("padding", ["left", "right"])
def test_greedy_with_backspace_matches_naive_recompute(make_model, family, padding):
    model = make_model(family, vocab_size=V, seed=3)
    ids, am = _prompts(padding)
    out = generate(model, ids, am, max_new_actions=30, eos_token_id=EOS, backspace_id=BKSP, do_sample=False,
                   steer=lambda scores, ctx: _backspace_rule(scores, ctx.step))
    n_bksp = int(out.num_backspaces.sum())
    n_tok = int(out.num_actions.sum()) - n_bksp
    assert n_bksp >= 10 and n_tok >= 10, (n_bksp, n_tok)  # a real mix of deletions and tokens
    for i in range(4):
        actions, seq = _naive_greedy(model, out.prompts[i], 30)
        assert out.actions[i] == actions
        assert out.sequences[i] == seq


@pytest.mark.parametrize("padding", ["none", "left"])
def test_greedy_without_backspace_equals_hf_generate(make_model, family, padding):
    model = make_model(family, vocab_size=V, seed=5)
    ids, am = _prompts("left")
    if padding == "none":
        ids, am = ids[:, -2:], am[:, -2:]
    n = 25
    ours = generate(model, ids, am, max_new_actions=n, eos_token_id=EOS, do_sample=False)
    hf = model.generate(input_ids=ids, attention_mask=am, do_sample=False, max_new_tokens=n, min_new_tokens=0,
                        eos_token_id=EOS, pad_token_id=0)[:, ids.shape[1]:]
    for i in range(4):
        ref = hf[i].tolist()
        ref = ref[: ref.index(EOS) + 1] if EOS in ref else ref
        assert ours.sequences[i] == ref
        assert ours.actions[i] == ref


def test_seeded_sampling_is_reproducible(make_model):
    model = make_model("tiny-llama", vocab_size=V)
    ids, am = _prompts("mixed")
    kw = dict(max_new_actions=30, eos_token_id=EOS, backspace_id=BKSP, seed=7, temperature=0.9, top_k=40,
              top_p=0.95, steer=BiasAction(BKSP, 2.0))
    a, b = generate(model, ids, am, **kw), generate(model, ids, am, **kw)
    c = generate(model, ids, am, **{**kw, "seed": 8})
    assert a.actions == b.actions and a.sequences == b.sequences
    assert a.actions != c.actions


def test_rows_finish_independently_and_counts(make_model):
    model = make_model("tiny-gpt2", vocab_size=V)
    ids, am = _prompts("right")

    def steer(scores, ctx):  # row 0 ends at once, row 1 backspaces forever, others go on
        scores = scores.clone()
        scores[ctx.rows == 0, :] = float("-inf")
        scores[ctx.rows == 0, EOS] = 0.0
        return force_action(scores, ctx.rows == 1, BKSP)

    out = generate(model, ids, am, max_new_actions=12, eos_token_id=EOS, backspace_id=BKSP, do_sample=False,
                   steer=steer)
    assert out.actions[0] == [EOS] and out.sequences[0] == [EOS] and out.stop_reasons[0] == "eos"
    assert bool(out.finished[0]) and not bool(out.finished[1])
    assert out.actions[1] == [BKSP] * 12 and out.sequences[1] == []  # no-ops at the prompt boundary
    assert int(out.num_backspaces[1]) == 12 and int(out.num_actions[1]) == 12
    assert out.stop_reasons[1] == "max_new_actions"
    assert [len(a) for a in out.actions[2:]] == [int(n) for n in out.num_actions[2:]]


def test_max_new_tokens_and_context_cap_the_live_length(make_model):
    model = make_model("tiny-gpt2", vocab_size=V, n_positions=12)
    ids, am = _prompts("left")
    out = generate(model, ids, am, max_new_actions=40, eos_token_id=None, backspace_id=BKSP, seed=0)
    for p, s, r in zip(out.prompts, out.sequences, out.stop_reasons):
        assert len(p) + len(s) <= 12
        assert r == "context" and len(p) + len(s) == 12
    out = generate(model, ids, am, max_new_actions=40, eos_token_id=None, backspace_id=BKSP, max_new_tokens=3,
                   seed=0)
    assert all(len(s) == 3 and r == "max_new_tokens" for s, r in zip(out.sequences, out.stop_reasons))


def test_one_dimensional_prompt(make_model):
    model = make_model("tiny-gpt2", vocab_size=V)
    out = generate(model, torch.tensor([5, 6, 7]), max_new_actions=5, eos_token_id=None, do_sample=False)
    assert out.prompts == [[5, 6, 7]] and len(out.actions[0]) == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(max_new_actions=0), "max_new_actions must be >= 1"),
        (dict(backspace_id=V), "outside the model's vocabulary"),
        (dict(backspace_id=-1), "outside the model's vocabulary"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(attention_mask=torch.ones(2, 3, dtype=torch.long)), "does not match input_ids shape"),
        (dict(input_ids=torch.ones(2, 300, dtype=torch.long)), "the model's context is 256"),
        (dict(temperature=0.0), "temperature must be > 0"),
        (dict(top_k=-1), "top_k must be >= 0"),
        (dict(backspace_id=EOS), "also an eos_token_id"),
        (dict(attention_mask=torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]])), "a prompt is empty"),
    ],
)
def test_bad_input_is_refused_clearly(make_model, kwargs, message):
    model = make_model("tiny-gpt2", vocab_size=V)
    call = dict(input_ids=torch.ones(2, 4, dtype=torch.long), max_new_actions=4, eos_token_id=EOS,
                backspace_id=BKSP)
    call.update(kwargs)
    with pytest.raises(ValueError, match=message):
        generate(model, **call)


def test_steer_returning_a_wrong_shape_is_refused(make_model):
    model = make_model("tiny-gpt2", vocab_size=V)
    with pytest.raises(ValueError, match="steer returned scores of shape"):
        generate(model, torch.ones(2, 3, dtype=torch.long), max_new_actions=3, eos_token_id=EOS,
                 steer=lambda scores, ctx: scores[:, :10])


def test_several_eos_ids_each_end_a_row(make_model):
    model = make_model("tiny-gpt2", vocab_size=V)

    def steer(scores, ctx):  # row 0 emits 5, row 1 emits 6, as their first action
        return force_action(force_action(scores, ctx.rows == 0, 5), ctx.rows == 1, 6)

    out = generate(model, torch.ones(3, 3, dtype=torch.long), max_new_actions=4, eos_token_id=[5, 6],
                   do_sample=False, steer=steer)
    assert out.actions[:2] == [[5], [6]] and out.stop_reasons[:2] == ["eos", "eos"]
    assert out.finished.tolist()[:2] == [True, True] and len(out.actions[2]) == 4


def test_one_forward_of_one_new_token_per_step_even_when_backspacing(make_model):
    model = make_model("tiny-llama", vocab_size=V)
    ids, am = _prompts("mixed")
    widths = []
    hook = model.register_forward_pre_hook(lambda mod, args, kw: widths.append(kw["input_ids"].shape),
                                           with_kwargs=True)
    try:
        out = generate(model, ids, am, max_new_actions=20, eos_token_id=None, backspace_id=BKSP, seed=0,
                       steer=_Recorder(p_force=0.3))
    finally:
        hook.remove()
    assert int(out.num_backspaces.sum()) >= 10
    assert widths[0] == ids.shape  # the prefill
    assert widths[1:] == [torch.Size([4, 1])] * 19  # no recompute: one slot per row per action (last one unfed)


# ----- issue 23: inputs that used to crash inside torch or pass silently --------------------------------------------
def test_float_input_ids_and_eos_outside_the_vocabulary_are_named(make_model):
    model = make_model("tiny-gpt2", vocab_size=32)
    with pytest.raises(ValueError, match="integer token ids, got dtype torch.float32"):
        generate(model, torch.tensor([[1.0, 2.0]]), max_new_actions=2, eos_token_id=3)
    with pytest.raises(ValueError, match=r"eos_token_id 99 is outside the model's vocabulary \[0, 32\)"):
        generate(model, torch.tensor([[1, 2]]), max_new_actions=2, eos_token_id=99)
    with pytest.raises(ValueError, match="input_ids hold id 40"):
        generate(model, torch.tensor([[1, 40]]), max_new_actions=2, eos_token_id=3)


def test_suppressed_ids_are_never_actions_but_eos_stays(make_model):
    model = make_model("tiny-gpt2", vocab_size=8)
    ids = torch.tensor([[1, 2]] * 8)
    out = generate(model, ids, max_new_actions=30, eos_token_id=None, suppress_ids=[0, 5, 6], seed=0)
    taken = {a for row in out.actions for a in row}
    assert taken and not taken & {0, 5, 6}
    out = generate(model, ids, max_new_actions=30, eos_token_id=5, suppress_ids=[5], seed=0)
    assert any(5 in row for row in out.actions)  # an id that is also <eos> is kept (GPT-2 pads with <eos>)
