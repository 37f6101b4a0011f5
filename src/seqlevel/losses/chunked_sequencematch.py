"""Memory-lean SequenceMatch: ``(V(s), Q(s, a))`` from hidden states, chunked over slots, no ``(B, T, A)`` logits.

Every SequenceMatch term (and behaviour cloning) needs only two numbers per slot: ``V(s) = logsumexp_a ℓ(a|s)``
and ``Q(s, a_t) = ℓ(a_t|s)`` (eq. 4: ``r = Q(s, a) − γ V(s')``). :func:`chunked_qv` fuses the output projection
``hidden @ W.T`` with the fused (V, Q) function of :mod:`.sequencematch`, ``chunk_size`` slots at a time under
activation checkpointing: each chunk's ``(chunk, A)`` logits live only while that chunk is computed, in forward
and again in backward. Peak memory is O(chunk · A) like :mod:`.chunked`'s MLE, instead of O(B · T · A).

The terms and the loss are then the very functions :func:`seqlevel.losses.sequencematch_terms` /
:func:`seqlevel.losses.sequencematch_loss` use on ``(V, Q)`` (``sequencematch_terms_from_qv``, ``_combine``) (equal values and gradients, tested in fp64 to 1e-10).
BC comes for free from the same pass: ``−log π(a|s) = V(s) − Q(s, a)``.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from seqlevel.losses.sequencematch import (
    _QV,
    IGNORE,
    _check,
    _check_weights,
    _combine,
    sequencematch_terms_from_qv,
)

Tensor = torch.Tensor


def _chunk_qv(h: Tensor, weight: Tensor, bias: Tensor | None, a: Tensor) -> tuple[Tensor, Tensor]:
    logits = h @ weight.t()  # (n, A) in the model's dtype
    if bias is not None:
        logits = logits + bias
    logits = logits if logits.dtype == torch.float64 else logits.float()  # fp32 at least, as the full-logits loss
    V, Q = _QV.apply(logits.unsqueeze(0), a.unsqueeze(0))  # (1, n) each
    return V.squeeze(0), Q.squeeze(0)


def _needed_slots(batch: dict[str, Tensor]) -> Tensor:
    """Slots whose V or Q enters a term: transitions, their next state, and the absorbing state. ``(B, T)`` bool."""
    valid, eos_abs = batch["valid"], batch["eos_abs"]
    nxt = torch.cat([torch.zeros_like(valid[:, :1]), valid[:, :-1]], dim=1)  # s_{t+1} of a transition at t
    return valid | eos_abs | nxt | (batch["labels"] != IGNORE)


def chunked_qv(
    hidden: Tensor,
    lm_head_weight: Tensor,
    actions: Tensor,
    *,
    lm_head_bias: Tensor | None = None,
    needed: Tensor | None = None,
    chunk_size: int = 1024,
) -> tuple[Tensor, Tensor]:
    """``V(s_t) = logsumexp(h_t W^T)`` and ``Q(s_t, a_t) = (h_t W^T)[a_t]`` without a full logits tensor.

    Args:
        hidden: ``(B, T, d)`` final hidden states (slot ``t`` holds state ``s_t``; no shift).
        lm_head_weight: ``(A, d)`` output projection over the extended vocabulary (``<bksp>`` row included).
        actions: ``(B, T)`` action ids; negative ids (``-100``) are read as 0 (their Q is unused).
        lm_head_bias: optional ``(A,)`` bias.
        needed: ``(B, T)`` bool, slots to compute (default all); the others get ``V = Q = 0``.
        chunk_size: slots per chunk; peak memory grows with ``chunk_size · A``.

    Returns:
        ``(V, Q)``, each ``(B, T)`` in fp32 (fp64 for fp64 inputs), differentiable w.r.t. hidden and weights.
    """
    if hidden.dim() != 3 or hidden.shape[-1] != lm_head_weight.shape[-1]:
        raise ValueError(f"hidden must be (B, T, d) with d = lm_head_weight.shape[1] = {lm_head_weight.shape[-1]}, "
                         f"got {tuple(hidden.shape)}; pass the final hidden states and the model's output weight")
    if tuple(actions.shape) != tuple(hidden.shape[:2]):
        raise ValueError(f"actions {tuple(actions.shape)} do not match hidden {tuple(hidden.shape[:2])} (B, T) slots")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    B, T, d = hidden.shape
    out_dtype = torch.float64 if torch.float64 in (hidden.dtype, lm_head_weight.dtype) else torch.float32
    sel = (torch.ones(B * T, dtype=torch.bool, device=hidden.device) if needed is None
           else needed.reshape(-1).to(hidden.device))
    idx = sel.nonzero().squeeze(1)  # (N,) flat slots to compute
    h = hidden.reshape(B * T, d).index_select(0, idx)  # (N, d)
    a = actions.reshape(-1).to(hidden.device).index_select(0, idx).clamp(min=0).long()  # (N,)
    Vs, Qs = [], []
    for s in range(0, idx.numel(), chunk_size):
        v, q = checkpoint(_chunk_qv, h[s: s + chunk_size], lm_head_weight, lm_head_bias, a[s: s + chunk_size],
                          use_reentrant=False)
        Vs.append(v)
        Qs.append(q)
    zeros = hidden.new_zeros(B * T, dtype=out_dtype) + 0.0 * hidden.sum()  # keeps a graph when N == 0
    if not Vs:
        return zeros.view(B, T), zeros.view(B, T)
    V = zeros.index_put((idx,), torch.cat(Vs).to(out_dtype)).view(B, T)
    Q = zeros.index_put((idx,), torch.cat(Qs).to(out_dtype)).view(B, T)
    return V, Q


def chunked_sequencematch_loss(
    hidden: Tensor,
    lm_head_weight: Tensor,
    batch: dict[str, Tensor],
    divergence: str = "chi2_mix",
    gamma: float = 0.998,
    eos: str = "absorbing",
    *,
    lm_head_bias: Tensor | None = None,
    chunk_size: int = 1024,
    chi2_weight: float = 0.01,
    model_reg: float | None = None,
    model_mix: float = 0.5,
    occupancy_normalize: bool = True,
    max_phi_slope: float = 10.0,
    num_sequences: tuple[int, ...] | None = None,
    value_on_truncated: bool = False,
    bc_weight: float = 0.0,
    bc_num_items: int | Tensor | None = None,
    return_terms: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """:func:`seqlevel.losses.sequencematch_loss` from hidden states (see the module docstring), optionally plus BC.

    Args:
        hidden: ``(B, T, d)`` final hidden states of ``model(**model_inputs(batch))`` (e.g. the decoder's
            ``last_hidden_state``; slot ``t`` scores ``labels[:, t]``, no shift).
        lm_head_weight: ``(A, d)`` ``model.get_output_embeddings().weight`` (``<bksp>`` row included).
        batch: a :func:`seqlevel.backspace.collate` batch.
        divergence, gamma, eos, chi2_weight, model_reg, model_mix, occupancy_normalize, max_phi_slope, num_sequences, value_on_truncated: as in
            :func:`seqlevel.losses.sequencematch_loss` (one line: a docstring parser reads the names up to the colon).
        lm_head_bias: optional ``(A,)`` bias. chunk_size: slots per chunk.
        bc_weight: adds ``bc_weight · bc_loss`` (data rows, mean over ``bc_num_items`` targets) from the same pass;
            the SequenceMatch trainer's ``(1 − w)·BC + w·SM`` is ``w · this(bc_weight=(1 − w)/w)``.
        bc_num_items: BC normaliser (targets in the optimizer step); default the targets here.
        return_terms: also return the terms (plus ``loss_data``/``loss_model``/``loss_value``/``loss_bc``).

    Returns:
        A scalar loss (and the terms dict when ``return_terms``).
    """
    model_reg = _check_weights(model_reg, model_mix, chi2_weight)
    B, T = hidden.shape[:2]
    # the full-logits checks, on a shape-only stand-in for the (B, T, A) logits that are never built
    _check(torch.empty(B, T, lm_head_weight.shape[0], device="meta"), batch, gamma, divergence, eos)
    labels = batch["labels"].to(hidden.device)
    V, Q = chunked_qv(hidden, lm_head_weight, labels, lm_head_bias=lm_head_bias,
                      needed=_needed_slots(batch).to(hidden.device), chunk_size=chunk_size)
    terms = sequencematch_terms_from_qv(V, Q, batch, divergence=divergence, gamma=gamma, eos=eos,
                                        max_phi_slope=max_phi_slope, chi2_weight=chi2_weight)
    loss, parts = _combine(terms, batch["is_data"], divergence, gamma, model_reg, model_mix, occupancy_normalize,
                           num_sequences, value_on_truncated=value_on_truncated)
    bc = loss.detach() * 0.0
    if bc_weight:
        keep = batch["valid"].to(V.device) & batch["is_data"].to(V.device)[:, None] & (labels != IGNORE)
        n = keep.sum() if bc_num_items is None else torch.as_tensor(bc_num_items, device=V.device)
        bc = ((V - Q) * keep.to(V.dtype)).sum() / n.to(V.dtype).clamp_min(1)  # −log π(a|s) = V(s) − Q(s, a)
        loss = loss + bc_weight * bc
    if not return_terms:
        return loss
    return loss, {**terms, **parts, "loss_bc": bc.detach()}


def chunked_bc_loss(
    hidden: Tensor,
    lm_head_weight: Tensor,
    batch: dict[str, Tensor],
    *,
    lm_head_bias: Tensor | None = None,
    data_only: bool = True,
    num_items_in_batch: int | Tensor | None = None,
    chunk_size: int = 1024,
) -> Tensor:
    """:func:`seqlevel.losses.bc_loss` (``reduction="mean"``) from hidden states, chunked.

    Args:
        hidden / lm_head_weight / batch / lm_head_bias / chunk_size: as :func:`chunked_sequencematch_loss`.
        data_only / num_items_in_batch: as :func:`seqlevel.losses.bc_loss`.

    Returns:
        Scalar loss: mean of ``−log π(a|s)`` over the kept targets.
    """
    from seqlevel.losses.chunked import chunked_mle_loss

    labels = batch["labels"].to(hidden.device)
    keep = batch["valid"].to(hidden.device)
    if data_only:
        keep = keep & batch["is_data"].to(hidden.device)[:, None]
    return chunked_mle_loss(hidden, lm_head_weight, labels.masked_fill(~keep, IGNORE), lm_head_bias=lm_head_bias,
                            chunk_size=chunk_size, num_items_in_batch=num_items_in_batch)
