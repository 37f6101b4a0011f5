"""Memory-lean CAT objective: ``CE + λ · L_attr`` with the CE fused with the output projection, chunked.

Only the CE part of :func:`seqlevel.losses.cat_loss` touches the vocabulary: the attribute head is read at the
realised next token (``AttributeHead.gathered``, ``(B, T, n_out)``), so ``L_attr`` never needs ``(B, T, V)``.
Replacing ``mle_loss(logits, labels)`` by :func:`seqlevel.losses.chunked.chunked_mle_loss` on hidden states
removes the last full-vocabulary tensor. The NADO consistency target (``expected_attribute``) needs every
candidate's probability and is already chunked over positions by its caller; it is not fused here.
"""

from __future__ import annotations

import torch

from seqlevel.losses.attribute import attribute_loss
from seqlevel.losses.chunked import chunked_mle_loss

Tensor = torch.Tensor


def chunked_cat_loss(
    hidden: Tensor,
    lm_head_weight: Tensor,
    labels: Tensor,
    attr: Tensor,
    attribute_labels: Tensor,
    kind: str,
    lam: float = 0.15,
    *,
    num_classes: int | None = None,
    lm_head_bias: Tensor | None = None,
    chunk_size: int = 1024,
    num_items_in_batch: Tensor | int | None = None,
) -> Tensor:
    """:func:`seqlevel.losses.cat_loss` from hidden states (equal values and gradients).

    Args:
        hidden: ``(B, T, d)`` final hidden states aligned with ``labels`` (``hidden[:, t]`` predicts
            ``labels[:, t]``; shift before calling).
        lm_head_weight: ``(V, d)`` output projection. lm_head_bias: optional ``(V,)``.
        labels: ``(B, T)`` next tokens, ``-100`` where there is none.
        attr: ``(B, T, n_out)`` head outputs gathered at ``labels``.
        attribute_labels: ``(B,)`` sequence labels. kind / num_classes / lam: as :func:`cat_loss`.
        chunk_size: target tokens per chunk of the CE.
        num_items_in_batch: target tokens in the optimizer step (gradient accumulation).

    Returns:
        Scalar fp32 loss.
    """
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}; 0 is plain MLE, the CAT paper used 0.15")
    ce = chunked_mle_loss(hidden, lm_head_weight, labels, lm_head_bias=lm_head_bias, chunk_size=chunk_size,
                          num_items_in_batch=num_items_in_batch)
    return ce + lam * attribute_loss(attr, attribute_labels, labels != -100, kind, num_classes,
                                     num_items_in_batch=num_items_in_batch)
