"""sequencematch_parts: the pieces add up to the trainer's step loss, and each piece is the term it names."""

from __future__ import annotations

import pytest
import torch

from seqlevel.backspace import collate, encode
from seqlevel.losses import bc_loss, sequencematch_loss
from seqlevel.losses.sequencematch_parts import sequencematch_parts

A, BK, EOS, PAD = 7, 6, 1, 0
TRAJS = [
    ([2, 3], [4, BK, BK, BK, 5, 2, EOS]),  # data, complete
    ([2], [3, 3, BK, 4]),  # data, truncated
    ([5, 4, 3], [2, BK, 2, 5, EOS]),  # model, complete
    ([3], [BK, 4, 4, 4, 5, BK]),  # model, truncated
]
IS_DATA = [True, True, False, False]
KINDS = ("token", "bksp", "tail")


def _setup(seed=0):
    encs = [encode(p, a, BK, eos_id=EOS, is_data=d) for (p, a), d in zip(TRAJS, IS_DATA)]
    batch = collate(encs, PAD)
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(*batch["input_ids"].shape, A, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    kind = torch.where(batch["labels"] == BK, 1, 0)
    kind = torch.where(batch["eos_abs"], 2, kind)
    return batch, logits, kind


@pytest.mark.parametrize("kw", [dict(), dict(eos="done"), dict(eos="absorbing_eos"), dict(occupancy_normalize=False, chi2_weight=0.25),
                                dict(divergence="tv"), dict(divergence="chi2", model_mix=0.3),
                                dict(value_on_truncated=True, model_reg=0.5), dict(sm_weight=1.0)])
def test_parts_add_up_to_the_step_loss_and_its_gradient(kw):
    batch, logits, kind = _setup()
    sm_w = kw.pop("sm_weight", 0.5)
    parts = sequencematch_parts(logits, batch, kind, KINDS, sm_weight=sm_w, **kw)
    total = sum(parts.values())
    ref = (1 - sm_w) * bc_loss(logits, batch) + sm_w * sequencematch_loss(logits, batch, **kw)
    assert float(total.detach()) == pytest.approx(float(ref.detach()), rel=1e-10, abs=1e-12)
    g1, = torch.autograd.grad(total, logits)
    g2, = torch.autograd.grad(ref, logits)
    assert torch.allclose(g1, g2, rtol=1e-9, atol=1e-12)


def test_each_r2_piece_is_c_times_the_occupancy_weighted_square_on_its_slots():
    batch, logits, kind = _setup(1)
    gamma, c = 0.9, 0.3
    parts = sequencematch_parts(logits, batch, kind, KINDS, sm_weight=1.0, gamma=gamma, chi2_weight=c,
                                occupancy_normalize=False, eos="done")
    V = torch.logsumexp(logits, -1).detach()
    # a loop: model rows only, ⌫ slots, r = Q(s_t, a_t) − γ V(s_{t+1}), weight γ^step, / number of model rows
    total = 0.0
    for b in range(len(TRAJS)):
        if IS_DATA[b]:
            continue
        for t in range(batch["labels"].shape[1] - 1):
            if batch["valid"][b, t] and batch["labels"][b, t] == BK:
                nxt = 0.0 if batch["eos_abs"][b, t + 1] else float(V[b, t + 1])
                r = float(logits[b, t, BK].detach()) - gamma * nxt
                total += gamma ** int(batch["step"][b, t]) * r * r
    assert float(parts["model_r2/bksp"]) == pytest.approx(c * total / 2, rel=1e-10)


def test_unsupported_divergence_is_refused():
    batch, logits, kind = _setup()
    with pytest.raises(ValueError, match="chi2_mix, chi2 or tv"):
        sequencematch_parts(logits, batch, kind, KINDS, divergence="js")


def test_the_tail_pulls_the_bksp_row_only_with_the_full_softmax_at_the_absorbing_state():
    """Issue 21's reversed sign, pinned on a tiny network: with eos="absorbing" the absorbing tail's pieces put a
    gradient on the <bksp> unembedding row (the direction every state's <bksp> logit shares), and a step on them
    lowers the <bksp> logit where the model is sure of <bksp> after <eos>; with eos="absorbing_eos" they put none."""
    from seqlevel.backspace import add_backspace_token, model_inputs
    from seqlevel.presets import byte_tokenizer, tiny_model

    tok = byte_tokenizer()
    model = tiny_model("tiny-gpt2", tokenizer=tok, seed=0, n_layer=1, n_embd=16, n_head=2)
    bk, eos = add_backspace_token(model, tok), int(tok.eos_token_id)
    trajs = [([int(tok.bos_token_id)], [65, 66, eos], True), ([int(tok.bos_token_id)], [67, 65, eos], False)]
    batch = collate([encode(p, a, bk, eos_id=eos, is_data=d) for p, a, d in trajs], int(tok.pad_token_id))
    model.eval()
    with torch.no_grad():  # a BC checkpoint never trained after <eos>: make it sure of <bksp> there
        h = model.transformer(**model_inputs(batch)).last_hidden_state[batch["eos_abs"]].mean(0)
        model.lm_head.weight[bk] += 20.0 * h / (h @ h)
    kind = torch.where(batch["eos_abs"], 1, 0)
    row = model.lm_head.weight
    for eos_mode, moved in (("absorbing", True), ("absorbing_eos", False)):
        logits = model(**model_inputs(batch)).logits
        parts = sequencematch_parts(logits, batch, kind, ("transition", "tail"), eos=eos_mode, chi2_weight=0.25)
        tail = parts["data_linear/tail"] + parts["data_r2/tail"] + parts["model_r2/tail"]
        g, = torch.autograd.grad(tail, row)
        if moved:
            assert float(g[bk].abs().sum()) > 0
            pi = torch.softmax(logits[batch["eos_abs"]].float(), -1)[:, bk]
            assert float(pi.min()) > 0.5  # the premise: <bksp> dominates after <eos>
            hidden = model.transformer(**model_inputs(batch)).last_hidden_state[batch["eos_abs"]]
            assert float((-(g[bk] * hidden).sum(-1)).max()) < 0  # a step lowers the <bksp> logit there
        else:
            assert float(g[bk].abs().max()) == 0.0
