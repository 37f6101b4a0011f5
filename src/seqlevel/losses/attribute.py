"""CAT attribute losses (notes §1.3): ``L = CE + λ · L_attr (+ μ · L_consistency)``.

``L_attr`` is outcome regression: the *sequence* label ``a`` supervises the head at every position ``t``, gathered
at the realised next token ``x_{t+1}`` (the caller passes head outputs already gathered, ``(B, T, n_out)``, so no
``(B, T, V, K)`` tensor is ever built; :meth:`seqlevel.attributes.AttributeHead.gathered` does the gather).

* binary: BCE on one logit; categorical: CE over K logits; numeric: Gaussian NLL with the head's mean and
  log variance, ``½ (log σ² + (a − μ)² / σ²) + ½ log 2π``.

``L_consistency`` is the NADO-style one-step term that no published CAT has (notes §1.3 [I]): the head at ``t``
for the realised ``x_{t+1}`` must match the stop-gradient expectation over the next step,
``Σ_v p(v | x≤t+1) · P(a | x≤t+1, v)``; a KL for classes, a squared error on the mean for numeric heads.

Conventions as in :mod:`.token_weighted`: ``mask`` selects the positions with a target; ``reduction="mean"``
divides by ``num_items_in_batch`` when given (tokens in the optimizer step), else by the masked count.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from seqlevel.losses.token_weighted import mle_loss

Tensor = torch.Tensor
_KINDS = ("binary", "categorical", "numeric")


def check_attribute_labels(attribute_labels: Tensor, kind: str, num_classes: int | None = None) -> None:
    """Raise a ``ValueError`` for labels a ``kind`` head cannot take (float for classes, class ≥ K, non-finite)."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    if attribute_labels.dim() != 1:
        raise ValueError(f"attribute_labels must be one label per sequence, shape (B,), got "
                         f"{tuple(attribute_labels.shape)}")
    if kind == "numeric":
        if not torch.isfinite(attribute_labels.float()).all():
            raise ValueError("numeric attribute_labels must be finite; drop or impute the NaN/inf labels")
        return
    if attribute_labels.is_floating_point():
        whole = bool((attribute_labels == attribute_labels.round()).all())
        hint = "cast them with .long()" if whole else "use kind='numeric' for a real-valued attribute"
        raise ValueError(f"a {kind} head needs integer class labels, got dtype {attribute_labels.dtype}; {hint}")
    K = 2 if kind == "binary" else num_classes
    if K is None:
        raise ValueError("num_classes is needed to check categorical labels")
    bad = (attribute_labels < 0) | (attribute_labels >= K)
    if bool(bad.any()):
        v = int(attribute_labels[bad][0])
        raise ValueError(f"attribute label {v} is outside the head's classes [0, {K}); a {kind} head with "
                         f"K={K} takes labels 0..{K - 1} (map e.g. stars 1-5 to 0-4)")


def _reduce(per_pos: Tensor, mask: Tensor, reduction: str, num_items_in_batch) -> Tensor:
    per_pos = per_pos * mask
    if reduction == "none":
        return per_pos
    total = per_pos.sum()
    if reduction == "sum":
        return total
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    denom = num_items_in_batch if num_items_in_batch is not None else mask.sum()
    if not torch.is_tensor(denom):
        denom = torch.tensor(float(denom), device=total.device)
    return total / denom.to(total.device, total.dtype).clamp(min=1)


def attribute_loss(
    attr: Tensor,
    attribute_labels: Tensor,
    mask: Tensor,
    kind: str,
    num_classes: int | None = None,
    *,
    reduction: str = "mean",
    num_items_in_batch: Tensor | int | None = None,
) -> Tensor:
    """Outcome-regression loss of the head at the realised next token, with the sequence label everywhere.

    Args:
        attr: ``(B, T, n_out)`` head outputs gathered at ``x_{t+1}`` (n_out = 1 binary, K categorical, 2 numeric).
        attribute_labels: ``(B,)`` one label per sequence: class ids (long) or real values (numeric).
        mask: ``(B, T)`` bool, True where position t has a real next token.
        kind: ``"binary"``, ``"categorical"`` or ``"numeric"``.
        num_classes: K for a categorical head (defaults to ``attr.shape[-1]``).
        reduction / num_items_in_batch: as in :mod:`.token_weighted`.

    Returns:
        Scalar loss (or ``(B, T)`` for ``reduction="none"``), computed in fp32.
    """
    if attr.dim() != 3 or attr.shape[:2] != mask.shape:
        raise ValueError(f"attr must be (B, T, n_out) matching mask (B, T); got {tuple(attr.shape)} and "
                         f"{tuple(mask.shape)}")
    if kind == "categorical" and num_classes is None:
        num_classes = attr.shape[-1]
    check_attribute_labels(attribute_labels, kind, num_classes)
    want = {"binary": 1, "categorical": num_classes, "numeric": 2}[kind]
    if attr.shape[-1] != want:
        raise ValueError(f"a {kind} head outputs {want} channels per candidate, got attr with {attr.shape[-1]}")
    attr = attr.float()
    B, T, n = attr.shape
    y = attribute_labels.to(attr.device)
    if kind == "binary":
        target = y.float()[:, None].expand(B, T)
        per_pos = F.binary_cross_entropy_with_logits(attr[..., 0], target, reduction="none")
    elif kind == "categorical":
        per_pos = F.cross_entropy(attr.reshape(B * T, n), y.long()[:, None].expand(B, T).reshape(-1),
                                  reduction="none").view(B, T)
    else:
        mu, log_var = attr[..., 0], attr[..., 1]
        per_pos = 0.5 * (log_var + (y.float()[:, None] - mu) ** 2 * torch.exp(-log_var) + math.log(2 * math.pi))
    return _reduce(per_pos, mask.to(attr.device).float(), reduction, num_items_in_batch)


def consistency_loss(
    attr: Tensor,
    expected_next: Tensor,
    mask: Tensor,
    kind: str,
    *,
    reduction: str = "mean",
    num_items_in_batch: Tensor | int | None = None,
) -> Tensor:
    """NADO-style one-step consistency: head at t (realised x_{t+1}) vs the expectation at t+1.

    Args:
        attr: ``(B, T, n_out)`` raw head outputs gathered at ``x_{t+1}`` (the prediction being trained).
        expected_next: ``(B, T, K)`` target distribution at position t, i.e. ``Σ_v p(v|x≤t+1) P(·|x≤t+1, v)``
            (class probabilities; for numeric ``(mean, variance)`` of the mixture, only the mean is used). It is
            treated as a constant (gradient stopped).
        mask: ``(B, T)`` bool, True where both x_{t+1} and x_{t+2} are real tokens.
        kind: head kind.

    Returns:
        Scalar ``KL(target ‖ prediction)`` (classes) or ``½ (μ_t − E μ_{t+1})²`` (numeric), fp32.
    """
    attr, tgt = attr.float(), expected_next.detach().float()
    if kind == "binary":
        p = tgt[..., 1].clamp(1e-6, 1 - 1e-6)
        logq1, logq0 = F.logsigmoid(attr[..., 0]), F.logsigmoid(-attr[..., 0])
        per_pos = p * (p.log() - logq1) + (1 - p) * ((1 - p).log() - logq0)
    elif kind == "categorical":
        t = tgt.clamp_min(1e-12)
        per_pos = (t * (t.log() - attr.log_softmax(-1))).sum(-1)
    elif kind == "numeric":
        per_pos = 0.5 * (attr[..., 0] - tgt[..., 0]) ** 2
    else:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    return _reduce(per_pos, mask.to(attr.device).float(), reduction, num_items_in_batch)


def cat_loss(
    logits: Tensor,
    labels: Tensor,
    attr: Tensor,
    attribute_labels: Tensor,
    kind: str,
    lam: float = 0.15,
    *,
    num_classes: int | None = None,
    num_items_in_batch: Tensor | int | None = None,
) -> Tensor:
    """The CAT objective ``CE + λ · L_attr`` on aligned tensors (caller shifts, as for :func:`mle_loss`).

    Args:
        logits: ``(B, T, V)`` token logits at positions 0..T-1, scoring ``labels``.
        labels: ``(B, T)`` next tokens, ``-100`` where there is none.
        attr: ``(B, T, n_out)`` head outputs gathered at ``labels`` (any id where ``labels`` is -100).
        attribute_labels: ``(B,)`` sequence labels.
        kind / num_classes: head kind and K.
        lam: λ ≥ 0 (notes §1.3: 0.15 was best for the Amazon LM experiments).

    Returns:
        Scalar loss.
    """
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}; 0 is plain MLE, the CAT paper used 0.15")
    ce = mle_loss(logits, labels, num_items_in_batch=num_items_in_batch)
    mask = labels != -100
    return ce + lam * attribute_loss(attr, attribute_labels, mask, kind, num_classes,
                                     num_items_in_batch=num_items_in_batch)
