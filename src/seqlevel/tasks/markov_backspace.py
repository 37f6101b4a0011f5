"""The Markov world with ``<bksp>``: compounding error where the truth is known (SequenceMatch on a known P).

The bigram world of :mod:`seqlevel.tasks.markov` forbids about half of the transitions (``P(u | t) = 0``). A
model that emits a forbidden bigram has left the data manifold; one that can backspace may delete it. This
module holds what a benchmark needs beyond the world itself:

* a character tokenizer for the world's ids (Markov token ``k`` of ``1..n−1`` is one character; Markov EOS is
  the tokenizer's ``<eos>``), and the maps between the two id spaces;
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
import string
from collections.abc import Sequence

import numpy as np
import torch

from seqlevel.tasks.markov import MarkovP, Sequences, avg_js, avg_zero_mass

_CHARS = string.ascii_letters + string.digits + string.punctuation
SPECIALS = 4  # <pad> <bos> <eos> <unk>: ids 0..3 of presets.char_tokenizer


def markov_tokenizer(p: MarkovP, model_max_length: int = 256):
    """Character tokenizer for ``p``: tokenizer id ``SPECIALS + k − 1`` is Markov token ``k`` (``1..n−1``)."""
    from seqlevel.presets import char_tokenizer

    if p.n - 1 > len(_CHARS):
        raise ValueError(f"the world has {p.n - 1} tokens but only {len(_CHARS)} characters are available; use "
                         f"vocab_size <= {len(_CHARS) + 2}")
    return char_tokenizer(_CHARS[: p.n - 1], model_max_length=model_max_length)


def to_tokenizer_ids(p: MarkovP, markov_ids: Sequence[int], eos_id: int) -> list[int]:
    """Markov ids (EOS = ``p.eos``) → tokenizer ids."""
    return [eos_id if int(k) == p.eos else SPECIALS + int(k) - 1 for k in markov_ids]


def to_markov_id(p: MarkovP, tok_id: int, eos_id: int) -> int:
    """One tokenizer id → Markov id (0 for anything that is not a world token: ``<bos>``, pad, unk)."""
    if tok_id == eos_id:
        return p.eos
    k = int(tok_id) - SPECIALS + 1
    return k if 1 <= k < p.eos else 0


def dataset_columns(p: MarkovP, seqs: Sequences, tokenizer, max_tokens: int) -> dict[str, list]:
    """``prompt_ids`` (``[<bos>]``) / ``completion_ids`` columns of the sequences no longer than ``max_tokens``
    (EOS included): the world conditioned on that length, so no data sequence is cut."""
    keep = np.nonzero(seqs.lengths <= max_tokens)[0]
    bos, eos = int(tokenizer.bos_token_id), int(tokenizer.eos_token_id)
    comp = [to_tokenizer_ids(p, seqs.tokens[seqs.offsets[i]: seqs.offsets[i] + seqs.lengths[i]], eos) for i in keep]
    return {"prompt_ids": [[bos]] * len(comp), "completion_ids": comp}


def forbidden_noise(p: MarkovP, eos_id: int):
    """Ground-truth noise ``noise(prefix, target, rng)``: a token ``u`` with ``P(u | last live token) = 0``, or
    None (decline) after ``<bos>`` or where no transition is forbidden."""
    T = p.transition

    def noise(prefix: Sequence[int], target: int, rng: random.Random) -> int | None:
        t = to_markov_id(p, int(prefix[-1]), eos_id)
        if t == 0:
            return None  # after <bos>: every first token is possible
        bad = np.nonzero(T[t - 1, : p.n - 1] == 0.0)[0]  # columns of tokens 1..n-1 (EOS is never forbidden)
        if len(bad) == 0:
            return None
        return to_tokenizer_ids(p, [int(bad[rng.randrange(len(bad))]) + 1], eos_id)[0]

    return noise


def _forbidden(p: MarkovP, t: int, u: int) -> bool:
    return t != 0 and p.transition[t - 1, u - 1] == 0.0  # t: Markov id (0 = <bos>), u: Markov id 1..n


def final_text_metrics(p: MarkovP, actions: Sequence[Sequence[int]], eos_id: int, backspace_id: int | None
                       ) -> dict[str, float]:
    """Metrics of model samples on their final text after backspaces (the prompt is ``[<bos>]``).

    Args:
        p: the world.
        actions: each sample's actions (tokens, ``<bksp>``, final ``<eos>``), as ``GenerateOutput.actions``.
        eos_id, backspace_id: tokenizer ids (``backspace_id`` None for a model without ``<bksp>``).

    Returns:
        ``impossible_rate`` (forbidden bigrams per final token, EOS included), ``impossible_seq_rate``,
        ``avg_js`` / ``avg_zero_mass`` of the empirical final-text bigram matrix, ``backspace_rate`` (per action),
        ``backspace_precision`` (deletions that removed a forbidden token), ``false_deletion_rate`` (samples
        with at least one deleted valid token) and ``finished_rate``.
    """
    V = p.vocab_size
    counts = np.zeros((V, V))
    bad = n_tok = bad_seq = n_act = n_bk = n_del = good_del = false_seq = finished = 0
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
            if u == p.eos:
                break
            prev = u
        bad_seq += seq_bad
        false_seq += false_here
    rows = counts.sum(1, keepdims=True)
    learned = np.where(rows > 0, counts / np.maximum(rows, 1), 1.0 / V)  # unseen rows: uniform
    N = max(len(actions), 1)
    return {"impossible_rate": bad / max(n_tok, 1), "impossible_seq_rate": bad_seq / N,
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
        chunk = seqs[i: i + batch_size]
        W = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), W), pad, dtype=torch.long)
        att = torch.zeros_like(ids)
        for r, s in enumerate(chunk):
            ids[r, : len(s)], att[r, : len(s)] = torch.tensor(s), 1
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
