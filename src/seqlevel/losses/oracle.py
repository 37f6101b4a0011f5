"""Objectives that need the true data distribution P: only usable on known-P tasks (``seqlevel.tasks``).

These are the distributional baselines of the MixCE synthetic experiment (our notes ``methods/mixce.md``
§2.4, official ``synthetic.py``). All are Monte Carlo and sequence level: ``log Q(x)`` and ``log P(x)`` are
sums over the tokens of a sequence, and batch terms are means over sequences.

* ``mixce_star_loss`` (``two_xens``, **MixCE***): ``η·(−E_{x∼P} log Q(x)) + (1−η)·(−E_{x̃∼Q} log P(x̃))``.
* ``reverse_kl_loss``: ``E_{x̃∼Q}[log Q(x̃) − log P(x̃)]``.
* ``two_kls_loss`` (MixKLs): ``η·E_{x∼P}[log P − log Q] + (1−η)·reverse_kl`` (a term with weight 0 is skipped).

The samples ``x̃ ∼ Q`` come from :func:`gumbel_rollout`: straight-through Gumbel-softmax (τ = 1, hard), the
next step fed with ``onehot_{t−1} @ E`` so the gradient of ``log P(x̃)`` flows back through the whole sampled
path. As in the official code, ``log P`` looks up the row of the *detached* previous token, so the gradient
reaches ``log P`` only through the current token's one-hot; an impossible transition costs log(1e-30) ≈ −69.

The MixCE *approximation* (``qlogq_mix``) needs no P: it is ``seqlevel.losses.mixce_loss`` with
``reduction="sum"`` divided by the number of sequences (sequence-sum / batch-mean, notes §1.4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


def _check_eta(eta: float) -> float:
    if not (0.0 <= float(eta) <= 1.0):
        raise ValueError(f"eta must be in [0, 1], got {eta}; eta=1 is plain MLE, eta=0 the pure reverse term")
    return float(eta)


def gumbel_noise(like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard Gumbel noise ``−log(−log U)`` of ``like``'s shape, dtype and device."""
    u = torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    e = -torch.log(u.clamp_min(1e-20))  # Exp(1)
    return -torch.log(e.clamp_min(1e-20))


def straight_through_gumbel(
    logits: Tensor, tau: float = 1.0, generator: torch.Generator | None = None,
    noise: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Hard Gumbel-softmax sample with the soft sample's gradient (``F.gumbel_softmax(hard=True)``).

    Args:
        logits: ``(B, V)`` unnormalised scores.
        tau: temperature of the soft relaxation (1 in MixCE).
        generator: optional torch generator for the Gumbel noise.
        noise: optional ``like -> Gumbel noise`` replacing the generator.

    Returns:
        ``(B, V)`` one-hot rows (forward value) whose gradient is that of ``softmax((logits + g) / tau)``.
    """
    g = gumbel_noise(logits, generator) if noise is None else noise(logits)
    soft = torch.softmax((logits + g) / tau, dim=-1)  # (B, V)
    hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(dim=-1, keepdim=True), 1.0)
    return hard - soft.detach() + soft


@dataclass
class Rollout:
    """Per-sequence results of sampling ``B`` sequences from Q; ``tokens`` is padded with 0 after EOS."""

    log_p: Tensor  # (B,) Σ_t log P(x̃_t | x̃_{t−1}), differentiable through the one-hots
    log_q: Tensor  # (B,) Σ_t log Q(x̃_t | x̃_{t−1}), differentiable
    lengths: Tensor  # (B,) sampled tokens (EOS included when reached)
    tokens: Tensor  # (B, T) sampled ids


def gumbel_rollout(
    logits_from_onehot: Callable[[Tensor], Tensor],
    log_p_table: Tensor,
    batch_size: int,
    eos: int,
    max_new_tokens: int = 499,
    generator: torch.Generator | None = None,
    need_log_q: bool = True,
    noise: Callable[[Tensor], Tensor] | None = None,
) -> Rollout:
    """Sample ``batch_size`` sequences from a bigram model Q by straight-through Gumbel and score them under P.

    Batched over sequences; each step runs only on the rows not yet finished (shrinking active set).

    Args:
        logits_from_onehot: maps the previous token's one-hot ``(b, V)`` to next-token logits ``(b, V)``
            (``MLP(onehot @ E)``; called in whatever train/eval mode the model is in).
        log_p_table: ``(V + 1, V)`` log P rows: row 0 is the first-token distribution, row ``k + 1`` is
            ``log P(· | k)`` (with the 1e-30 floor; PAD/BOS row and column at ``log 1e-30``).
        batch_size: ``B`` sequences, all starting from BOS (id 0).
        eos: EOS id; a sequence stops after emitting it.
        max_new_tokens: cap on sampled tokens (official: 500 positions including BOS, so 499).
        generator: torch generator for the Gumbel noise.
        need_log_q: also accumulate ``log Q(x̃)`` (reverse KL needs it, MixCE* does not); else zeros.
        noise: optional ``like -> Gumbel noise`` source replacing ``generator`` (to share a random stream).

    Returns:
        A :class:`Rollout`.
    """
    V = log_p_table.shape[1]
    dev = log_p_table.device
    active = torch.arange(batch_size, device=dev)  # rows still sampling
    prev_oh = torch.zeros(batch_size, V, device=dev)
    prev_oh[:, 0] = 1.0  # BOS
    prev_row = torch.zeros(batch_size, dtype=torch.long, device=dev)  # row of log_p_table (0 = first token)
    rows, lps, lqs, ids_out = [], [], [], []
    for _ in range(max_new_tokens):
        logits = logits_from_onehot(prev_oh)  # (b, V)
        y = straight_through_gumbel(logits, generator=generator, noise=noise)  # (b, V) one-hot, soft gradient
        ids = y.detach().argmax(dim=-1)  # (b,)
        lps.append((y * log_p_table[prev_row]).sum(-1))  # log P via the detached previous token's row
        if need_log_q:
            lqs.append((y * torch.log_softmax(logits, dim=-1)).sum(-1))
        rows.append(active)
        ids_out.append(ids)
        keep = ids != eos
        if not bool(keep.any()):
            break
        active, prev_oh, prev_row = active[keep], y[keep], ids[keep] + 1
    all_rows = torch.cat(rows)  # (total,)
    zeros = torch.zeros(batch_size, device=dev)
    log_p = zeros.index_add(0, all_rows, torch.cat(lps).to(zeros.dtype))
    log_q = zeros.index_add(0, all_rows, torch.cat(lqs).to(zeros.dtype)) if need_log_q else zeros
    lengths = torch.bincount(all_rows, minlength=batch_size)
    tokens = torch.zeros(batch_size, len(rows), dtype=torch.long, device=dev)
    for t, (r, i) in enumerate(zip(rows, ids_out)):
        tokens[r, t] = i
    return Rollout(log_p=log_p, log_q=log_q, lengths=lengths, tokens=tokens)


def mixce_star_loss(data_log_q: Tensor, sample_log_p: Tensor, eta: float) -> Tensor:
    """MixCE* (``two_xens``): ``η·(−mean_b log Q(x_b)) + (1−η)·(−mean_b log P(x̃_b))``, x ∼ P, x̃ ∼ Q.

    Args:
        data_log_q: ``(B,)`` sequence log-likelihoods under Q of data sequences.
        sample_log_p: ``(B',)`` sequence log-probabilities under P of samples from Q (Gumbel path).
        eta: mixing ratio in ``[0, 1]``; 1 = MLE.

    Returns:
        Scalar loss (a term with weight 0 is left out, so it may be given as an empty tensor).
    """
    eta = _check_eta(eta)
    loss = data_log_q.new_zeros(())
    if eta > 0.0:
        loss = loss + eta * (-data_log_q.mean())
    if eta < 1.0:
        loss = loss + (1.0 - eta) * (-sample_log_p.mean())
    return loss


def reverse_kl_loss(sample_log_q: Tensor, sample_log_p: Tensor) -> Tensor:
    """``KL(Q‖P)`` estimate ``mean_b(log Q(x̃_b) − log P(x̃_b))``, x̃ ∼ Q (Gumbel path). Shapes ``(B,)``."""
    return (sample_log_q - sample_log_p).mean()


def two_kls_loss(
    data_log_q: Tensor, data_log_p: Tensor, sample_log_q: Tensor, sample_log_p: Tensor, eta: float
) -> Tensor:
    """MixKLs: ``η·KL(P‖Q) + (1−η)·KL(Q‖P)``, each a Monte Carlo mean over its own samples (``(B,)`` each)."""
    eta = _check_eta(eta)
    loss = data_log_q.new_zeros(())
    if eta > 0.0:
        loss = loss + eta * (data_log_p - data_log_q).mean()
    if eta < 1.0:
        loss = loss + (1.0 - eta) * reverse_kl_loss(sample_log_q, sample_log_p)
    return loss
