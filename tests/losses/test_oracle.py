"""Oracle objectives (need the true P): Gumbel rollouts, MixCE*, reverse KL, MixKLs; the fast Gumbel path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqlevel.losses.oracle import (
    gumbel_rollout,
    mixce_star_loss,
    reverse_kl_loss,
    straight_through_gumbel,
    two_kls_loss,
)
from seqlevel.losses.token_weighted import mixce_loss
from seqlevel.tasks.markov import make_p, sequence_log_prob
from seqlevel.tasks.markov_gumbel import bigram_gumbel_log_p, gumbel_from_uniform
from seqlevel.tasks.markov_train import BigramLM, _log_p_table


def test_straight_through_gumbel_is_one_hot_with_soft_gradient():
    torch.manual_seed(0)
    logits = torch.randn(4000, 3, requires_grad=True)
    y = straight_through_gumbel(logits)
    assert torch.all(y.detach().sum(-1) == 1) and torch.all((y.detach() == 0) | (y.detach() == 1))
    (y[:, 0]).sum().backward()
    assert logits.grad.abs().sum() > 0  # gradient flows through the soft sample
    # sampling frequencies follow softmax(logits): 5 standard errors on 20000 draws
    z = torch.log(torch.tensor([0.1, 0.2, 0.7]))
    freq = straight_through_gumbel(z.expand(20_000, 3)).detach().mean(0)
    assert torch.allclose(freq, torch.tensor([0.1, 0.2, 0.7]), atol=5 * (0.25 / 20_000) ** 0.5)


def _world(V=11, seed=0):
    p = make_p(V, seed)
    torch.manual_seed(seed)
    return p, _log_p_table(p), BigramLM(V).eval()


def test_rollout_forward_value_is_log_p_of_sampled_sequence():
    """The Gumbel estimator's forward value equals the exact log P of the sequences it sampled."""
    p, table, model = _world()
    g = torch.Generator().manual_seed(1)
    r = gumbel_rollout(model.logits_from_onehot, table, 300, p.eos, 499, generator=g)
    toks, lens = r.tokens.numpy(), r.lengths.numpy()
    finished = toks[np.arange(len(lens)), lens - 1] == p.eos
    assert finished.mean() > 0.9  # an untrained model on V=11 nearly always stops before 499
    exact = sequence_log_prob(p, toks, lens)  # PAD (id 0) emitted by Q costs log(1e-30), as the table
    np.testing.assert_allclose(r.log_p.detach().numpy(), exact, rtol=1e-5, atol=1e-3)
    # log Q of the same sequences, from the model's matrix
    Q = np.log(model.transition_matrix())
    lq = np.array([Q[np.r_[0, toks[i, : lens[i] - 1]], toks[i, : lens[i]]].sum() for i in range(len(lens))])
    np.testing.assert_allclose(r.log_q.detach().numpy(), lq, rtol=1e-4, atol=1e-3)


def test_fast_gumbel_path_matches_autograd_reference():
    """Same random stream → same samples, same log P and the same parameter gradients (to fp32 rounding).

    Dropout is off here (eval mode): the two paths draw dropout masks from different streams.
    """
    p, table, model = _world(V=21, seed=3)
    rng = np.random.default_rng(7)
    noise = lambda like: torch.from_numpy(gumbel_from_uniform(rng.random(tuple(like.shape), dtype=np.float32)))  # noqa: E731
    ref = gumbel_rollout(model.logits_from_onehot, table, 200, p.eos, 499, need_log_q=False, noise=noise)
    (-ref.log_p.mean()).backward()
    ref_grads = [q.grad.clone() for q in model.parameters()]
    model.zero_grad()
    log_p, lengths = bigram_gumbel_log_p(model, table, 200, p.eos, 499, rng=np.random.default_rng(7))
    (-log_p.mean()).backward()
    assert torch.equal(lengths, ref.lengths)
    torch.testing.assert_close(log_p, ref.log_p, rtol=1e-5, atol=1e-2)
    for a, q in zip(ref_grads, model.parameters()):
        torch.testing.assert_close(q.grad, a, rtol=1e-4, atol=1e-4 * a.abs().max().item())


def test_fast_gumbel_path_with_dropout_runs_and_is_seeded():
    p, table, model = _world(V=21, seed=4)
    model.train()
    a, la = bigram_gumbel_log_p(model, table, 100, p.eos, 499, rng=np.random.default_rng(0))
    b, lb = bigram_gumbel_log_p(model, table, 100, p.eos, 499, rng=np.random.default_rng(0))
    assert torch.equal(a, b) and torch.equal(la, lb)
    (-a.mean()).backward()
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in model.parameters())


def test_mixce_star_and_kl_formulas():
    dq = torch.tensor([-3.0, -5.0])
    dp = torch.tensor([-2.0, -4.0])
    sq = torch.tensor([-1.0, -2.0, -3.0])
    sp = torch.tensor([-70.0, -2.5, -3.0])
    assert mixce_star_loss(dq, sp, 0.9).item() == pytest.approx(0.9 * 4.0 + 0.1 * (75.5 / 3))
    assert mixce_star_loss(dq, torch.zeros(0), 1.0).item() == pytest.approx(4.0)  # eta=1: MLE, no samples
    assert reverse_kl_loss(sq, sp).item() == pytest.approx(((-1 + 70) + (-2 + 2.5) + 0.0) / 3)
    assert two_kls_loss(dq, dp, sq, sp, 0.5).item() == pytest.approx(0.5 * 1.0 + 0.5 * (69.5 / 3))
    for eta in (-0.1, 1.01):
        with pytest.raises(ValueError, match="eta must be in"):
            mixce_star_loss(dq, sp, eta)


def test_mixce_sequence_sum_normalisation_is_official_qlogq_mix():
    """mixce_loss(reduction='sum') / B == η·mle + (1−η)·qlogq (sequence sums, batch mean), notes §1.4."""
    torch.manual_seed(0)
    B, T, V, eta = 4, 6, 7, 0.3
    logits = torch.randn(B, T, V)
    labels = torch.randint(0, V, (B, T))
    labels[1, 3:] = -100
    logq = torch.log_softmax(logits, -1).gather(-1, labels.clamp_min(0)[..., None])[..., 0]
    logq = logq * labels.ne(-100)
    q = torch.exp(logq)
    official = eta * (-logq.sum(1).mean()) + (1 - eta) * (-(q * logq).sum(1).mean())
    ours = mixce_loss(logits, labels, eta, reduction="sum") / B
    torch.testing.assert_close(ours, official)
