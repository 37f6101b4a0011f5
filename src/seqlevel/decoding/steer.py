"""The steer hook: the one place where decoding features plug into :func:`seqlevel.decoding.generate`.

At every step, before the sampling rule, ``generate`` calls ``steer(scores, ctx)`` with the next-action logits of
the rows that are still generating and a :class:`StepContext` describing them. The hook returns new scores of the
same shape (or ``None`` to leave them unchanged). Temperature, top-k and top-p are applied *after* the hook, and
greedy decoding takes the argmax of what it returns.

What a hook can do with this:

* reweight: ``scores + alpha * log P(a | v)`` (the CAT product rule works on ``scores.log_softmax(-1)``);
* restrict: set entries to ``-inf`` (e.g. a satisficing rule);
* **choose ``<bksp>`` itself**: return scores with every entry but ``ctx.backspace_id`` at ``-inf`` for the rows
  that must back up (:func:`force_action` does exactly that), e.g. when an attribute estimate drops.

Every steer rule of the package lives here: :func:`force_action`, :class:`BiasAction`, :class:`BanTokens`,
:class:`ForceFirst` and :class:`ForcedBackspaces` (the CAT rules, which need a model, are in
:mod:`seqlevel.attributes.steering`).

A hook that needs the model's hidden states sets ``needs_hidden_states = True`` (as an attribute of the callable);
``ctx.hidden_states`` then holds, per layer, the hidden state at the live state's last token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass
class StepContext:
    """What a steer hook sees at one decoding step, for the ``R`` rows still generating.

    Attributes:
        step: index of the action about to be chosen (0 for the first new action).
        rows: ``(R,)`` indices of these rows in the batch given to ``generate``.
        live_lengths: ``(R,)`` length of each row's live state (prompt + kept tokens).
        prompt_lengths: ``(R,)`` length of each row's prompt (backspace cannot delete below it).
        tokens: ``(R, Lmax)`` live token ids by position; row ``r`` is valid up to ``live_lengths[r]``
            (the rest is stale and must be ignored).
        hidden_states: ``None`` unless asked for; else a tuple (embeddings, then one per layer, as Hugging Face
            returns them) of ``(R, H)`` hidden states at each row's last live token.
        backspace_id: id of ``<bksp>``, or ``None`` when decoding without backspace.
        eos_token_ids: the ids that end a row.
    """

    step: int
    rows: torch.Tensor
    live_lengths: torch.Tensor
    prompt_lengths: torch.Tensor
    tokens: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None
    backspace_id: int | None
    eos_token_ids: tuple[int, ...]

    def live_ids(self, r: int) -> list[int]:
        """Row ``r``'s live state (prompt + kept tokens) as a list of ids."""
        return self.tokens[r, : int(self.live_lengths[r])].tolist()


@runtime_checkable
class Steer(Protocol):
    """``steer(scores, ctx) -> scores | None``; ``scores`` is ``(R, V)`` float32 for the rows in ``ctx.rows``.

    Optional attribute ``needs_hidden_states: bool`` (default False) asks ``generate`` for hidden states.
    """

    def __call__(self, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor | None: ...


def force_action(scores: torch.Tensor, which: torch.Tensor, action_id: int) -> torch.Tensor:
    """Scores under which the rows in ``which`` can only take ``action_id`` (e.g. ``<bksp>``).

    Args:
        scores: ``(R, V)`` scores.
        which: ``(R,)`` bool, the rows to force.
        action_id: the action those rows must take.

    Returns:
        ``(R, V)`` scores: forced rows are ``-inf`` everywhere except ``action_id`` (kept at its score, or 0 if it
        was ``-inf``); other rows unchanged.
    """
    forced = torch.full_like(scores, float("-inf"))
    forced[:, action_id] = 0.0
    return torch.where(which[:, None], forced, scores)


class BiasAction:
    """A steer that adds a constant to one action's logit, e.g. to make ``<bksp>`` frequent in tests/benchmarks."""

    needs_hidden_states = False

    def __init__(self, action_id: int, bias: float):
        self.action_id, self.bias = action_id, bias

    def __call__(self, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        scores = scores.clone()
        scores[:, self.action_id] += self.bias
        return scores


class BanTokens:
    """A steer under which the given ids are never chosen (e.g. pad, bos, unk: ids that are not actions).

    Args:
        ids: token ids to ban; ``None`` entries are skipped (a tokenizer without that special token).
    """

    needs_hidden_states = False

    def __init__(self, ids):
        self.ids = sorted({int(i) for i in ids if i is not None})

    def __call__(self, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        if not self.ids:
            return scores
        scores = scores.clone()
        scores[:, self.ids] = float("-inf")
        return scores


class ForceFirst:
    """A steer under which each row's first action is given (e.g. an injected wrong character); later steps are
    left to ``ban`` (or unchanged).

    Args:
        first_ids: ``(B,)`` the action each row of the batch given to ``generate`` must take at step 0.
        ban: optional steer applied at every step first (e.g. :class:`BanTokens`).
    """

    needs_hidden_states = False

    def __init__(self, first_ids: torch.Tensor, ban: Steer | None = None):
        self.first_ids, self.ban = first_ids, ban

    def __call__(self, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        if self.ban is not None:
            scores = self.ban(scores, ctx)
        if ctx.step == 0:
            forced = torch.full_like(scores, float("-inf"))
            forced[torch.arange(len(ctx.rows)), self.first_ids.to(scores.device)[ctx.rows]] = 0.0
            return forced
        return scores


class ForcedBackspaces:
    """A steer that backspaces on a fixed schedule and never otherwise (benchmarks: a known backspace share).

    Args:
        schedule: ``(B, N)`` bool; row ``b`` must take ``<bksp>`` at step ``t`` where ``schedule[b, t]``.
        backspace_id: the ``<bksp>`` id.
    """

    needs_hidden_states = False

    def __init__(self, schedule: torch.Tensor, backspace_id: int):
        self.schedule, self.backspace_id = schedule, backspace_id

    def __call__(self, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        forced = self.schedule[ctx.rows, ctx.step]  # (R,)
        # as force_action(scores with <bksp> banned, forced, backspace_id), in one copy: the model itself never
        # backspaces, only where the schedule says so
        scores = scores.masked_fill(forced[:, None], float("-inf"))
        scores[:, self.backspace_id] = torch.where(forced, 0.0, float("-inf"))
        return scores
