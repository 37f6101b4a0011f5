"""Metrics for tasks whose true distribution P is known (tasks/): the two cross-entropies MixCE trades off.

* reverse cross-entropy ``−E_{x∼Q} log P(x)``: true-P NLL of *generated* sequences (quality; what MixCE targets);
* forward cross-entropy ``−E_{x∼P} log Q(x)``: model NLL on *data* (coverage; what MLE minimises).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def true_nll(samples: Sequence[Sequence[int]], true_logprob: Callable[[Sequence[int]], float],
             per_token: bool = False) -> dict:
    """Reverse cross-entropy estimate: mean ``−log P(x)`` over model samples under the task's true P.

    Args:
        samples: generated sequences (as the task's ``true_logprob`` expects them).
        true_logprob: ``x -> log P(x)``; may return ``-inf`` for sequences P cannot produce.
        per_token: also divide by sequence lengths (nats per token).

    Returns:
        ``{"nll": mean −log P (finite samples), "impossible_fraction": share with P(x) = 0, "n": count}``,
        plus ``"nll_per_token"`` when asked.
    """
    if len(samples) == 0:
        raise ValueError("no samples given")
    vals = [float(true_logprob(s)) for s in samples]
    finite = [(v, len(s)) for v, s in zip(vals, samples) if math.isfinite(v)]
    out = {
        "nll": -sum(v for v, _ in finite) / len(finite) if finite else math.inf,
        "impossible_fraction": 1.0 - len(finite) / len(vals),
        "n": len(vals),
    }
    if per_token:
        toks = sum(n for _, n in finite)
        out["nll_per_token"] = -sum(v for v, _ in finite) / toks if toks else math.inf
    return out
