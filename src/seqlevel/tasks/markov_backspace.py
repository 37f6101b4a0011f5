"""The Markov world with ``<bksp>``: compounding error where the truth is known (SequenceMatch on a known P).

The bigram world of :mod:`seqlevel.tasks.markov` forbids about half of the transitions (``P(u | t) = 0``). A
model that emits a forbidden bigram has left the data manifold; one that can backspace may delete it. This
module holds what a benchmark needs beyond the world itself:

* ground-truth noise (§4.2): after live token ``t`` the noise is a token ``u`` with ``P(u | t) = 0``, so noise
  states are never data states; right after ``<bos>`` every first token is possible, so the noise declines;
* metrics on the *final text after backspaces* of model samples: the impossible-bigram rate per token and per
  sequence, the empirical bigram matrix (``avg_js``, ``avg_zero_mass`` against P), backspace rate, precision (the
  share of deletions that remove a forbidden token) and false deletions (sequences where a valid token was
  deleted); and the exact forbidden mass the model puts on the next token along its own rollouts;
* the token-only dev NLL: the ``<bksp>`` logit removed from the softmax, on clean dev text (a proper score).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch

from seqlevel.metrics.lm import right_pad
from seqlevel.tasks.markov import (  # noqa: F401  (the tokenizer and id maps, re-exported for old imports)
    SPECIALS,
    MarkovP,
    Sequences,
    avg_js,
    avg_zero_mass,
    markov_tokenizer,
    to_markov_id,
    to_tokenizer_ids,
)


def dataset_columns(p: MarkovP, seqs: Sequences, tokenizer, max_tokens: int) -> dict[str, list]:
    """``prompt_ids`` (``[<bos>]``) / ``completion_ids`` columns of the sequences no longer than ``max_tokens``
    (EOS included): the world conditioned on that length, so no data sequence is cut."""
    keep = np.nonzero(seqs.lengths <= max_tokens)[0]
    bos, eos = int(tokenizer.bos_token_id), int(tokenizer.eos_token_id)
    comp = [to_tokenizer_ids(p, seqs.tokens[seqs.offsets[i]: seqs.offsets[i] + seqs.lengths[i]], eos) for i in keep]
    return {"prompt_ids": [[bos]] * len(comp), "completion_ids": comp}


def covered_pairs(p: MarkovP, coverage: float = 1.0, seed: int = 0) -> np.ndarray:
    """The forbidden pairs the ground-truth noise may insert: a fixed random share ``coverage`` of them.

    Args:
        p: the world.
        coverage: share of the forbidden pairs ``(t, u)`` (``t, u`` in ``1..n−1``; EOS is never forbidden) that
            are covered, in ``[0, 1]``; 1.0 covers every one (the noise of issue 13).
        seed: the world seed; the covered set is a function of ``(seed, coverage)`` alone.

    Returns:
        ``(n, n)`` bool over Markov ids ``1..n`` (row ``t − 1``, column ``u − 1``): True where ``(t, u)`` is
        forbidden and covered. The uncovered forbidden pairs are ``forbidden & ~covered``.
    """
    if not 0.0 <= float(coverage) <= 1.0:
        raise ValueError(f"noise_coverage must be in [0, 1], got {coverage}; 1.0 lets the noise insert every "
                         "forbidden pair, 0.5 a fixed random half of them")
    forbidden = forbidden_pairs(p)
    covered = forbidden.copy()
    if coverage < 1.0:
        idx = np.flatnonzero(forbidden)  # row-major: a fixed order
        perm = np.random.default_rng([int(seed), 21]).permutation(len(idx))  # 21: this use of the seed
        covered.flat[idx[perm[int(round(coverage * len(idx))):]]] = False
    return covered


def forbidden_pairs(p: MarkovP) -> np.ndarray:
    """``(n, n)`` bool: ``(t, u)`` with ``P(u | t) = 0`` among tokens ``1..n−1`` (rows and columns of EOS False)."""
    n = p.n
    out = np.zeros((n, n), dtype=bool)
    out[: n - 1, : n - 1] = p.transition[: n - 1, : n - 1] == 0.0
    return out


def forbidden_noise(p: MarkovP, eos_id: int, covered: np.ndarray | None = None):
    """Ground-truth noise ``noise(prefix, target, rng)``: a token ``u`` with ``P(u | last live token) = 0``, or
    None (decline) after ``<bos>`` or where no transition is forbidden.

    ``covered`` (from :func:`covered_pairs`) restricts the noise to the covered pairs (None: every forbidden pair;
    the same draws as a ``covered`` of all pairs); where no pair after ``t`` is covered the noise declines."""
    pairs = forbidden_pairs(p) if covered is None else covered  # (n, n): columns of tokens 1..n-1, never EOS

    def noise(prefix: Sequence[int], target: int, rng: random.Random) -> int | None:
        t = to_markov_id(p, int(prefix[-1]), eos_id)
        if t == 0:
            return None  # after <bos>: every first token is possible
        bad = np.flatnonzero(pairs[t - 1])
        if len(bad) == 0:
            return None
        return to_tokenizer_ids(p, [int(bad[rng.randrange(len(bad))]) + 1], eos_id)[0]

    return noise


def _forbidden(p: MarkovP, t: int, u: int) -> bool:
    return t != 0 and p.transition[t - 1, u - 1] == 0.0  # t: Markov id (0 = <bos>), u: Markov id 1..n


def final_text_metrics(p: MarkovP, actions: Sequence[Sequence[int]], eos_id: int, backspace_id: int | None,
                       covered: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of model samples on their final text after backspaces (the prompt is ``[<bos>]``).

    Args:
        p: the world.
        actions: each sample's actions (tokens, ``<bksp>``, final ``<eos>``), as ``GenerateOutput.actions``.
        eos_id, backspace_id: tokenizer ids (``backspace_id`` None for a model without ``<bksp>``).
        covered: the pairs the noise covered (:func:`covered_pairs`); None counts every forbidden pair as covered.

    Returns:
        ``covered_rate`` / ``uncovered_rate`` (the forbidden bigrams of covered / uncovered pairs per final
        token: they add up to ``impossible_rate``),
        ``impossible_rate`` (forbidden bigrams per final token, EOS included), ``impossible_seq_rate``,
        ``avg_js`` / ``avg_zero_mass`` of the empirical final-text bigram matrix, ``backspace_rate`` (per action),
        ``backspace_precision`` (deletions that removed a forbidden token), ``false_deletion_rate`` (samples
        with at least one deleted valid token) and ``finished_rate``.
    """
    V = p.vocab_size
    counts = np.zeros((V, V))
    bad = n_tok = bad_seq = n_act = n_bk = n_del = good_del = false_seq = finished = bad_cov = bad_unc = 0
    for acts in actions:
        live: list[int] = []
        false_here = False
        for a in acts:
            n_act += 1
            if backspace_id is not None and a == backspace_id:
                n_bk += 1
                if live:
                    u = live.pop()
                    n_del += 1
                    if _forbidden(p, live[-1] if live else 0, u):
                        good_del += 1
                    else:
                        false_here = True
                continue
            live.append(to_markov_id(p, int(a), eos_id))
        finished += bool(live) and live[-1] == p.eos
        prev, seq_bad = 0, False
        for u in live:
            if u == 0:
                continue  # a special token sampled by mistake is not a world token
            counts[prev, u] += 1
            n_tok += 1
            if _forbidden(p, prev, u):
                bad += 1
                seq_bad = True
                if covered is None or covered[prev - 1, u - 1]:
                    bad_cov += 1
                else:
                    bad_unc += 1
            if u == p.eos:
                break
            prev = u
        bad_seq += seq_bad
        false_seq += false_here
    rows = counts.sum(1, keepdims=True)
    learned = np.where(rows > 0, counts / np.maximum(rows, 1), 1.0 / V)  # unseen rows: uniform
    N = max(len(actions), 1)
    return {"impossible_rate": bad / max(n_tok, 1), "covered_rate": bad_cov / max(n_tok, 1),
            "uncovered_rate": bad_unc / max(n_tok, 1), "impossible_seq_rate": bad_seq / N,
            "avg_js": avg_js(learned, p), "avg_zero_mass": avg_zero_mass(learned, p),
            "backspace_rate": n_bk / max(n_act, 1), "backspace_precision": good_del / max(n_del, 1),
            "false_deletion_rate": false_seq / N, "finished_rate": finished / N}


class ForbiddenMass:
    """Steer that records, at every state of the model's own rollouts whose last live token is a world token, the
    exact probability the model puts on the tokens P forbids after it; it leaves the scores unchanged."""

    needs_hidden_states = False

    def __init__(self, p: MarkovP, eos_id: int, inner=None):
        self.p, self.eos_id, self.inner = p, eos_id, inner
        self.mask_by_last: dict[int, torch.Tensor] = {}
        self.total, self.count = 0.0, 0

    def _mask(self, t: int, width: int) -> torch.Tensor:
        if t not in self.mask_by_last:
            m = torch.zeros(width, dtype=torch.bool)
            for u in range(1, self.p.n):
                if _forbidden(self.p, t, u):
                    m[to_tokenizer_ids(self.p, [u], self.eos_id)[0]] = True
            self.mask_by_last[t] = m
        return self.mask_by_last[t]

    def __call__(self, scores: torch.Tensor, ctx) -> torch.Tensor:
        if self.inner is not None:
            scores = self.inner(scores, ctx)
        probs = torch.softmax(scores.float(), -1)
        last = ctx.tokens[torch.arange(len(ctx.rows)), ctx.live_lengths - 1].tolist()
        for r, tok in enumerate(last):
            t = to_markov_id(self.p, int(tok), self.eos_id)
            if t == 0:
                continue
            self.total += float(probs[r][self._mask(t, scores.shape[1])].sum())
            self.count += 1
        return scores

    @property
    def mean(self) -> float:
        return self.total / max(self.count, 1)


@torch.no_grad()
def token_nll(model, p: MarkovP, dev: Sequences, tokenizer, backspace_id: int | None, max_tokens: int,
              batch_size: int = 256) -> float:
    """Per-token NLL of clean dev text (EOS included) with the ``<bksp>`` logit removed from the softmax.

    Sequences longer than ``max_tokens`` are skipped, as in training (the world conditioned on length).
    """
    cols = dataset_columns(p, dev, tokenizer, max_tokens)
    seqs = [pr + c for pr, c in zip(cols["prompt_ids"], cols["completion_ids"])]
    pad = int(tokenizer.pad_token_id)
    was = model.training
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(seqs), batch_size):
        ids, att = right_pad(seqs[i: i + batch_size], pad)
        logits = model(input_ids=ids, attention_mask=att).logits.float()  # (B, W, A)
        if backspace_id is not None:
            logits[..., backspace_id] = float("-inf")  # token-only: <bksp> leaves the softmax
        logp = torch.log_softmax(logits[:, :-1], -1)
        tgt = ids[:, 1:]
        keep = att[:, 1:].bool()
        total -= float(logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)[keep].sum())
        n += int(keep.sum())
    model.train(was)
    return total / max(n, 1)


PROBE_GROUPS = ("uncovered", "covered", "valid")


def probe_states(p: MarkovP, dev: Sequences, tokenizer, covered: np.ndarray, max_tokens: int,
                 n_prefixes: int = 400, seed: int = 0) -> dict[str, list[list[int]]]:
    """The states of the deletion probe: ``<bos>`` + a dev prefix ending in a world token ``t``, then one more
    token ``u``, for every ``u`` of each group: ``uncovered`` (``P(u | t) = 0``, a pair the noise never showed),
    ``covered`` (forbidden and covered) and ``valid`` (``P(u | t) > 0``, EOS excluded).

    The prefixes are ``n_prefixes`` dev sequences (those of at most ``max_tokens`` tokens), each cut at a uniform
    random point before its EOS, drawn with ``seed``. Returns ``{group: [tokenizer ids of each state]}``.
    """
    cols = dataset_columns(p, dev, tokenizer, max_tokens)
    comps = [c for c in cols["completion_ids"] if len(c) >= 2]  # at least one token before EOS
    if not comps:
        raise ValueError("the dev set has no sequence with a token before <eos>; draw more dev sequences")
    rng = np.random.default_rng([int(seed), 404])  # 404: this use of the seed
    eos = int(tokenizer.eos_token_id)
    bos = int(tokenizer.bos_token_id)
    forbidden = forbidden_pairs(p)
    out: dict[str, list[list[int]]] = {g: [] for g in PROBE_GROUPS}
    for i in rng.choice(len(comps), size=n_prefixes, replace=len(comps) < n_prefixes):
        c = comps[int(i)]
        k = int(rng.integers(1, len(c)))  # keep c[:k]: its last token is a world token (EOS is c[-1])
        prefix = [bos] + c[:k]
        t = to_markov_id(p, c[k - 1], eos)
        groups = {"uncovered": forbidden[t - 1] & ~covered[t - 1], "covered": forbidden[t - 1] & covered[t - 1],
                  "valid": p.transition[t - 1] > 0.0}
        groups["valid"][p.eos - 1] = False
        for g, mask in groups.items():
            for u in np.flatnonzero(mask):
                out[g].append(prefix + to_tokenizer_ids(p, [int(u) + 1], eos))
    return out


@torch.no_grad()
def deletion_probe(model, p: MarkovP, dev: Sequences, tokenizer, backspace_id: int, covered: np.ndarray,
                   max_tokens: int, n_prefixes: int = 400, seed: int = 0, batch_size: int = 512,
                   details: bool = False) -> dict[str, float | None]:
    """The exact deletion probe: the model's mean ``π(<bksp> | prefix + u)`` right after a token ``u``.

    No sampling: one batched forward per group (in chunks of ``batch_size``) over the states of
    :func:`probe_states`, reading the softmax at the last position. ``p_bksp_uncovered`` is the deletion of
    errors the noise never showed (what SequenceMatch's off-data signal is about), ``p_bksp_covered`` of errors it
    showed, ``p_bksp_valid`` the false-deletion propensity after a valid token.

    Args:
        model: a causal LM with the ``<bksp>`` row.
        p, dev, tokenizer, covered, max_tokens, n_prefixes, seed: as :func:`probe_states`.
        backspace_id: the ``<bksp>`` id.
        details: also return ``q_bksp_*`` (mean ⌫ logit, i.e. Q(s, ⌫)), ``v_*`` (mean V(s) = logsumexp of the
            logits) and ``v_parent`` (mean V of the prefixes themselves).

    Returns:
        ``{"p_bksp_uncovered", "p_bksp_covered", "p_bksp_valid"}`` (None for an empty group, e.g. uncovered at
        coverage 1.0), plus the details.
    """
    states = probe_states(p, dev, tokenizer, covered, max_tokens, n_prefixes, seed)
    was = model.training
    model.eval()
    out: dict[str, float | None] = {}
    try:
        for g, seqs in states.items():
            pb, qb, vv = _last_position_stats(model, seqs, backspace_id, int(tokenizer.pad_token_id), batch_size)
            out[f"p_bksp_{g}"] = pb
            if details:
                out[f"q_bksp_{g}"], out[f"v_{g}"] = qb, vv
        if details:
            parents = list({tuple(s[:-1]): None for g in states for s in states[g]})
            out["v_parent"] = _last_position_stats(model, [list(s) for s in parents], backspace_id,
                                                   int(tokenizer.pad_token_id), batch_size)[2]
    finally:
        model.train(was)
    return out


@torch.no_grad()
def _last_position_stats(model, seqs: list[list[int]], backspace_id: int, pad: int, batch_size: int):
    """Means of π(⌫), the ⌫ logit and logsumexp at each sequence's last position (None, None, None if empty)."""
    if not seqs:
        return None, None, None
    pb = qb = vv = 0.0
    for i in range(0, len(seqs), batch_size):
        ids, att = right_pad(seqs[i: i + batch_size], pad)
        last = att.sum(1) - 1
        logits = model(input_ids=ids, attention_mask=att).logits.float()[torch.arange(len(ids)), last]  # (b, A)
        V = torch.logsumexp(logits, -1)
        pb += float((logits[:, backspace_id] - V).exp().sum())
        qb += float(logits[:, backspace_id].sum())
        vv += float(V.sum())
    n = len(seqs)
    return pb / n, qb / n, vv / n
