"""The Monte-Carlo baseline for attribute estimation (notes §2.1): roll the LM out N times, label, average.

This is what CAT replaces: ``N × (T − t)`` decoding steps per prefix instead of one pass. Rollouts use
:func:`seqlevel.decoding.generate` (batched, KV cache, seeded), so the comparison is against a fair decoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from seqlevel.decoding import generate


@torch.no_grad()
def monte_carlo_estimate(
    lm,
    prefixes: Sequence[Sequence[int]],
    label_fn: Callable[[list[int]], int | None],
    num_classes: int,
    *,
    n_rollouts: int = 64,
    max_new_actions: int,
    eos_token_id: int | Sequence[int] | None,
    pad_token_id: int = 0,
    batch_size: int = 2048,
    seed: int = 0,
    temperature: float = 1.0,
) -> np.ndarray:
    """Estimate ``P(a | prefix)`` by sampling ``n_rollouts`` continuations of each prefix with ``lm``.

    Args:
        lm: a causal LM (e.g. ``AttributeModel.base``).
        prefixes: token-id lists.
        label_fn: ``label_fn(prefix + continuation) -> class index or None`` (None: the rollout gave no label,
            e.g. it hit the length cap; such rollouts are left out of the average).
        num_classes: K.
        n_rollouts: N per prefix. max_new_actions: rollout length cap.
        eos_token_id: id(s) that end a rollout. pad_token_id: used for left padding.
        batch_size: rollouts per decoder call. seed: base seed (each batch gets ``seed + i``).

    Returns:
        ``(len(prefixes), K)`` label frequencies (uniform for a prefix with no labelled rollout).
    """
    if n_rollouts < 1:
        raise ValueError(f"n_rollouts must be >= 1, got {n_rollouts}")
    device = next(lm.parameters()).device
    jobs = [(i, list(p)) for i, p in enumerate(prefixes) for _ in range(n_rollouts)]
    counts = np.zeros((len(prefixes), num_classes))
    for bi, s in enumerate(range(0, len(jobs), batch_size)):
        chunk = jobs[s:s + batch_size]
        W = max(len(p) for _, p in chunk)
        ids = torch.full((len(chunk), W), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), W), dtype=torch.long)
        for r, (_, p) in enumerate(chunk):  # left padding
            ids[r, W - len(p):] = torch.tensor(p)
            mask[r, W - len(p):] = 1
        out = generate(lm, ids.to(device), mask.to(device), max_new_actions=max_new_actions,
                       eos_token_id=eos_token_id, do_sample=True, temperature=temperature, seed=seed + bi)
        for (i, p), seq in zip(chunk, out.sequences):
            y = label_fn(p + list(seq))
            if y is not None:
                counts[i, y] += 1
    totals = counts.sum(1, keepdims=True)
    return np.where(totals > 0, counts / np.maximum(totals, 1), 1.0 / num_classes)
