"""CAT steering as ``transformers.LogitsProcessor``s: steer ``model.generate`` (sampling, greedy, beam search).

The product rule and the satisficing rule need no ``<bksp>``, so they fit Hugging Face's generation loop; the
backtracking rule does not (see :class:`seqlevel.attributes.steering.BacktrackRule`) and stays on
:func:`seqlevel.decoding.generate`. The math is the same functions the decoder's steer rules call
(:func:`~seqlevel.attributes.steering.product_scores`, :func:`~seqlevel.attributes.steering.satisficing_scores`),
so greedy decoding gives the same tokens on both paths.

A ``LogitsProcessor`` sees only ``(input_ids, scores)``, but the head reads the trunk's last hidden state. Each
processor therefore puts a forward pre-hook on the base model's output embedding (``lm_head``): its input *is*
``hidden_states[-1]`` (after the final norm), so every forward that ``generate`` runs leaves the ``(B, H)`` state
of the position being continued where the processor finds it. No extra forward pass, any cache, any batch.

Example::

    from transformers import LogitsProcessorList
    from seqlevel.attributes import AttributeTarget, ProductLogitsProcessor

    steer = ProductLogitsProcessor([AttributeTarget(sentiment, target=1, weight=2.0),   # two CAT heads on the
                                    AttributeTarget(topic, target=3, weight=0.5)])      # same trunk
    out = sentiment.base.generate(ids, attention_mask=am, logits_processor=LogitsProcessorList([steer]),
                                  do_sample=True, max_new_tokens=40)
    steer.remove()   # or use it as a context manager: ``with ProductLogitsProcessor(...) as steer: ...``
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from seqlevel.attributes.steering import (
    check_alpha,
    check_satisficing,
    check_target,
    product_scores,
    satisficing_scores,
    target_probs,
)


@dataclass
class AttributeTarget:
    """One factor of a combined rule: ``P(a* = target | x<t, v)^weight`` from ``model``'s head.

    Attributes:
        model: an :class:`~seqlevel.attributes.AttributeModel`; its ``base`` must be the model whose ``generate``
            runs (several heads may share one base).
        target: the wanted class of that head (binary: 1 = present; stars 1-5: star − 1).
        weight: the exponent ``α ≥ 0`` (0: this factor has no effect).
    """

    model: object
    target: int
    weight: float = 1.0


class _HiddenStash:
    """Forward pre-hook on an output embedding that keeps the ``(B, H)`` input at the last position."""

    def __init__(self, module: torch.nn.Module):
        self.hidden: torch.Tensor | None = None
        self.calls = 0  # forwards seen, so a processor can tell a fresh state from a stale one
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.hidden = args[0][..., -1, :].detach()  # (B, T, H) or (B, 1, H) with logits_to_keep -> (B, H)
        self.calls += 1


class _CATProcessor(LogitsProcessor):
    """Shared plumbing: the terms, one hidden-state stash per distinct base, and hook removal."""

    def __init__(self, targets: AttributeTarget | Sequence[AttributeTarget]):
        targets = [targets] if isinstance(targets, AttributeTarget) else list(targets)
        if not targets:
            raise ValueError("no AttributeTarget given; pass at least one AttributeTarget(model, target, weight)")
        for t in targets:
            if not isinstance(t, AttributeTarget):
                raise ValueError(f"expected AttributeTarget(model, target, weight), got {type(t).__name__}")
            check_target(t.model, t.target)
            check_alpha(t.weight)
        self.targets = targets
        self._stashes: dict[int, _HiddenStash] = {}
        self._seen: dict[int, int] = {}
        for t in targets:
            lm_head = t.model.base.get_output_embeddings()
            if lm_head is None:
                raise ValueError(f"{type(t.model.base).__name__} has no output embedding (lm_head) to read the "
                                 "trunk's last hidden state from; steer it with seqlevel.decoding.generate instead")
            if id(lm_head) not in self._stashes:
                self._stashes[id(lm_head)] = _HiddenStash(lm_head)
                self._seen[id(lm_head)] = 0

    def _hidden(self, t: AttributeTarget, rows: int) -> torch.Tensor:
        key = id(t.model.base.get_output_embeddings())
        stash = self._stashes[key]
        if stash.hidden is None or stash.calls == self._seen[key]:
            raise ValueError("no forward pass of the head's base model ran since the last step; call generate on "
                             "the AttributeModel's own base (cat.base.generate(...)) and keep speculative/assisted "
                             "decoding off")
        if stash.hidden.shape[0] != rows:
            raise ValueError(f"the base's last forward had {stash.hidden.shape[0]} rows but generate scores {rows}; "
                             "the processor must steer the same model it reads (cat.base.generate(...))")
        return stash.hidden

    def _attrs(self, scores: torch.Tensor) -> list[torch.Tensor]:
        """``(R, V)`` P(a*_i | x<t, v) per term, read from the state the last forward left."""
        out = [target_probs(t.model, self._hidden(t, scores.shape[0]), t.target) for t in self.targets]
        for key, stash in self._stashes.items():
            self._seen[key] = stash.calls
        return out

    def remove(self) -> None:
        """Take the hooks off the base model(s); the processor cannot be used afterwards."""
        for stash in self._stashes.values():
            stash.handle.remove()
        self._stashes.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class ProductLogitsProcessor(_CATProcessor):
    """The CAT product rule as a ``LogitsProcessor``: ``log p(v) + Σ_i α_i · log P_i(a*_i | x<t, v)``.

    With one target of weight α this is :class:`seqlevel.attributes.ProductRule` (greedy decoding gives the same
    tokens as ``seqlevel.decoding.generate(steer=ProductRule(model, target, alpha))``). Several targets multiply
    their likelihoods, each raised to its weight: several heads on one trunk, or several classes of one head.
    Returned scores are unnormalised log-probabilities; temperature/top-k/top-p are applied after it by
    ``generate``, as in our decoder.

    Args:
        targets: one :class:`AttributeTarget` or a list of them.
    """

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """``input_ids (R, T)``, ``scores (R, V)`` -> steered ``(R, V)`` scores in ``scores.dtype``."""
        attrs = self._attrs(scores)
        return product_scores(scores, attrs, [float(t.weight) for t in self.targets]).to(scores.dtype)


class SatisficingLogitsProcessor(_CATProcessor):
    """The CAT demo's satisficing rule as a ``LogitsProcessor`` (defaults k = 20, ε = 0.001, τ = 0.8).

    The attribute score of a candidate is the weighted product ``Π_i P_i(a*_i | x<t, v)^{w_i}`` (one target of
    weight 1: :class:`seqlevel.attributes.SatisficingRule` exactly); candidates in the top-k by ``p`` with
    ``p ≥ ε`` and score ``≥ τ`` keep their log-probability, the rest are ``-inf``; if none qualifies the pool's
    best-scoring candidate is forced.

    Args:
        targets: one :class:`AttributeTarget` or a list of them.
        top_k, epsilon, tau: as in :class:`~seqlevel.attributes.SatisficingRule`.
    """

    def __init__(self, targets, top_k: int = 20, epsilon: float = 1e-3, tau: float = 0.8):
        check_satisficing(top_k, epsilon, tau)
        super().__init__(targets)
        self.top_k, self.epsilon, self.tau = top_k, epsilon, tau

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """``input_ids (R, T)``, ``scores (R, V)`` -> ``(R, V)`` scores with the non-qualifying at ``-inf``."""
        attrs = self._attrs(scores)
        score = None
        for attr, t in zip(attrs, self.targets):
            factor = attr if t.weight == 1 else attr.clamp_min(1e-12) ** float(t.weight)
            score = factor if score is None else score * factor
        return satisficing_scores(scores, score, self.top_k, self.epsilon, self.tau).to(scores.dtype)
