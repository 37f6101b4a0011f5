"""The SequenceMatch and CAT cases of ``seqlevel bench memory``: same ``(hidden, weight, labels, chunk)`` inputs.

* ``sequencematch``: the labels become one data row and one model row of a truncated trajectory (every slot a
  transition), so every slot needs ``V`` and ``Q``, as many projected slots as the MLE has targets; the loss is
  the trainer's ``½ BC + ½ SM`` from one chunked pass.
* ``attribute``: CAT's ``CE + 0.15 · L_attr`` with a binary head gathered at the labels; the head is built once
  per (V, d) outside the measurement, like the output projection. Its rank is ``min(32, d // 8)`` (32 at the
  default d = 256, the CAT setting): the head's ``(V, r)`` key table gets a gradient like the ``(V, d)``
  projection, so a rank comparable to d (only possible in toy widths) would measure the head, not the loss.
"""

from __future__ import annotations

import torch

from seqlevel.losses.chunked_attribute import chunked_cat_loss
from seqlevel.losses.chunked_sequencematch import chunked_sequencematch_loss

Tensor = torch.Tensor
_HEADS: dict[tuple[int, int], torch.nn.Module] = {}


def _sm_batch(labels: Tensor) -> dict[str, Tensor]:
    B, T = labels.shape
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[:, -1] = False  # the last slot holds the final state of a truncated trajectory
    return {"labels": labels.masked_fill(~valid, -100), "valid": valid,
            "step": torch.arange(T).expand(B, T).contiguous(), "eos_abs": torch.zeros(B, T, dtype=torch.bool),
            "is_data": torch.arange(B) % 2 == 0}


def sequencematch_case(h: Tensor, w: Tensor, y: Tensor, chunk: int) -> Tensor:
    """``½ BC + ½ SM`` (chi2_mix) from hidden states on a synthetic data + model batch."""
    return 0.5 * chunked_sequencematch_loss(h, w, _sm_batch(y), chunk_size=chunk, bc_weight=1.0)


def _head(V: int, d: int) -> torch.nn.Module:
    from seqlevel.attributes.head import AttributeHead, AttributeHeadConfig

    if (V, d) not in _HEADS:
        torch.manual_seed(0)
        _HEADS.clear()  # one vocabulary at a time
        cfg = AttributeHeadConfig(kind="binary", vocab_size=V, hidden_size=d, rank=max(1, min(32, d // 8)))
        _HEADS[(V, d)] = AttributeHead(cfg)
    return _HEADS[(V, d)]


def prepare_attribute_head(V: int, d: int) -> None:
    """Build the case's head before measuring (its parameters are inputs, like the output projection)."""
    _head(V, d)


def attribute_case(h: Tensor, w: Tensor, y: Tensor, chunk: int) -> Tensor:
    """CAT ``CE + 0.15 · L_attr`` (binary head gathered at the labels) from hidden states."""
    head = _head(w.shape[0], h.shape[-1])
    attr = head.gathered(h, y.clamp(min=0))  # (B, T, 1)
    a = torch.arange(y.shape[0]) % 2  # (B,) one binary label per sequence
    return chunked_cat_loss(h, w, y, attr, a, "binary", 0.15, chunk_size=chunk)
