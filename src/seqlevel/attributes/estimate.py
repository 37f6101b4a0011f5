"""Inference with a CAT model (notes §2): estimates, all candidates in one pass, credit and counterfactuals.

Notation: ``P(a | x≤t)`` is the head at position ``t-1`` gathered at the realised ``x_t`` (the attribute once
``x_t`` is chosen); ``E_t = Σ_v p(v | x<t) P(a | x<t, v)`` is the value *before* ``x_t`` is chosen, and the
per-token credit is ``c_t = P(a | x≤t) − E_t`` (an advantage: 0 in expectation under the model's own ``p``).
Distributions are class probabilities ``(…, K)``, or ``(mean, variance)`` for numeric heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqlevel.attributes.head import to_distribution
from seqlevel.attributes.model import AttributeModel


@torch.no_grad()
def expected_attribute(head, hidden: torch.Tensor, logits: torch.Tensor, kind: str, chunk: int = 256) -> torch.Tensor:
    """``Σ_v p(v | x≤t) P(· | x≤t, v)`` at every position, in chunks of positions (peak memory ``chunk·V·n_out``).

    Args:
        head: the :class:`~seqlevel.attributes.AttributeHead`.
        hidden: ``(B, T, d)`` trunk states; logits: ``(B, T, V)`` token logits at the same positions.
        kind: head kind. chunk: positions per chunk.

    Returns:
        ``(B, T, K)`` class probabilities, or ``(B, T, 2)`` = mixture mean and variance for numeric heads.
    """
    B, T, d = hidden.shape
    h, lg = hidden.reshape(B * T, d), logits.reshape(B * T, -1)
    outs = []
    for s in range(0, B * T, chunk):
        p = lg[s:s + chunk].float().softmax(-1)  # (n, V)
        dist = to_distribution(head.all_candidates(h[s:s + chunk]), kind)  # (n, V, K)
        if kind == "numeric":
            mean = (p[..., None] * dist[..., 0:1]).sum(1)
            second = (p[..., None] * (dist[..., 1:2] + dist[..., 0:1] ** 2)).sum(1)  # law of total variance
            outs.append(torch.cat([mean, second - mean**2], -1))
        else:
            outs.append(torch.einsum("nv,nvk->nk", p, dist))
    return torch.cat(outs, 0).view(B, T, -1)


@torch.no_grad()
def class_probability(head, hidden: torch.Tensor, target: int, chunk: int = 32,
                      out: torch.Tensor | None = None) -> torch.Tensor:
    """``P(a = target | x≤t, v)`` for every candidate ``v`` at every position, without the ``(B, T, V, K)`` tensor.

    Equals ``to_distribution(head.all_candidates(hidden), kind)[..., target]`` (up to float rounding); see
    :meth:`~seqlevel.attributes.AttributeHead.class_probability` for how.

    Args:
        head: the :class:`~seqlevel.attributes.AttributeHead` (binary or categorical).
        hidden: ``(B, T, d)`` trunk states.
        target: the class asked for.
        chunk: positions per block (extra memory ``chunk·V`` beyond the output).
        out: optional ``(B, T, V)`` tensor to write into (e.g. the logits once ``p`` is taken from them), saving a
            fresh ``(B, T, V)`` allocation.

    Returns:
        ``(B, T, V)`` probabilities.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return head.class_probability(hidden, target, chunk=chunk, out=out)


@dataclass
class TopCandidates:
    """The ``k`` most likely next tokens at each position: ``ids``/``probs (B, T, k)`` (p(v), descending) and
    ``attribute (B, T, k, K)`` = P(a | x≤t, v) for those v only (``(mean, variance)`` for numeric heads)."""

    ids: torch.Tensor
    probs: torch.Tensor
    attribute: torch.Tensor


@torch.no_grad()
def top_candidates(head, hidden: torch.Tensor, logits: torch.Tensor, k: int, kind: str) -> TopCandidates:
    """The attribute of the top-``k`` candidates of p at every position (what steering over the top-k and
    counterfactuals read), ``O(B·T·k)`` head work instead of ``O(B·T·V)``.

    Args:
        head: the :class:`~seqlevel.attributes.AttributeHead`.
        hidden: ``(B, T, d)`` trunk states; logits: ``(B, T, V)`` token logits at the same positions.
        k: candidates per position, ``1 <= k <= V``.
        kind: head kind.

    Returns:
        :class:`TopCandidates`; ``attribute`` equals the full all-candidates distribution gathered at ``ids``.
    """
    V = logits.shape[-1]
    if not 1 <= k <= V:
        raise ValueError(f"k must be in [1, {V}] (the vocabulary), got {k}")
    probs, ids = logits.float().softmax(-1).topk(k, dim=-1)  # (B, T, k) each
    return TopCandidates(ids=ids, probs=probs, attribute=to_distribution(head.at_candidates(hidden, ids), kind))


def _last_index(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is None:
        return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
    if bool((attention_mask[:, -1] == 1).all()):  # left padding or none: the last column is the last token
        return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
    return attention_mask.sum(1) - 1  # right padding


@dataclass
class Candidates:
    """All candidates after a prefix: ``probs (B, V)`` = p(v | prefix), ``attribute (B, V, K)`` = P(a | prefix, v)."""

    probs: torch.Tensor
    attribute: torch.Tensor


@torch.no_grad()
def candidates(model: AttributeModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Candidates:
    """Every candidate's ``(p(v), P(a | v))`` after each prefix, from one forward pass.

    Args:
        model: an :class:`AttributeModel`.
        input_ids: ``(B, L)`` prefixes (left- or right-padded) or ``(L,)``.
        attention_mask: ``(B, L)``; default all ones.

    Returns:
        :class:`Candidates` at each row's last real token.
    """
    if input_ids.ndim == 1:
        input_ids = input_ids[None]
    out = model(input_ids, attention_mask)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    last = _last_index(input_ids, attention_mask)
    h, lg = out.hidden[rows, last], out.logits[rows, last]  # (B, d), (B, V)
    return Candidates(probs=lg.float().softmax(-1), attribute=to_distribution(model.head.all_candidates(h), model.kind))


@dataclass
class AttributeTrace:
    """Along a sequence, position by position (index 0 has no estimate and holds NaN).

    Attributes:
        estimate: ``(B, T, K)`` P(a | x≤t).
        expected: ``(B, T, K)`` E_t = Σ_v p(v | x<t) P(a | x<t, v), or ``None`` when not asked for.
        credit: ``(B, T, K)`` c_t = estimate − expected, or ``None``.
        token_probs: ``(B, T)`` p(x_t | x<t).
    """

    estimate: torch.Tensor
    expected: torch.Tensor | None
    credit: torch.Tensor | None
    token_probs: torch.Tensor


@torch.no_grad()
def trace(model: AttributeModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
          with_credit: bool = True, chunk: int = 256) -> AttributeTrace:
    """Attribute estimate (and credit) at every position of each sequence, from one forward pass.

    Args:
        model: an :class:`AttributeModel`.
        input_ids: ``(B, T)`` sequences (or ``(T,)``); attention_mask: ``(B, T)`` (padding positions are garbage).
        with_credit: also compute E_t and the credit (needs all V candidates at each position, chunked).
        chunk: positions per chunk for the all-candidates pass.

    Returns:
        :class:`AttributeTrace`.
    """
    if input_ids.ndim == 1:
        input_ids = input_ids[None]
    out = model(input_ids, attention_mask)
    B, T = input_ids.shape
    nxt = input_ids[:, 1:]
    raw = model.head.gathered(out.hidden[:, :-1], nxt)  # (B, T-1, n_out)
    est = to_distribution(raw, model.kind)
    K = est.shape[-1]
    nan = torch.full((B, 1, K), float("nan"), device=est.device)
    estimate = torch.cat([nan, est], 1)
    logp = out.logits[:, :-1].float().log_softmax(-1).gather(-1, nxt[..., None]).squeeze(-1)
    token_probs = torch.cat([torch.full((B, 1), float("nan"), device=est.device), logp.exp()], 1)
    expected = credit = None
    if with_credit:
        e = expected_attribute(model.head, out.hidden[:, :-1], out.logits[:, :-1], model.kind, chunk)
        expected = torch.cat([nan, e], 1)
        credit = estimate - expected
    return AttributeTrace(estimate=estimate, expected=expected, credit=credit, token_probs=token_probs)


@dataclass
class Counterfactual:
    """One alternative at a position: its id, p(v | x<t), P(a | x<t, v) and the delta to the realised token."""

    token_id: int
    prob: float
    attribute: list[float]
    delta: list[float]


@torch.no_grad()
def counterfactuals(model: AttributeModel, input_ids: torch.Tensor, position: int, *,
                    alternatives: list[int] | None = None, top: int = 5, target: int | None = None) -> list[Counterfactual]:
    """Δ(x_t → v) = P(a | x<t, v) − P(a | x<t, x_t) for alternatives v at ``position`` (same forward pass).

    Args:
        model: an :class:`AttributeModel`.
        input_ids: ``(T,)`` one sequence.
        position: t ≥ 1, the position whose token is swapped.
        alternatives: candidate ids; default the ``top`` most likely under p(· | x<t).
        top: how many alternatives when none are given.
        target: class index to sort by (largest |Δ| of that class first); default: sort by p.

    Returns:
        A list of :class:`Counterfactual`, the realised token first (delta 0).
    """
    ids = input_ids.reshape(-1)
    if not 1 <= position < ids.shape[0]:
        raise ValueError(f"position must be in [1, {ids.shape[0] - 1}] (a token with a prefix before it), got {position}")
    c = candidates(model, ids[None, :position])
    probs, attr = c.probs[0], c.attribute[0]  # (V,), (V, K)
    if target is not None and not 0 <= target < attr.shape[-1]:
        raise ValueError(f"target class {target} is outside the head's classes [0, {attr.shape[-1]})")
    real = int(ids[position])
    if alternatives is None:
        alternatives = [int(v) for v in probs.topk(min(top + 1, probs.shape[0])).indices if int(v) != real][:top]
    V = probs.shape[0]
    for v in alternatives:
        if not 0 <= v < V:
            raise ValueError(f"alternative token id {v} is outside the vocabulary [0, {V})")
    rows = []
    for v in [real, *alternatives]:
        rows.append(Counterfactual(v, float(probs[v]), attr[v].tolist(), (attr[v] - attr[real]).tolist()))
    if target is not None:
        rows[1:] = sorted(rows[1:], key=lambda r: -abs(r.delta[target]))
    return rows
