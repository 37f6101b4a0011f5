"""sequencematch_loss / bc_loss: telescoping identity, closed-form absorbing tail, naive reference, gradients."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from seqlevel.backspace import augment_with_noise, collate, encode, model_inputs
from seqlevel.losses import bc_loss, mle_loss, sequencematch_loss
from seqlevel.losses.sequencematch import DIVERGENCES, _phi_exact, phi, sequencematch_terms
from seqlevel.presets import tiny_model

A, BK, EOS, PAD = 7, 6, 1, 0  # actions: ids 0..6, <bksp> = 6, <eos> = 1


def _batch(trajs, is_data):
    encs = [encode(p, a, BK, eos_id=EOS, is_data=d) for (p, a), d in zip(trajs, is_data)]
    return collate(encs, PAD)


TRAJS = [
    ([2, 3], [4, BK, BK, BK, 5, 2, EOS]),  # data, complete, backspace past the prompt boundary
    ([2], [3, 3, BK, 4]),  # data, truncated
    ([5, 4, 3], [2, BK, 2, 5, EOS]),  # model, complete
    ([3], [BK, 4, 4, 4, 5, BK]),  # model, truncated
]
IS_DATA = [True, True, False, False]


def _logits(batch, seed=0, scale=2.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    B, T = batch["input_ids"].shape
    return (torch.randn(B, T, A, generator=g, dtype=torch.float64) * scale).to(dtype)


# ---- identities --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eos", ["absorbing", "done"])
@pytest.mark.parametrize("gamma", [0.998, 0.9])
def test_telescoping_value_sum_equals_V_s0(eos, gamma):
    """φ ≡ 0 leaves only the value term; on a complete trajectory it telescopes to V(s_0) (§3.5)."""
    batch = _batch(TRAJS, IS_DATA)
    logits = _logits(batch, dtype=torch.float32)
    terms = sequencematch_terms(logits, batch, gamma=gamma, eos=eos)
    for b, (p, a) in enumerate(TRAJS):
        V = torch.logsumexp(logits[b].double(), -1)
        s0, K = len(p) - 1, len(a)
        expected = V[s0] if a[-1] == EOS else V[s0] - gamma**K * V[s0 + K]  # truncated: V(u_0) − γ^K V(u_K)
        assert abs(terms["value"][b].item() - expected.item()) <= 1e-5


def _chain(step_logits, labels, eos_abs_last):
    """A hand-built one-row batch: slot t holds step_logits[t]."""
    T = len(step_logits)
    lab = torch.tensor(labels + [-100] * (T - len(labels)))
    valid = torch.zeros(T, dtype=torch.bool)
    valid[: T - 1] = True
    eos_abs = torch.zeros(T, dtype=torch.bool)
    if eos_abs_last:
        eos_abs[-1] = True
        lab[-1] = EOS
    batch = {"labels": lab[None], "valid": valid[None], "step": torch.arange(T)[None], "eos_abs": eos_abs[None],
             "is_data": torch.tensor([True])}
    return torch.stack(step_logits)[None], batch


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_absorbing_tail_closed_form_equals_unrolled_tail(divergence):
    gamma, K, N = 0.9, 4, 700  # 0.9**700 ≈ 1e-32: the unrolled remainder is negligible
    g = torch.Generator().manual_seed(1)
    steps = [torch.randn(A, generator=g, dtype=torch.float64) * 2 for _ in range(K)]
    u_K = torch.randn(A, generator=g, dtype=torch.float64) * 2
    acts = [3, BK, 4, EOS]
    closed = sequencematch_terms(*_chain(steps + [u_K], acts, True), divergence=divergence, gamma=gamma)
    unrolled = sequencematch_terms(*_chain(steps + [u_K] * (N + 1), acts + [EOS] * N, False),
                                   divergence=divergence, gamma=gamma)
    for key in ("phi", "r2", "value"):
        torch.testing.assert_close(closed[key], unrolled[key], rtol=1e-10, atol=1e-10)


def _naive_loss(logits, trajs, is_data, divergence, gamma, eos, c=0.01, weights=None, value_on_truncated=False):
    """Loops over trajectories and actions, straight from §3.4/§3.5: the stated data, model and value terms, with
    φ(r) = r − c·r² and model-side c·r² for the χ² divergences, and optional per-trajectory weights."""
    lse = lambda x: torch.logsumexp(x, -1)  # noqa: E731
    phi_c = (lambda d, r: r - c * r**2) if divergence in ("chi2", "chi2_mix") else phi  # noqa: E731
    per = []
    for b, (p, acts) in enumerate(trajs):
        phi_sum = r2_sum = val_sum = logits.new_zeros(())
        for k, a in enumerate(acts):
            t = len(p) - 1 + k
            v_next = 0.0 if (eos == "done" and a == EOS) else lse(logits[b, t + 1])
            r = logits[b, t, a] - gamma * v_next
            phi_sum = phi_sum + gamma**k * phi_c(divergence, r)
            r2_sum = r2_sum + gamma**k * r**2
            val_sum = val_sum + gamma**k * (lse(logits[b, t]) - gamma * v_next)
        if eos == "absorbing" and acts and acts[-1] == EOS:
            t, K = len(p) - 1 + len(acts), len(acts)
            r_abs = logits[b, t, EOS] - gamma * lse(logits[b, t])
            phi_sum = phi_sum + gamma**K / (1 - gamma) * phi_c(divergence, r_abs)
            r2_sum = r2_sum + gamma**K / (1 - gamma) * r_abs**2
            val_sum = val_sum + gamma**K * lse(logits[b, t])
        per.append((phi_sum, r2_sum, val_sum))
    wts = [1.0] * len(per) if weights is None else [float(x) for x in weights]
    D = [(x, w) for x, d, w in zip(per, is_data, wts) if d]
    M = [(x, w) for x, d, w in zip(per, is_data, wts) if not d]
    # the value term's model side: complete rollouts only (unless value_on_truncated)
    MV = [(x, w) for (x, d, w), (_, acts) in zip(zip(per, is_data, wts), trajs)
          if not d and (value_on_truncated or acts[-1] == EOS)]
    mean = lambda xs, i: sum(w * x[i] for x, w in xs) / sum(w for _, w in xs)  # noqa: E731
    loss = -mean(D, 0) + 0.5 * mean(D, 2) + 0.5 * mean(MV, 2)
    if divergence == "chi2_mix":
        loss = loss + c * mean(M, 1)  # the model-side χ² term
    return (1 - gamma) * loss


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("eos", ["absorbing", "done"])
@pytest.mark.parametrize("c", [0.25, 0.01])
def test_loss_matches_naive_reference(divergence, eos, c):
    batch = _batch(TRAJS, IS_DATA)
    logits = _logits(batch)
    got = sequencematch_loss(logits, batch, divergence=divergence, gamma=0.95, eos=eos, chi2_weight=c)
    want = _naive_loss(logits, TRAJS, IS_DATA, divergence, 0.95, eos, c=c)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_value_on_truncated_puts_cut_rollouts_in_the_value_term():
    batch = _batch(TRAJS, IS_DATA)
    logits = _logits(batch)
    got = sequencematch_loss(logits, batch, gamma=0.95, value_on_truncated=True)
    want = _naive_loss(logits, TRAJS, IS_DATA, "chi2_mix", 0.95, "absorbing", value_on_truncated=True)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(got, sequencematch_loss(logits, batch, gamma=0.95))


def test_sequence_weights_are_a_weighted_mean_within_each_side():
    batch = _batch(TRAJS, IS_DATA)
    logits = _logits(batch)
    wts = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)
    got = sequencematch_loss(logits, batch, gamma=0.95, sequence_weights=wts)
    want = _naive_loss(logits, TRAJS, IS_DATA, "chi2_mix", 0.95, "absorbing", weights=wts)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="sequence_weights"):
        sequencematch_loss(logits, batch, sequence_weights=-wts)


def test_model_reg_overrides_the_model_side_weight_only():
    batch = _batch(TRAJS, IS_DATA)
    logits = _logits(batch)
    a, ta = sequencematch_loss(logits, batch, chi2_weight=0.01, model_reg=0.25, return_terms=True)
    b, tb = sequencematch_loss(logits, batch, chi2_weight=0.01, return_terms=True)
    torch.testing.assert_close(ta["loss_data"], tb["loss_data"])
    torch.testing.assert_close(ta["loss_model"], tb["loss_model"] * 25)


def test_chi2_mix_is_chi2_plus_the_model_side_term():
    batch = _batch(TRAJS, IS_DATA)
    logits = _logits(batch)
    mix, t = sequencematch_loss(logits, batch, "chi2_mix", chi2_weight=0.25, return_terms=True)
    chi2 = sequencematch_loss(logits, batch, "chi2", chi2_weight=0.25)
    model_rows = ~batch["is_data"]
    model_term = (1 - 0.998) * 0.25 * t["r2"][model_rows].mean()
    torch.testing.assert_close(mix, chi2 + model_term, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(t["loss_model"], model_term)
    data_rows = batch["is_data"]
    torch.testing.assert_close(t["loss_data"], -(1 - 0.998) * t["phi"][data_rows].mean())
    # the data side is φ(r) = r − r²/4 (the paper's χ² φ)
    r = torch.linspace(-5, 5, 11, dtype=torch.float64)
    torch.testing.assert_close(phi("chi2_mix", r), r - r**2 / 4)


def test_data_only_batch_puts_the_whole_value_term_on_data():
    batch = _batch(TRAJS[:2], IS_DATA[:2])
    logits = _logits(batch)
    loss, t = sequencematch_loss(logits, batch, return_terms=True)
    torch.testing.assert_close(t["loss_value"], (1 - 0.998) * t["value"].mean())
    assert t["loss_model"] == 0


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("eos", ["absorbing", "done"])
def test_finite_difference_gradients(divergence, eos):
    batch = _batch(TRAJS, IS_DATA)
    logits = _logits(batch, seed=2, scale=3.0).requires_grad_(True)
    fn = lambda x: sequencematch_loss(x, batch, divergence=divergence, gamma=0.9, eos=eos)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (logits,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradient_accumulation_with_num_sequences_is_exact():
    batch = _batch(TRAJS, IS_DATA)
    logits = _logits(batch)
    full = sequencematch_loss(logits, batch)
    halves = []
    for rows in ([0, 2], [1, 3]):
        sub = {k: v[rows] for k, v in batch.items()}
        # (data rows, model rows, complete model rows: the value term's model side) in the whole step
        halves.append(sequencematch_loss(logits[rows], sub, num_sequences=(2, 2, 1)))
    torch.testing.assert_close(sum(halves), full, rtol=1e-12, atol=1e-12)


# ---- φ table -----------------------------------------------------------------------------------------------------


def test_phi_table_and_tangent_continuation():
    r = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(phi("kl", r), 1 + torch.log(r))
    torch.testing.assert_close(phi("reverse_kl", r), -torch.exp(-(r + 1)))
    torch.testing.assert_close(phi("js", r), torch.log(2 - torch.exp(-r)))
    torch.testing.assert_close(phi("hellinger", r), r / (1 + r))
    torch.testing.assert_close(phi("tv", r), r)
    for div in ("kl", "js", "hellinger"):
        x = torch.linspace(-6, 3, 2001, dtype=torch.float64, requires_grad=True)
        y = phi(div, x, max_phi_slope=10.0)
        (dy,) = torch.autograd.grad(y.sum(), x)
        assert torch.isfinite(y).all() and (dy <= 10.0 + 1e-9).all()  # bounded slope
        assert (dy[1:] <= dy[:-1] + 1e-9).all()  # concave: φ' non-increasing
        assert (dy > 0).all()  # increasing
        inside = dy < 9.99  # where φ is used as is
        torch.testing.assert_close(y[inside], _phi_exact(div, x[inside]))


# ---- BC --------------------------------------------------------------------------------------------------------


def test_bc_loss_is_mle_over_data_actions():
    batch = _batch(TRAJS, IS_DATA)
    logits = _logits(batch, dtype=torch.float32)
    nll, n = 0.0, 0
    for b, (p, acts) in enumerate(TRAJS):
        if not IS_DATA[b]:
            continue
        for k, a in enumerate(acts):
            nll += F.cross_entropy(logits[b, len(p) - 1 + k], torch.tensor(a)).item()
            n += 1
    assert abs(bc_loss(logits, batch).item() - nll / n) < 1e-5
    all_rows = bc_loss(logits, batch, data_only=False)
    labels = batch["labels"].masked_fill(~batch["valid"], -100)  # the absorbing slot is not a target
    torch.testing.assert_close(all_rows, mle_loss(logits, labels))
    assert bc_loss(logits, batch, reduction="sum").item() == pytest.approx(nll, rel=1e-5)


# ---- bad input -------------------------------------------------------------------------------------------------


def test_bad_inputs():
    batch = _batch(TRAJS, IS_DATA)
    logits = _logits(batch)
    with pytest.raises(ValueError, match="unknown divergence 'chi3'"):
        sequencematch_loss(logits, batch, divergence="chi3")
    for g in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"gamma must be in \(0, 1\)"):
            sequencematch_loss(logits, batch, gamma=g)
    with pytest.raises(ValueError, match="eos must be"):
        sequencematch_loss(logits, batch, eos="truncate")
    with pytest.raises(ValueError, match="without shifting"):
        sequencematch_loss(logits[:, :-1], batch)
    with pytest.raises(ValueError, match="without shifting"):
        bc_loss(logits[:, :-1], batch)
    with pytest.raises(ValueError, match="add_backspace_token"):
        sequencematch_loss(logits[..., :BK], batch)
    with pytest.raises(ValueError, match="model_mix"):
        sequencematch_loss(logits, batch, model_mix=1.5)
    with pytest.raises(ValueError, match="collate"):
        sequencematch_loss(logits, {k: v for k, v in batch.items() if k != "step"})


def test_fp32_compute_for_half_logits_and_finite_at_padding():
    batch = _batch(TRAJS, IS_DATA)
    logits = _logits(batch, dtype=torch.bfloat16)
    loss = sequencematch_loss(logits, batch)
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())


# ---- end to end ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["bc", "sequencematch"])
def test_training_on_noise_augmented_data_learns_to_backspace(objective):
    """A few steps on counting sequences with environment noise: <bksp> becomes likely after noise, not elsewhere."""
    Vt, bk = 16, 15

    def batch_of(rng, n):
        encs = []
        for _ in range(n):
            s, k = rng.randrange(12), rng.randint(4, 10)
            ids = [2] + [3 + (s + i) % 12 for i in range(k)] + [EOS]
            p, a = augment_with_noise(ids, 0.2, rng=rng, backspace_id=bk, vocab_size=Vt, exclude_ids=[PAD, EOS, 2])
            encs.append(encode(p, a, bk, eos_id=EOS))
        return collate(encs, PAD)

    model = tiny_model("tiny-llama", vocab_size=Vt, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    for _ in range(100):
        b = batch_of(rng, 16)
        logits = model(**model_inputs(b)).logits
        loss = bc_loss(logits, b) if objective == "bc" else sequencematch_loss(logits, b, gamma=0.9)
        loss.backward()
        opt.step()
        opt.zero_grad()
    b = batch_of(random.Random(1), 64)
    with torch.no_grad():
        p_bk = model(**model_inputs(b)).logits.softmax(-1)[..., bk]  # (B, T)
    after_noise = p_bk[b["valid"] & (b["labels"] == bk)].mean().item()
    elsewhere = p_bk[b["valid"] & (b["labels"] != bk)].mean().item()
    assert after_noise > 0.4 and after_noise > 5 * elsewhere, (after_noise, elsewhere)


# ---- issue 21: the absorbing state whose only action is <eos> ----------------------------------------------------


def test_absorbing_eos_reads_only_the_eos_logit_at_the_absorbing_state():
    """eos="absorbing_eos": V(u_K) = Q(u_K, <eos>), so no other logit of the absorbing slot gets a gradient, and the
    tail's r is (1 − γ)·Q(u_K, <eos>); with "absorbing" the full softmax there enters (the network defect of
    issue 21: an untrained <bksp>-heavy softmax after <eos> pulled the <bksp> logit down everywhere)."""
    batch = _batch(TRAJS, IS_DATA)
    logits = _logits(batch).requires_grad_(True)
    gamma = 0.9
    abs_slot = batch["eos_abs"]
    loss = sequencematch_loss(logits, batch, gamma=gamma, eos="absorbing_eos", chi2_weight=0.25)
    g, = torch.autograd.grad(loss, logits)
    others = torch.ones(A, dtype=torch.bool)
    others[EOS] = False
    assert abs_slot.any() and float(g[abs_slot][:, others].abs().max()) == 0.0
    assert float(g[abs_slot][:, EOS].abs().min()) > 0.0
    loss_full = sequencematch_loss(logits, batch, gamma=gamma, eos="absorbing", chi2_weight=0.25)
    g_full, = torch.autograd.grad(loss_full, logits)
    assert float(g_full[abs_slot][:, BK].abs().max()) > 0.0  # the full softmax moves the <bksp> logit there
    terms = sequencematch_terms(logits, batch, gamma=gamma, eos="absorbing_eos", chi2_weight=0.25)
    for b, (p, a) in enumerate(TRAJS):  # telescoping still holds with V(u_K) = Q(u_K, <eos>)
        if a[-1] != EOS:
            continue
        V = torch.logsumexp(logits[b].detach(), -1)
        assert abs(terms["value"][b].item() - V[len(p) - 1].item()) <= 1e-9
        k = int(torch.nonzero(abs_slot[b]).flatten())
        assert terms["r"][b, k].item() == pytest.approx((1 - gamma) * logits[b, k, EOS].item(), rel=1e-12)


def test_absorbing_eos_equals_absorbing_when_the_absorbing_state_is_sure_of_eos():
    batch = _batch(TRAJS, IS_DATA)
    logits = _logits(batch).clone()
    logits[batch["eos_abs"]] = -1e4
    logits[batch["eos_abs"], EOS] = 3.0  # π(<eos> | u_K) = 1 to double precision: V(u_K) = Q(u_K, <eos>)
    a = sequencematch_loss(logits, batch, eos="absorbing", chi2_weight=0.25)
    b = sequencematch_loss(logits, batch, eos="absorbing_eos", chi2_weight=0.25)
    assert float(a) == pytest.approx(float(b), rel=1e-12)
