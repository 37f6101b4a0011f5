"""Markov (bigram) oracle world with a known data distribution P: the MixCE synthetic setting.

Faithful to ``synthetic.py`` of bloomberg/MixCE-acl2023 (our notes: ``methods/mixce.md`` §2):

* Vocabulary of ``V`` ids: id 0 is PAD/BOS, ids ``1..n`` are "normal" tokens with ``n = V - 1``, and the last
  one, ``n``, is EOS. The README's V = 21, 51, ... thus mean 20, 50, ... tokens including EOS.
* ``transition`` is ``(n, n)``: row ``i`` is ``P(· | token i+1)`` over tokens ``1..n``. The EOS row is all zero
  (nothing follows EOS). The first token is uniform over all ``n`` tokens, EOS included.
* ``"random"`` init (§2.1): Dirichlet(0.5) rows, then every entry outside the EOS row and EOS column is zeroed
  with probability ``zero_percent`` (0.5), then rows are renormalised. The random stream is consumed in the
  official order (``dirichlet`` then one uniform per entry, row-major), so ``np.random.RandomState(seed)`` here
  gives the *same* P as the official code after ``set_seed(seed)``.
* ``"zipf"`` init (ours, not in the paper): row ``i`` puts weight ``1 / rank^s`` (s = 1.1) on its tokens in a
  random per-row order, so each row has a few frequent successors and a long tail, like word bigrams; then the
  same zeroing and renormalisation as ``"random"``.
* Sequences are sampled ancestrally until EOS; EOS is forced at position ``MAX_LENGTH`` = 500 (§2.2).
* Metrics are exact on the matrices (§2.5): ``avg_js`` is the mean per-row Jensen–Shannon divergence (natural
  log; scipy's ``jensenshannon(...)**2`` with rows renormalised) and ``avg_zero_mass`` ("avg. 0s") the mean
  learned probability on transitions P forbids.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_LENGTH = 500  # max tokens of a sequence from P (EOS forced at 500), as in the official code
LOG_FLOOR = 1e-30  # log(P + 1e-30): an impossible transition costs log(1e-30) ≈ -69, as in the official code
INITS = ("random", "zipf")
ZIPF_EXPONENT = 1.1


@dataclass
class MarkovP:
    """The true distribution: ``transition`` ``(n, n)`` over tokens ``1..n`` and ``first`` ``(n,)``.

    Token ``k`` (1-based id) is row/column ``k - 1``; EOS is id ``n``.
    """

    transition: np.ndarray  # (n, n), rows sum to 1 except the EOS row (all zero)
    first: np.ndarray  # (n,), uniform 1/n

    @property
    def n(self) -> int:
        return int(self.transition.shape[0])

    @property
    def vocab_size(self) -> int:
        """V = n + 1 (PAD/BOS id 0)."""
        return self.n + 1

    @property
    def eos(self) -> int:
        return self.n

    def padded_log_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """``(logT, logfirst)`` over the full vocabulary: ``(V, V)`` and ``(V,)``, ``log(p + 1e-30)``.

        Row/column 0 is PAD/BOS: P never emits it, so moving to or from it costs log(1e-30) (official layout).
        """
        V = self.vocab_size
        T = np.zeros((V, V))
        T[1:, 1:] = self.transition
        f = np.zeros(V)
        f[1:] = self.first
        return np.log(T + LOG_FLOOR), np.log(f + LOG_FLOOR)


def make_p(
    vocab_size: int, seed: int | np.random.RandomState, init: str = "random", zero_percent: float = 0.5
) -> MarkovP:
    """Build the true bigram P of the MixCE synthetic experiment.

    Args:
        vocab_size: ``V`` including PAD/BOS id 0 (the official ``vocab_size``; 21 means 20 tokens incl. EOS).
        seed: an int seeding ``np.random.RandomState`` (for ``init="random"`` the same P as the official code
            after ``set_seed(seed)``), or a ``RandomState`` to draw from (then go on sampling data from it).
        init: ``"random"`` (Dirichlet(0.5) rows, the paper's) or ``"zipf"`` (ours, see the module docstring).
        zero_percent: probability of zeroing each non-EOS entry.

    Returns:
        A :class:`MarkovP`.
    """
    if int(vocab_size) != vocab_size or vocab_size < 3:
        raise ValueError(f"vocab_size must be an integer >= 3 (PAD, one token, EOS), got {vocab_size}; "
                         "the paper used 21, 51, 101, 501, 1001")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}; 'random' is the paper's Dirichlet(0.5) P")
    if not (0.0 <= zero_percent < 1.0):
        raise ValueError(f"zero_percent must be in [0, 1), got {zero_percent}; the paper used 0.5")
    n = int(vocab_size) - 1
    rs = seed if isinstance(seed, np.random.RandomState) else np.random.RandomState(seed)
    if init == "random":
        T = rs.dirichlet(np.ones(n) / 2, size=n)  # (n, n); α = 0.5 "makes the distribution more skewed"
    else:
        ranks = np.argsort(rs.random_sample((n, n)), axis=1).argsort(axis=1) + 1  # (n, n) random permutation
        T = ranks.astype(np.float64) ** -ZIPF_EXPONENT
    # official loop: for i < n-1, for j < n-1: zero w.p. zero_percent (row-major, one uniform per entry)
    zero = rs.random_sample((n - 1, n - 1)) < zero_percent
    T[: n - 1, : n - 1][zero] = 0.0
    T = T / T.sum(axis=1, keepdims=True)
    T[-1] = 0.0  # nothing follows EOS
    return MarkovP(transition=T, first=np.full(n, 1.0 / n))


@dataclass
class Sequences:
    """A set of variable-length sequences stored flat: tokens of sequence ``i`` are
    ``tokens[offsets[i] : offsets[i] + lengths[i]]`` (EOS included, BOS excluded)."""

    tokens: np.ndarray  # (total,) int64
    lengths: np.ndarray  # (N,) int64
    offsets: np.ndarray  # (N,) int64
    log_p: np.ndarray  # (N,) float64, exact log P(x) with the 1e-30 floor

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def subset(self, idx: np.ndarray) -> Sequences:
        """The sequences ``idx`` (any order), re-packed contiguously."""
        lens = self.lengths[idx]
        flat = _gather_index(self.offsets[idx], lens)
        return Sequences(self.tokens[flat], lens, np.cumsum(lens) - lens, self.log_p[idx])

    def bigram_pairs(self, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(prev, next)`` over every scored position of sequences ``idx``: ``prev`` is BOS (0) at t = 0.

        Returns two ``(sum of lengths,)`` int64 arrays (the flattened valid positions of a padded batch).
        """
        seqs = self if idx is None else self.subset(idx)
        nxt = seqs.tokens
        prev = np.empty_like(nxt)
        prev[1:] = nxt[:-1]
        prev[seqs.offsets] = 0  # BOS before each sequence's first token
        return prev, nxt

    def padded(self, pad: int = 0) -> np.ndarray:
        """``(N, max_len)`` token matrix, ``pad`` after EOS."""
        out = np.full((len(self), int(self.lengths.max())), pad, dtype=np.int64)
        rows = np.repeat(np.arange(len(self)), self.lengths)
        cols = np.arange(self.tokens.shape[0]) - np.repeat(self.offsets, self.lengths)
        out[rows, cols] = self.tokens
        return out


def _gather_index(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Flat indices ``[s0, s0+1, .., s0+l0-1, s1, ...]`` without a Python loop."""
    ends = np.cumsum(lens)
    return np.repeat(starts - (ends - lens), lens) + np.arange(int(ends[-1]) if len(ends) else 0)


def sample(p: MarkovP, num: int, seed: int | np.random.RandomState = 0, max_length: int = MAX_LENGTH) -> Sequences:
    """Ancestral sampling of ``num`` sequences from P, all at once (one vectorised step per position).

    Args:
        p: the true distribution.
        num: number of sequences.
        seed: an int or a ``RandomState`` to continue.
        max_length: EOS is forced at this position (official: 500).

    Returns:
        :class:`Sequences` with exact ``log_p`` (``Σ_t log(P(x_t | x_{t-1}) + 1e-30)``).
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    rs = seed if isinstance(seed, np.random.RandomState) else np.random.RandomState(seed)
    n, eos = p.n, p.eos
    cdf = np.cumsum(p.transition, axis=1)  # (n, n)
    cdf[:, -1] = np.where(cdf[:, -1] > 0, 1.0, 0.0)  # guard rounding: the last bucket catches u ≈ 1
    logT = np.log(p.transition + LOG_FLOOR)  # (n, n)
    cols = [rs.randint(n, size=num) + 1]  # first token uniform over 1..n (EOS included)
    log_p = np.log(p.first[cols[0] - 1] + LOG_FLOOR)
    alive = np.flatnonzero(cols[0] != eos)  # indices of unfinished sequences
    lengths = np.ones(num, dtype=np.int64)
    prev = cols[0][alive]
    steps = []  # (alive indices, tokens) per position t >= 1
    for t in range(1, max_length):
        if alive.size == 0:
            break
        if t == max_length - 1:
            w = np.full(alive.size, eos)  # forced EOS at the max length
        else:
            u = rs.random_sample(alive.size)
            w = (cdf[prev - 1] < u[:, None]).sum(axis=1) + 1  # inverse CDF, (alive,)
            w = np.minimum(w, n)
        log_p[alive] += logT[prev - 1, w - 1]
        lengths[alive] += 1
        steps.append((alive, w))
        keep = w != eos
        alive, prev = alive[keep], w[keep]
    out = np.zeros((num, int(lengths.max())), dtype=np.int64)
    out[:, 0] = cols[0]
    for t, (rows, w) in enumerate(steps, start=1):
        out[rows, t] = w
    mask = np.arange(out.shape[1])[None, :] < lengths[:, None]
    offsets = np.cumsum(lengths) - lengths
    return Sequences(out[mask], lengths, offsets, log_p)


def sequence_log_prob(p: MarkovP, padded: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Exact ``log P(x)`` of padded sequences (with the official 1e-30 floor per transition).

    Args:
        p: the true distribution.
        padded: ``(N, T)`` token ids (BOS excluded), anything after ``lengths``.
        lengths: ``(N,)`` number of scored tokens per row (EOS included).

    Returns:
        ``(N,)`` float64.
    """
    logT, logf = p.padded_log_matrices()  # (V, V), (V,)
    x = np.asarray(padded, dtype=np.int64)
    T = x.shape[1]
    mask = np.arange(T)[None, :] < np.asarray(lengths)[:, None]  # (N, T)
    lp = logf[x[:, 0]].copy()
    if T > 1:
        lp += (logT[x[:, :-1], x[:, 1:]] * mask[:, 1:]).sum(axis=1)
    return lp


def learned_and_gold(learned: np.ndarray, p: MarkovP) -> tuple[np.ndarray, np.ndarray]:
    """Align a learned ``(V, V)`` transition matrix with P as the official ``compare_parameters`` does.

    ``learned[:-1][:, 1:]`` drops the EOS input row and the PAD output column (rows BOS, 1..n-1; columns 1..n);
    the gold matrix is ``[first; transition[:-1]]`` (n × n).
    """
    V = p.vocab_size
    if learned.shape != (V, V):
        raise ValueError(f"learned matrix must be ({V}, {V}) for V={V}, got {learned.shape}")
    return learned[:-1, 1:], np.concatenate([p.first[None, :], p.transition[:-1]], axis=0)


def avg_js(learned: np.ndarray, p: MarkovP) -> float:
    """Mean over rows of the Jensen–Shannon divergence (nats) between learned and true rows (§2.5).

    Equals ``np.square(scipy.spatial.distance.jensenshannon(L, G, axis=1)).mean()``: each row is renormalised
    first, so learned mass on the PAD column is dropped. JS(a, b) = ½ KL(a‖m) + ½ KL(b‖m), m = (a + b) / 2.
    """
    L, G = learned_and_gold(np.asarray(learned, dtype=np.float64), p)
    a = L / L.sum(axis=1, keepdims=True)
    b = G / G.sum(axis=1, keepdims=True)
    m = (a + b) / 2

    def kl(x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x > 0, x * np.log(x / m), 0.0).sum(axis=1)  # 0 log 0 = 0

    return float((0.5 * kl(a) + 0.5 * kl(b)).mean())


def avg_zero_mass(learned: np.ndarray, p: MarkovP) -> float:
    """Mean learned probability (not renormalised) over the transitions P forbids ("avg. 0s", §2.5)."""
    L, G = learned_and_gold(np.asarray(learned, dtype=np.float64), p)
    zero = G == 0.0
    if not zero.any():
        return 0.0
    return float(L[zero].mean())


def make_world(
    vocab_size: int, seed: int, train_size: int = 50_000, dev_size: int = 5_000, init: str = "random",
    zero_percent: float = 0.5,
) -> tuple[MarkovP, Sequences, Sequences]:
    """P and its data as the official ``main`` builds them: one seeded stream draws P, then ``dev + train``
    sequences; the first ``dev_size`` are dev, the rest train (notes §2.2).

    Returns:
        ``(p, train, dev)``.
    """
    if train_size < 1 or dev_size < 1:
        raise ValueError(f"train_size and dev_size must be >= 1, got {train_size} and {dev_size}; "
                         "the paper used 50000 and 5000")
    rs = np.random.RandomState(seed)
    p = make_p(vocab_size, rs, init=init, zero_percent=zero_percent)
    data = sample(p, dev_size + train_size, rs)
    return p, data.subset(np.arange(dev_size, dev_size + train_size)), data.subset(np.arange(dev_size))


# ----- the world in a character tokenizer's ids -------------------------------------------------------
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


class MarkovTask:
    """The bigram world as a :class:`seqlevel.tasks.base.Task` (exact P), in a character tokenizer's ids.

    The tokenizer is :func:`markov_tokenizer` (Markov token ``k`` of ``1..n−1`` is
    tokenizer id ``3 + k``, Markov EOS is ``<eos>``), so ``vocab_size`` is at most 96. ``log_prob`` is the exact
    ``log P(x)`` of the sampler: ``-inf`` for an impossible transition (where :attr:`Sequences.log_p` charges
    the official floor, log 1e-30 ≈ −69) and no cost for the EOS forced at ``max_length``.

    Args:
        vocab_size: ``V`` of :func:`make_p` (PAD/BOS included; 21 is the paper's smallest).
        seed: seeds P (:func:`make_p`); ``sample``'s own ``seed`` seeds the data.
        init, zero_percent: as :func:`make_p`.
        max_length: EOS is forced at this position (official: 500); at least 2.
    """

    name = "markov"
    exact_p = True

    def __init__(self, vocab_size: int = 21, seed: int = 0, init: str = "random", zero_percent: float = 0.5,
                 max_length: int = MAX_LENGTH):

        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (one token, then the forced EOS), got {max_length}; "
                             f"the paper used {MAX_LENGTH}")
        self.p = make_p(vocab_size, seed, init=init, zero_percent=zero_percent)
        self.max_length = int(max_length)
        self.tokenizer = markov_tokenizer(self.p, model_max_length=max(256, self.max_length + 1))

    def sample(self, n: int, seed: int = 0) -> list[list[int]]:
        """``n`` sequences ``<bos> x_1 … <eos>`` from :func:`sample` (the same draws for the same ``seed``)."""

        seqs = sample(self.p, n, seed, max_length=self.max_length)
        bos, eos = int(self.tokenizer.bos_token_id), int(self.tokenizer.eos_token_id)
        return [[bos, *to_tokenizer_ids(self.p, seqs.tokens[o: o + k], eos)]
                for o, k in zip(seqs.offsets, seqs.lengths)]

    def markov_ids(self, ids: Sequence[int]) -> np.ndarray:
        """Tokenizer ids (a leading ``<bos>`` optional) → ``(L,)`` Markov ids; 0 for a token that is not the world's."""

        ids = [int(t) for t in ids]
        if ids and ids[0] == self.tokenizer.bos_token_id:
            ids = ids[1:]
        eos = int(self.tokenizer.eos_token_id)
        return np.array([to_markov_id(self.p, t, eos) for t in ids], dtype=np.int64)

    def log_prob(self, ids: Sequence[int]) -> float:
        """Exact ``log P(x)`` of one sequence; ``-inf`` when it is not a complete sequence P can draw."""
        if not self.score(ids)["valid"]:
            return float("-inf")
        x = self.markov_ids(ids)
        if len(x) == self.max_length:
            x = x[:-1]  # the EOS at max_length is forced: probability 1
        return float(sequence_log_prob(self.p, x[None, :], np.array([len(x)]))[0])

    def score(self, ids: Sequence[int]) -> dict[str, float]:
        """``impossible``: transitions P forbids (``<bos>`` → any world token is allowed; a token that is not the
        world's, or anything after EOS, is impossible); ``valid``: 1 when there are none and the sequence ends with
        its first EOS within ``max_length``; ``length``: tokens after ``<bos>``, EOS included."""
        x = self.markov_ids(ids)  # (L,)
        prev = np.concatenate([[0], x[:-1]]) if len(x) else x
        allowed = np.where(prev == 0, True, self.p.transition[prev - 1, x - 1] > 0.0) & (x != 0)  # (L,)
        impossible = int((~allowed).sum())
        complete = len(x) > 0 and x[-1] == self.p.eos and len(x) <= self.max_length
        return {"impossible": float(impossible), "valid": float(impossible == 0 and complete), "length": float(len(x))}
