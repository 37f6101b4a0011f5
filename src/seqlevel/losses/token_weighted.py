"""Token-weighted negative log-likelihood objectives: MLE, MixCE, TaiLr and DFT.

All four are ``Σ_t w_t · ℓ_t / N`` with ``ℓ_t = -log q_θ(y_t | y_<t)`` and a stop-gradient weight
``w_t = w(q_t)`` in ``[0, 1]`` that depends only on the model's own probability ``q_t`` of the gold token:

============  ==============================================  =====================
objective     w(q)                                            reference
============  ==============================================  =====================
MLE           1
MixCE (η)     η + (1 − η) q                                   Zhang et al. 2023, §1.5 of our notes
TaiLr (γ)     clamp(q / (γ + (1 − γ) q), w_min, 1)            Ji et al. 2023 (thu-coai convention)
DFT           q                                               = MixCE with η = 0
============  ==============================================  =====================

Conventions shared by every function here (so they drop into ``Trainer.compute_loss``):

* ``logits[:, t]`` scores ``labels[:, t]``: the caller shifts (``logits[:, :-1]`` vs ``input_ids[:, 1:]``).
* ``labels == ignore_index`` (default ``-100``) contributes nothing, not even gradient.
* The arithmetic is fp32 whatever the logits' dtype (fp64 logits stay fp64).
* ``reduction="mean"`` divides by ``num_items_in_batch`` when given (the number of target tokens in the whole
  optimizer step, which makes gradient accumulation exact), else by the number of target tokens here.
  A batch with no target token returns 0 with a valid (zero) gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
WeightFn = Callable[[Tensor], Tensor]


def _check_aligned(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() < 2:
        raise ValueError(f"logits must have shape (..., V), got {tuple(logits.shape)}")
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"labels shape {tuple(labels.shape)} does not match logits shape {tuple(logits.shape)} "
            f"(expected labels of shape {tuple(logits.shape[:-1])}); shift before calling: "
            "logits[:, :-1] scores input_ids[:, 1:]"
        )
    if labels.dtype not in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"labels must be integer token ids, got dtype {labels.dtype}")


def _check_unit_interval(name: str, value: float, hint: str) -> None:
    if not (0.0 <= float(value) <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value}; {hint}")


def _reduce(tok_loss: Tensor, n_tokens: Tensor, reduction: str, num_items_in_batch) -> Tensor:
    total = tok_loss.sum()
    if reduction == "sum":
        return total
    if reduction == "none":
        return tok_loss
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if num_items_in_batch is not None:
        denom = torch.as_tensor(num_items_in_batch, device=total.device, dtype=total.dtype)
    else:
        denom = n_tokens.to(total.dtype)
    return total / denom.clamp_min(1)


def token_nll(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> tuple[Tensor, Tensor]:
    """Per-token negative log-likelihood in fp32.

    Args:
        logits: ``(..., V)`` scores, any float dtype.
        labels: ``(...)`` gold ids, ``ignore_index`` where there is no target.
        ignore_index: label value that marks "no target".

    Returns:
        ``(nll, mask)``, both of shape ``labels.shape``: ``nll`` is 0 where ``mask`` is False.
    """
    _check_aligned(logits, labels)
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)
    if flat.dtype != torch.float64:
        flat = flat.float()  # (N, V): fp32 at least, whatever the model's dtype
    nll = F.cross_entropy(flat, labels.reshape(-1).long(), ignore_index=ignore_index, reduction="none")
    return nll.view(labels.shape), labels.ne(ignore_index)


def token_weighted_loss(
    logits: Tensor,
    labels: Tensor,
    weight_fn: WeightFn | None,
    *,
    ignore_index: int = -100,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``Σ_t sg[w(q_t)] · ℓ_t / N``: the shared core of every objective in this file.

    Args:
        logits: ``(B, T, V)`` (or any ``(..., V)``), aligned with ``labels``.
        labels: ``(B, T)`` gold ids; ``ignore_index`` is skipped.
        weight_fn: maps ``q_t = exp(-ℓ_t)`` (fp32, detached) to the token weight; ``None`` means 1 (MLE).
        ignore_index: label value with no target.
        num_items_in_batch: target-token count of the whole optimizer step (gradient accumulation).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-token weighted losses).

    Returns:
        A scalar (or ``labels.shape`` for ``reduction="none"``) fp32 tensor.
    """
    nll, mask = token_nll(logits, labels, ignore_index)  # (B, T), (B, T)
    if weight_fn is None:
        tok = nll
    else:
        with torch.no_grad():  # stop-gradient weight: without it MixCE's gradient flips sign for q < 1/e
            w = weight_fn(torch.exp(-nll))
        tok = w * nll
    tok = tok * mask  # ignored positions already have nll == 0; keep the mask explicit for weights
    return _reduce(tok, mask.sum(), reduction, num_items_in_batch)


def mle_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Token-level cross-entropy (maximum likelihood).

    Args:
        logits: ``(B, T, V)`` scores; ``logits[:, t]`` scores ``labels[:, t]``.
        labels: ``(B, T)`` gold ids, ``ignore_index`` where ignored.
        ignore_index: label value with no target.
        num_items_in_batch: normaliser for gradient accumulation (target tokens in the optimizer step).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        Scalar fp32 loss.
    """
    return token_weighted_loss(
        logits, labels, None, ignore_index=ignore_index, num_items_in_batch=num_items_in_batch, reduction=reduction
    )


def mixce_loss(
    logits: Tensor,
    labels: Tensor,
    eta: float,
    *,
    ignore_index: int = -100,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """MixCE (Zhang et al., ACL 2023): η·forward CE + (1−η)·reverse CE, in its trainable surrogate form.

    The reverse cross-entropy ``−E_{x∼Q} log P(x)`` needs the unknown data distribution P; the paper's
    implementation approximates its gradient by re-weighting each data token's NLL with the model's own
    (stop-gradient) probability of it: ``w_t = η + (1−η) q_t``. The logit gradient per token is
    ``w_t (softmax(z_t) − onehot(y_t)) / N``. ``eta=1`` is exactly MLE; ``eta=0`` is DFT.

    Unlike the official GPT-2 code on current transformers (which silently receives a *mean* loss and so
    re-weights the batch mean, see ``docs``), the weight here is per token, as the method intends.

    Args:
        logits: ``(B, T, V)`` scores; ``logits[:, t]`` scores ``labels[:, t]``.
        labels: ``(B, T)`` gold ids, ``ignore_index`` where ignored.
        eta: mixing ratio in ``[0, 1]``; 1 = MLE. Small η trained long over-sharpens the model.
        ignore_index: label value with no target.
        num_items_in_batch: normaliser for gradient accumulation.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        Scalar fp32 loss.
    """
    _check_unit_interval("eta", eta, "eta=1 is plain MLE, eta=0 is DFT; the paper's best values were 0.1-0.9")
    eta = float(eta)
    weight = None if eta == 1.0 else (lambda q: eta + (1.0 - eta) * q)
    return token_weighted_loss(
        logits, labels, weight, ignore_index=ignore_index, num_items_in_batch=num_items_in_batch, reduction=reduction
    )


def dft_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Dynamic Fine-Tuning (Wu et al. 2025): NLL weighted by ``sg[q_t]``; identical to MixCE with η = 0.

    Args and Returns as :func:`mle_loss`.
    """
    return mixce_loss(
        logits, labels, 0.0, ignore_index=ignore_index, num_items_in_batch=num_items_in_batch, reduction=reduction
    )


def tailr_loss(
    logits: Tensor,
    labels: Tensor,
    gamma: float,
    w_min: float = 0.0,
    label_smoothing: float = 0.0,
    *,
    ignore_index: int = -100,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """TaiLr (Ji et al., ICLR 2023), in the convention of the authors' code (thu-coai/TaiLr).

    ``w_t = clamp(q_t / (γ + (1−γ) q_t), w_min, 1)`` under stop-gradient, and

    ``loss = (1−ε) Σ_t w_t ℓ_t + (ε/V) Σ_t Σ_v −log q(v | y_<t)``  (ε = ``label_smoothing``; the smoothing
    term is not weighted, as in the reference criterion). ``gamma=0`` is MLE; the authors' long-text setting
    is ``gamma=1e-7, w_min=0.2``.

    Args:
        logits: ``(B, T, V)`` scores; ``logits[:, t]`` scores ``labels[:, t]``.
        labels: ``(B, T)`` gold ids, ``ignore_index`` where ignored.
        gamma: density-ratio threshold γ in ``[0, 1]``.
        w_min: lower clamp of the weight, in ``[0, 1]``.
        label_smoothing: ε in ``[0, 1)``.
        ignore_index, num_items_in_batch, reduction: as :func:`mle_loss`.

    Returns:
        Scalar fp32 loss.
    """
    _check_unit_interval("gamma", gamma, "gamma=0 is MLE; the TaiLr paper used 1e-7 for long text")
    _check_unit_interval("w_min", w_min, "it is the floor of the token weight (the paper used 0.2)")
    if not (0.0 <= float(label_smoothing) < 1.0):
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}; 0 disables it")
    gamma, w_min, eps = float(gamma), float(w_min), float(label_smoothing)

    def weight(q: Tensor) -> Tensor:
        # log-space ratio is exact for tiny q; an infinite ratio (γ=0, q underflow) is clamped to 1.
        w = torch.exp(torch.log(q) - torch.log(gamma + (1.0 - gamma) * q))
        return torch.nan_to_num(w, nan=1.0).clamp(min=w_min, max=1.0)

    # γ = 0 makes every weight q/q = 1: plain MLE, computed without the ratio.
    main = token_weighted_loss(
        logits, labels, None if gamma == 0.0 else weight, ignore_index=ignore_index, reduction="none"
    )  # (B, T)
    mask = labels.ne(ignore_index)
    tok = (1.0 - eps) * main
    if eps > 0.0:
        logp = torch.log_softmax(logits.double() if logits.dtype == torch.float64 else logits.float(), dim=-1)
        smooth = -logp.mean(dim=-1) * mask  # (ε/V) Σ_v −log q_v
        tok = tok + eps * smooth
    return _reduce(tok, mask.sum(), reduction, num_items_in_batch)
