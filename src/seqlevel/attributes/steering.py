"""Steering rules for :func:`seqlevel.decoding.generate`'s ``steer`` hook, driven by a CAT attribute head.

Each rule is a callable ``rule(scores, ctx) -> scores`` with ``needs_hidden_states = True``: the decoder hands it
the trunk's last hidden state of every live row (``ctx.hidden_states[-1]``), the head turns it into
``P(a* | x<t, v)`` for every candidate ``v`` in one matmul, and the rule reshapes the scores.

* :class:`ProductRule` (notes §2.4 [I], FUDGE/NADO-style): ``log p(v) + α · log P(a* | v)``.
* :class:`SatisficingRule` (the CAT demo, notes §2.4 [P]): keep the top-k candidates by ``p`` with ``p ≥ ε``; among
  them those with ``P(a* | v) ≥ τ`` are sampled ∝ ``p``; if none qualifies, take the candidate with the highest
  attribute.
* :class:`BacktrackRule` (beyond the paper): when the last token's credit
  ``P(a* | x≤t) − Σ_v p(v | x<t) P(a* | x<t, v)`` fell below ``−threshold``, emit ``<bksp>`` (the decoder deletes
  the token), and ban that token at that state, so the model repairs a bad turn instead of continuing it.

The rule math lives in plain functions (:func:`check_target`, :func:`target_probs`, :func:`product_scores`,
:func:`satisficing_scores`) that the ``transformers.LogitsProcessor`` forms in
:mod:`seqlevel.attributes.logits_processor` call too, so both paths compute the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from seqlevel.attributes.head import to_distribution
from seqlevel.decoding import StepContext, force_action

_NEG = float("-inf")


def check_target(model, target: int) -> None:
    """Refuse a numeric head or a target that is not one of the head's classes (fix-it messages)."""
    kind, K = model.head.config.kind, model.head.config.num_classes
    if kind == "numeric":
        raise ValueError("steering needs a binary or categorical head (a target class); this head is numeric")
    if not isinstance(target, int) or not 0 <= target < K:
        raise ValueError(f"target class {target!r} is not one of the head's classes 0..{K - 1}; for a binary "
                         "head 1 is 'attribute present', for stars 1-5 pass star − 1")


@torch.no_grad()
def target_probs(model, hidden: torch.Tensor, target: int) -> torch.Tensor:
    """``P(a* | x<t, v)`` for every candidate ``v``: ``hidden (R, H)`` trunk states -> ``(R, V)``."""
    raw = model.head.all_candidates(hidden)  # (R, V, n_out)
    return to_distribution(raw, model.kind)[..., target]


def product_scores(scores: torch.Tensor, attrs, alphas) -> torch.Tensor:
    """``log p(v) + Σ_i α_i · log P_i(a*_i | v)`` (notes §2.4 [I]); one term is the plain product rule.

    Args:
        scores: ``(R, V)`` next-token logits (or log-probabilities).
        attrs: per term, ``(R, V)`` attribute probabilities ``P_i(a*_i | x<t, v)``.
        alphas: per term, the weight ``α_i ≥ 0``.

    Returns:
        ``(R, V)`` float32 steered log-scores (unnormalised).
    """
    out = scores.float().log_softmax(-1)
    for attr, alpha in zip(attrs, alphas):
        out = out + alpha * attr.clamp_min(1e-12).log()
    return out


def satisficing_scores(scores: torch.Tensor, attr: torch.Tensor, top_k: int, epsilon: float,
                       tau: float) -> torch.Tensor:
    """The CAT demo's satisficing rule on ``(R, V)`` scores and attribute probabilities ``attr (R, V)``.

    Keeps the top-k candidates by ``p`` with ``p ≥ ε``; those with ``attr ≥ τ`` keep their log-probability
    (sampling is then ∝ p among them), the rest get ``-inf``; a row where none qualifies is forced to the pool's
    highest-attribute candidate.
    """
    logp = scores.float().log_softmax(-1)  # (R, V)
    k = min(top_k, scores.shape[-1])
    top = torch.zeros_like(logp, dtype=torch.bool).scatter(-1, logp.topk(k, -1).indices, True)
    pool = top & (logp >= torch.log(torch.tensor(epsilon)))
    pool = torch.where(pool.any(-1, keepdim=True), pool, top)  # ε removed everything: fall back to top-k
    ok = pool & (attr >= tau)
    sample = torch.where(ok, logp, _NEG)  # sample ∝ p among the qualifying
    best = attr.masked_fill(~pool, _NEG).argmax(-1)  # none qualifies: the highest attribute in the pool
    fallback = torch.full_like(logp, _NEG).scatter(-1, best[:, None], 0.0)
    return torch.where(ok.any(-1, keepdim=True), sample, fallback)


def check_satisficing(top_k: int, epsilon: float, tau: float) -> None:
    """Refuse satisficing settings outside their ranges (k >= 1, ε and τ in [0, 1])."""
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}; it is the attribute probability a candidate needs "
                         "(the CAT demo used 0.8)")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")


def check_alpha(alpha: float) -> None:
    """Refuse a negative (or NaN) product-rule weight α."""
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}; 0 leaves the model unsteered, larger values "
                         "steer harder")


class _AttributeRule:
    needs_hidden_states = True

    def __init__(self, model, target: int | Sequence[int]):
        targets = [target] if isinstance(target, int) or not isinstance(target, Sequence) else list(target)
        if not targets:
            raise ValueError("no target class given; pass the wanted class (binary: 1 = attribute present)")
        for t in targets:
            check_target(model, t)
        self.model, self.target, self.targets = model, targets[0], targets

    def _hidden(self, ctx: StepContext) -> torch.Tensor:
        if ctx.hidden_states is None:
            raise ValueError("the steer hook got no hidden states; call generate(..., steer=rule) with this rule "
                             "(it sets needs_hidden_states) or output_hidden_states=True")
        return ctx.hidden_states[-1]

    def target_probs(self, ctx: StepContext) -> torch.Tensor:
        """``(R, V)`` P(a* | x<t, v) for the live rows (the first target)."""
        return target_probs(self.model, self._hidden(ctx), self.target)

    def all_target_probs(self, ctx: StepContext) -> list[torch.Tensor]:
        """Per target, ``(R, V)`` P(a*_i | x<t, v) for the live rows (one head pass for all of them)."""
        if len(self.targets) == 1:
            return [self.target_probs(ctx)]
        with torch.no_grad():
            dist = to_distribution(self.model.head.all_candidates(self._hidden(ctx)), self.model.kind)
        return [dist[..., t] for t in self.targets]


class ProductRule(_AttributeRule):
    """``p(v | x<t) · P(a* | x<t, v)^α`` (α = 0: unsteered; α = 1: Bayes conditioning if P is calibrated).

    The same rule as a ``transformers.LogitsProcessor`` (sampling, greedy or beam search with ``model.generate``,
    several heads or targets combined): :class:`seqlevel.attributes.ProductLogitsProcessor`.

    Args:
        model: the :class:`~seqlevel.attributes.AttributeModel` whose head scores candidates.
        target: the wanted class a*; several classes multiply their likelihoods (``Σ_i α_i · log P(a*_i | v)``,
            as :class:`~seqlevel.attributes.ProductLogitsProcessor` with several targets).
        alpha: α ≥ 0, one for all targets or one per target.
    """

    def __init__(self, model, target: int | Sequence[int], alpha: float | Sequence[float] = 1.0):
        super().__init__(model, target)
        alphas = [float(a) for a in alpha] if isinstance(alpha, Sequence) else [float(alpha)] * len(self.targets)
        if len(alphas) != len(self.targets):
            raise ValueError(f"{len(alphas)} alphas for {len(self.targets)} targets; give one alpha for all "
                             "targets or one per target")
        for a in alphas:
            check_alpha(a)
        self.alpha, self.alphas = alphas[0], alphas

    def __call__(self, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return product_scores(scores, self.all_target_probs(ctx), self.alphas)


class SatisficingRule(_AttributeRule):
    """The CAT demo's satisficing criterion (defaults: k = 20, ε = 0.001, τ = 0.8).

    As a ``transformers.LogitsProcessor``: :class:`seqlevel.attributes.SatisficingLogitsProcessor`.

    Args:
        model, target: as for :class:`ProductRule`.
        top_k: candidates considered, by p. epsilon: minimum p. tau: attribute threshold τ ∈ [0, 1].
    """

    def __init__(self, model, target: int | Sequence[int], top_k: int = 20, epsilon: float = 1e-3,
                 tau: float = 0.8):
        super().__init__(model, target)
        check_satisficing(top_k, epsilon, tau)
        self.top_k, self.epsilon, self.tau = top_k, epsilon, tau

    def __call__(self, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        attrs = self.all_target_probs(ctx)
        score = attrs[0]
        for a in attrs[1:]:  # several targets: the product of their probabilities, as SatisficingLogitsProcessor
            score = score * a
        return satisficing_scores(scores, score, self.top_k, self.epsilon, self.tau)


class BacktrackRule(_AttributeRule):
    """Attribute-guided backtracking: ``<bksp>`` when the last token's credit is below ``−threshold``.

    This rule has no ``transformers.LogitsProcessor`` form and stays on :func:`seqlevel.decoding.generate`:
    ``model.generate`` cannot delete a token from its KV cache (a processor only reshapes the next-token scores,
    and ``DynamicCache.crop`` would trim every row of the batch to one length), so a ``<bksp>`` there would stay in
    the context as an ordinary token. Our decoder deletes it exactly, per row (see :mod:`seqlevel.decoding.decoder`).

    Args:
        model, target: as for :class:`ProductRule`.
        threshold: how far (in probability of a*) the last token may pull the estimate below its expectation.
        inner: the rule that scores ordinary steps (e.g. a :class:`ProductRule`); ``None`` keeps the model's scores.
        max_backspaces: per-row budget of backspaces (then the rule stops backing up).

    The decoder must be called with ``backspace_id``; the rule never lets the model emit ``<bksp>`` by itself.
    State is per generate call (reset when ``ctx.step == 0``).
    """

    def __init__(self, model, target: int, threshold: float = 0.2, inner=None, max_backspaces: int = 8):
        if not isinstance(target, int):
            raise ValueError(f"the backtracking rule takes one target class, got {target!r}; steer towards several "
                             "classes with the product or satisficing rule")
        super().__init__(model, target)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}; it is a drop in probability of the "
                             "target attribute")
        if max_backspaces < 0:
            raise ValueError(f"max_backspaces must be >= 0, got {max_backspaces}")
        self.threshold, self.inner, self.max_backspaces = threshold, inner, max_backspaces
        self.backspaces = 0  # total over the last generate call, for reporting

    def _reset(self):
        self._prev: dict[int, tuple[int, torch.Tensor, float]] = {}  # row -> (live length, P(a*|v), E)
        self._banned: dict[int, dict[int, set[int]]] = {}  # row -> live length -> banned ids
        self._budget: dict[int, int] = {}
        self.backspaces = 0

    def __call__(self, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        if ctx.backspace_id is None:
            raise ValueError("BacktrackRule needs generate(..., backspace_id=<id of <bksp>>)")
        if ctx.step == 0:
            self._reset()
        attr = self.target_probs(ctx)  # (R, V)
        p = scores.float().softmax(-1)
        expected = (p * attr).sum(-1)  # (R,) E_t = Σ_v p(v) P(a*|v)
        out = self.inner(scores, ctx) if self.inner is not None else scores.float().log_softmax(-1)
        out = out.clone()
        out[:, ctx.backspace_id] = _NEG
        force = torch.zeros(scores.shape[0], dtype=torch.bool, device=scores.device)
        for i, b in enumerate(ctx.rows.tolist()):
            L, P0 = int(ctx.live_lengths[i]), int(ctx.prompt_lengths[i])
            banned = self._banned.setdefault(b, {})
            for stale in [n for n in banned if n > L]:
                del banned[stale]
            prev = self._prev.pop(b, None)
            budget = self._budget.setdefault(b, self.max_backspaces)
            if prev is not None and prev[0] == L - 1 and L - 1 >= P0 and budget > 0:
                last = int(ctx.tokens[i, L - 1])
                credit = float(prev[1][last]) - prev[2]
                if credit < -self.threshold:
                    force[i] = True
                    self._budget[b] = budget - 1
                    self.backspaces += 1
                    banned.setdefault(L - 1, set()).add(last)
                    continue  # the next state is the previous one again; it is rescored then
            self._prev[b] = (L, attr[i].detach(), float(expected[i]))
            for v in banned.get(L, ()):
                out[i, v] = _NEG
            if torch.isinf(out[i]).all():  # everything banned: let the inner rule's scores stand
                out[i] = scores[i].float().log_softmax(-1)
                out[i, ctx.backspace_id] = _NEG
        return force_action(out, force, ctx.backspace_id)


RULES = ("product", "satisficing", "backtrack")


def steering_rule(model, rule: str, targets: Sequence[int], alphas: Sequence[float] = (), threshold: float | None = None,
                  backspace_id: int | None = None):
    """The decoder steer for one of :data:`RULES` (what ``seqlevel generate --steer`` builds).

    Args:
        model: the :class:`~seqlevel.attributes.AttributeModel`.
        rule: ``product`` (:class:`ProductRule`), ``satisficing`` (:class:`SatisficingRule`) or ``backtrack``
            (:class:`BacktrackRule` around a :class:`ProductRule` when ``alphas`` are given).
        targets: the wanted classes; several multiply (product and satisficing; backtrack takes one).
        alphas: product weights: none (1.0), one for all targets or one per target.
        threshold: satisficing: the attribute threshold τ (default 0.8); backtrack: the credit drop that backs up
            (default 0.2); product: not used.
        backspace_id: the ``<bksp>`` id, needed by ``backtrack``.

    Returns:
        A steer hook for :func:`seqlevel.decoding.generate`.
    """
    if rule not in RULES:
        raise ValueError(f"unknown steering rule {rule!r}; choose one of {', '.join(RULES)}")
    if model.kind == "numeric":
        raise ValueError("steering needs a binary or categorical head (a target class); this model's head is "
                         "numeric")
    targets = list(targets)
    if not targets:
        raise ValueError(f"--steer {rule} needs a --target class (binary head: 1 = attribute present)")
    if rule == "product":
        if threshold is not None:
            raise ValueError("--threshold does nothing with --steer product (it weighs with --alpha); pass it with "
                             "--steer satisficing (τ) or --steer backtrack")
        return ProductRule(model, targets, list(alphas) or 1.0)
    if rule == "satisficing":
        if alphas:
            raise ValueError("--alpha does nothing with --steer satisficing (it keeps candidates whose attribute "
                             "probability is >= --threshold); drop --alpha or use --steer product")
        return SatisficingRule(model, targets, tau=0.8 if threshold is None else threshold)
    if len(targets) != 1:
        raise ValueError(f"--steer backtrack takes one --target, got {len(targets)}; steer towards several classes "
                         "with --steer product or satisficing")
    if backspace_id is None:
        raise ValueError("--steer backtrack deletes tokens with <bksp>, and this model's tokenizer has no <bksp> "
                         "token; train the CAT model on a base that has one (e.g. a SequenceMatch model) or use "
                         "--steer product / satisficing")
    inner = ProductRule(model, targets, list(alphas)) if alphas else None
    return BacktrackRule(model, targets[0], threshold=0.2 if threshold is None else threshold, inner=inner)
