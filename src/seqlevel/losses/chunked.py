"""Memory-lean token-weighted losses: the output projection fused with the loss, chunked over tokens.

``logits = hidden @ W.T`` is never materialised for the whole batch: each chunk of ``chunk_size`` target
tokens computes its ``(chunk, V)`` fp32 logits, its weighted NLL, and is freed; the backward pass recomputes
one chunk at a time (activation checkpointing). Peak memory is O(chunk · V) instead of O(B · T · V), which is
what makes 128k-token vocabularies affordable. Values and gradients equal the unchunked functions in
``token_weighted`` (tested to 1e-6).

Only target positions (``labels != ignore_index``) are projected at all, so padding costs nothing.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from seqlevel.losses.token_weighted import WeightFn, _check_unit_interval, _reduce

Tensor = torch.Tensor


def _chunk_loss(h: Tensor, weight: Tensor, bias: Tensor | None, y: Tensor, weight_fn: WeightFn | None) -> Tensor:
    logits = h @ weight.t()  # (n, V) in the model's dtype
    if bias is not None:
        logits = logits + bias
    logits = logits.float() if logits.dtype != torch.float64 else logits
    nll = torch.nn.functional.cross_entropy(logits, y, reduction="none")  # (n,)
    if weight_fn is not None:
        with torch.no_grad():
            nll_w = weight_fn(torch.exp(-nll))
        nll = nll_w * nll
    return nll.sum()


def chunked_token_weighted_loss(
    hidden: Tensor,
    lm_head_weight: Tensor,
    labels: Tensor,
    weight_fn: WeightFn | None = None,
    *,
    lm_head_bias: Tensor | None = None,
    chunk_size: int = 1024,
    ignore_index: int = -100,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``Σ_t sg[w(q_t)] ℓ_t / N`` computed from hidden states without a full logits tensor.

    Args:
        hidden: ``(B, T, d)`` final hidden states, aligned with ``labels`` (``hidden[:, t]`` predicts
            ``labels[:, t]``; shift before calling).
        lm_head_weight: ``(V, d)`` output projection (``model.get_output_embeddings().weight``).
        labels: ``(B, T)`` gold ids, ``ignore_index`` where ignored.
        weight_fn: token weight as a function of ``q_t`` (detached); ``None`` is MLE.
        lm_head_bias: optional ``(V,)`` bias.
        chunk_size: target tokens per chunk; peak memory grows with ``chunk_size · V``.
        ignore_index, num_items_in_batch, reduction: as in :func:`seqlevel.losses.mle_loss`
            (``reduction`` is ``"mean"`` or ``"sum"``).

    Returns:
        Scalar fp32 loss.
    """
    if hidden.shape[:-1] != labels.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and labels {tuple(labels.shape)} are not aligned; expected "
                         f"hidden (B, T, d) with labels (B, T); shift before calling")
    if hidden.shape[-1] != lm_head_weight.shape[-1]:
        raise ValueError(f"hidden width {hidden.shape[-1]} != lm_head_weight width {lm_head_weight.shape[-1]}; "
                         "pass model.get_output_embeddings().weight of the same model")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum' for chunked losses, got {reduction!r}")
    mask = labels.ne(ignore_index).reshape(-1)
    h = hidden.reshape(-1, hidden.shape[-1])[mask]  # (N, d): only positions with a target
    y = labels.reshape(-1)[mask].long()  # (N,)
    total = hidden.new_zeros((), dtype=torch.float32) + 0.0 * hidden.sum()  # keeps a graph when N == 0
    for s in range(0, y.numel(), chunk_size):
        total = total + checkpoint(_chunk_loss, h[s : s + chunk_size], lm_head_weight, lm_head_bias,
                                   y[s : s + chunk_size], weight_fn, use_reentrant=False)
    return _reduce(total.unsqueeze(0), mask.sum(), reduction, num_items_in_batch)


def chunked_mle_loss(hidden: Tensor, lm_head_weight: Tensor, labels: Tensor, **kw) -> Tensor:
    """Memory-lean :func:`seqlevel.losses.mle_loss` from hidden states (see module docstring)."""
    return chunked_token_weighted_loss(hidden, lm_head_weight, labels, None, **kw)


def chunked_mixce_loss(hidden: Tensor, lm_head_weight: Tensor, labels: Tensor, eta: float, **kw) -> Tensor:
    """Memory-lean :func:`seqlevel.losses.mixce_loss` from hidden states (see module docstring)."""
    _check_unit_interval("eta", eta, "eta=1 is plain MLE, eta=0 is DFT")
    eta = float(eta)
    fn = None if eta == 1.0 else (lambda q: eta + (1.0 - eta) * q)
    return chunked_token_weighted_loss(hidden, lm_head_weight, labels, fn, **kw)
