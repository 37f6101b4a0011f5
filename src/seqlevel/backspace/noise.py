"""Noise augmentation: teaching the model when to backspace (SequenceMatch §4.2).

Data contain no backspaces, so erroneous tokens are inserted, each run followed by as many ``<bksp>``. Two
encodings of an insertion (a flag, ``mode``):

* ``"environment"`` (default, §4.2 option A, RECON): the noise is the environment's doing. In the state before a
  run the expert still aims at the next data token, the environment appends the noise instead; inside the run the
  expert's action is ``<bksp>``. The noise token is never a prediction target. ``actions.targets`` carries these
  targets and :func:`seqlevel.backspace.encode` picks them up.
* ``"action"`` (option B): the noise tokens are expert actions and are prediction targets.

The noise source is ``"random"`` (uniform over the vocabulary minus ``<bksp>``, ``exclude_ids`` and the correct
next token: "simply samples other tokens") or a callable ``noise(prefix, target, rng) -> int`` that returns one
noise token for the live state ``prefix`` whose correct next token is ``target``; tasks plug in "ground-truth"
noise this way. A callable may return ``None`` to decline (no wrong token exists in that state, e.g. right after
``<bos>`` when every first token is possible): the insertion (or the rest of its run) is then skipped.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

NOISE_MODES = ("environment", "action")
NoiseFn = Callable[[Sequence[int], int, random.Random], "int | None"]


class ActionList(list):
    """A list of action ids with the prediction target of each action in ``targets`` (same length)."""

    def __init__(self, actions: Sequence[int], targets: Sequence[int]):
        super().__init__(int(a) for a in actions)
        self.targets = [int(t) for t in targets]
        if len(self.targets) != len(self):
            raise ValueError(f"targets has length {len(self.targets)} but actions has length {len(self)}")


def _random_noise(vocab_size: int, banned: set[int]) -> NoiseFn:
    allowed = [t for t in range(vocab_size) if t not in banned]
    if len(allowed) < 2:
        raise ValueError(f"random noise needs at least two usable ids, vocab_size={vocab_size} leaves {allowed}; "
                         "pass a larger vocab_size or fewer exclude_ids")

    def draw(prefix: Sequence[int], target: int, rng: random.Random) -> int:
        while True:  # "other tokens": never the correct next token, so the noise is always an error
            t = allowed[rng.randrange(len(allowed))]
            if t != target:
                return t

    return draw


def augment_with_noise(
    ids: Sequence[int],
    p_noise: float,
    noise: str | NoiseFn = "random",
    max_run: int = 1,
    rng: random.Random | int | None = None,
    *,
    backspace_id: int,
    vocab_size: int | None = None,
    prompt_len: int = 1,
    mode: str = "environment",
    exclude_ids: Sequence[int] = (),
) -> tuple[list[int], ActionList]:
    """Split ``ids`` into a prompt and actions, inserting noise runs each followed by backspaces.

    Before each data action (the final ``<eos>`` included), independently with probability ``p_noise``, a run of
    ``n ~ Uniform{1..max_run}`` noise tokens is inserted, followed by ``n`` backspaces.

    Args:
        ids: a data sequence (prompt then continuation).
        p_noise: insertion probability per position, in ``[0, 1]``.
        noise: ``"random"`` or a callable ``noise(prefix, target, rng) -> int | None`` (None declines).
        max_run: longest noise run (RECON: runs of length 1..max_run, uniformly; the paper shows multi-token
            deletions but not how runs were drawn).
        rng: a ``random.Random``, a seed, or None (fresh generator).
        backspace_id: the ``<bksp>`` id (never used as noise).
        vocab_size: needed for ``noise="random"``.
        prompt_len: how many leading ids form the protected prompt (at least 1, e.g. ``<bos>``).
        mode: ``"environment"`` (default; noise never a target) or ``"action"`` (noise is a target).
        exclude_ids: ids random noise never draws (pad, bos, eos, ...).

    Returns:
        ``(prompt, actions)``; ``actions.targets`` holds the prediction target for each action.
    """
    if not 0.0 <= float(p_noise) <= 1.0:
        raise ValueError(f"p_noise must be in [0, 1], got {p_noise}; 0 gives the clean data")
    if int(max_run) < 1:
        raise ValueError(f"max_run must be >= 1, got {max_run}")
    if mode not in NOISE_MODES:
        raise ValueError(f"mode must be one of {NOISE_MODES}, got {mode!r}; 'environment' is §4.2 option A")
    ids = [int(t) for t in ids]
    if not 1 <= prompt_len <= len(ids):
        raise ValueError(f"prompt_len must be in [1, len(ids)={len(ids)}], got {prompt_len}; "
                         "the first state needs at least one token such as <bos>")
    if isinstance(rng, random.Random):
        gen = rng
    else:
        gen = random.Random(rng)
    if isinstance(noise, str):
        if noise != "random":
            raise ValueError(f"noise must be 'random' or a callable noise(prefix, target, rng) -> int, got {noise!r}")
        if vocab_size is None:
            raise ValueError("noise='random' needs vocab_size (the model's vocabulary size after add_backspace_token)")
        draw = _random_noise(int(vocab_size), {int(backspace_id), *map(int, exclude_ids)})
    elif callable(noise):
        draw = noise
    else:
        raise ValueError(f"noise must be 'random' or a callable, got {type(noise).__name__}")

    prompt = ids[:prompt_len]
    actions: list[int] = []
    targets: list[int] = []
    live = list(prompt)
    for x in ids[prompt_len:]:
        if p_noise > 0 and gen.random() < p_noise:
            run = gen.randint(1, int(max_run))
            for r in range(run):
                n = draw(list(live), x, gen)
                if n is None:  # the task declines: no wrong token exists here (e.g. right after <bos>)
                    run = r
                    break
                n = int(n)
                if n == backspace_id:
                    raise ValueError(f"the noise source returned the backspace id {backspace_id}; noise must be a token")
                if r == 0 and n == x:
                    raise ValueError(f"the noise source returned the correct next token {x} for prefix {live}; "
                                     "noise must be an error, return a different token")
                actions.append(n)
                if mode == "action":
                    targets.append(n)
                else:  # the expert aims at x before the run and at <bksp> inside it; the environment overrides
                    targets.append(x if r == 0 else backspace_id)
                live.append(n)
            for _ in range(run):
                actions.append(backspace_id)
                targets.append(backspace_id)
                live.pop()
        actions.append(x)
        targets.append(x)
        live.append(x)
    return prompt, ActionList(actions, targets)
