"""``reviews``: a small generative review language with a 1-5 star attribute whose posterior is exact.

Generative story (a hidden-class model with an exact forward pass):

    star s ~ Uniform{1..5}
    3 clauses, each i.i.d. given s:   sentiment c ~ P(c | s)  (c ∈ {neg, neutral, pos}, ``SENTIMENT_GIVEN_STAR``)
                                      "the" NOUN VERB PHRASE,  NOUN, VERB uniform, PHRASE ~ P(phrase | c)
    text = clause₁ "," clause₂ "and" clause₃ "." then the star token "*s", then <eos>

Phrases overlap across sentiments on purpose (``not bad`` is positive or neutral, ``not`` starts positive,
neutral and negative phrases; ``really`` starts good and bad ones), so a prefix that stops inside a clause carries
partial evidence. The rating token comes last, as in the CAT Amazon format (notes §1.2), so Monte-Carlo rollouts
are labelled by the star the LM itself writes.

Exact quantities (:class:`ReviewWorld`):

* ``posterior(words)``: ``P(s | prefix) ∝ P(s) · Π_complete Σ_c P(c|s) P(clause|c) · Σ_c P(c|s) P(partial…|c)``,
  where ``P(partial…|c)`` sums the probabilities of every clause that starts with the partial words (a prefix
  table built once by enumeration: 8 nouns x 2 verbs x 6 phrases per sentiment).
* ``log_prob(words)``: the true log-probability of a complete text (without the star), ``-inf`` if ungrammatical.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

NOUNS = ("food", "service", "price", "staff", "room", "screen", "battery", "case")
VERBS = ("was", "is")
# P(phrase | sentiment); phrases are word tuples. Order of sentiments: neg, neutral, pos.
PHRASES: dict[str, tuple[tuple[tuple[str, ...], float], ...]] = {
    "neg": ((("bad",), 0.25), (("awful",), 0.2), (("terrible",), 0.15), (("not", "good"), 0.2),
            (("really", "bad"), 0.15), (("not", "great"), 0.05)),
    "neutral": ((("okay",), 0.35), (("fine",), 0.3), (("not", "bad"), 0.15), (("not", "great"), 0.15),
                (("really", "okay"), 0.05)),
    "pos": ((("great",), 0.25), (("good",), 0.25), (("amazing",), 0.15), (("really", "good"), 0.15),
            (("not", "bad"), 0.1), (("really", "great"), 0.1)),
}
SENTIMENTS = ("neg", "neutral", "pos")
SENTIMENT_GIVEN_STAR = np.array([  # rows: stars 1..5; columns: neg, neutral, pos
    [0.80, 0.15, 0.05],
    [0.55, 0.35, 0.10],
    [0.20, 0.60, 0.20],
    [0.10, 0.35, 0.55],
    [0.05, 0.15, 0.80],
])
SEPARATORS = (",", "and", ".")
STAR_TOKENS = tuple(f"*{s}" for s in range(1, 6))
NUM_CLAUSES = 3


def _clause_table() -> tuple[dict[tuple[str, ...], np.ndarray], dict[tuple[str, ...], np.ndarray]]:
    """``full[clause] = P(clause | c)`` and ``prefix[p] = Σ_{clause starting with p} P(clause | c)``, shape (3,)."""
    full: dict[tuple[str, ...], np.ndarray] = defaultdict(lambda: np.zeros(3))
    for ci, c in enumerate(SENTIMENTS):
        for noun in NOUNS:
            for verb in VERBS:
                for phrase, pp in PHRASES[c]:
                    full[("the", noun, verb, *phrase)][ci] += pp / (len(NOUNS) * len(VERBS))
    prefix: dict[tuple[str, ...], np.ndarray] = defaultdict(lambda: np.zeros(3))
    for clause, p in full.items():
        for k in range(len(clause) + 1):
            prefix[clause[:k]] += p
    return dict(full), dict(prefix)


def word_tokenizer(words: tuple[str, ...]) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer: ``<pad> <bos> <eos> <unk>`` (ids 0-3) then ``words`` in order."""
    vocab = {s: i for i, s in enumerate(("<pad>", "<bos>", "<eos>", "<unk>"))}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>")
    fast.padding_side = "right"
    return fast


class ReviewWorld:
    """The review language: sampling, exact star posteriors and exact text probabilities."""

    def __init__(self):
        self.full, self.prefix = _clause_table()
        words = sorted({w for c in self.full for w in c}) + list(SEPARATORS) + list(STAR_TOKENS) + ["<bksp>"]
        self.tokenizer = word_tokenizer(tuple(words))
        self.star_ids = [self.tokenizer.convert_tokens_to_ids(t) for t in STAR_TOKENS]
        self.backspace_id = self.tokenizer.convert_tokens_to_ids("<bksp>")  # never in the data; for backtracking
        self.num_classes = 5
        # P(clause | s) for every clause: (n_clauses, 5)
        self._clauses = list(self.full)
        self._clause_probs = np.stack([self.full[c] for c in self._clauses])  # (n, 3)

    # -- sampling ---------------------------------------------------------------------------------------------
    def sample(self, n: int, seed: int = 0) -> list[tuple[list[str], int]]:
        """``n`` reviews as ``(words including the final star token, star 1..5)``."""
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            s = int(rng.integers(1, 6))
            words: list[str] = []
            for i in range(NUM_CLAUSES):
                c = SENTIMENTS[rng.choice(3, p=SENTIMENT_GIVEN_STAR[s - 1])]
                phrases, probs = zip(*PHRASES[c])
                phrase = phrases[rng.choice(len(phrases), p=np.array(probs) / sum(probs))]
                words += ["the", NOUNS[rng.integers(len(NOUNS))], VERBS[rng.integers(len(VERBS))], *phrase]
                words.append(SEPARATORS[i])
            out.append((words + [STAR_TOKENS[s - 1]], s))
        return out

    def dataset(self, n: int, seed: int = 0):
        """A ``datasets.Dataset`` with ``text`` (words + star token) and ``attribute`` (star − 1, in 0..4)."""
        import datasets

        rows = self.sample(n, seed)
        return datasets.Dataset.from_dict({"text": [" ".join(w) for w, _ in rows],
                                           "attribute": [s - 1 for _, s in rows]})

    # -- exact quantities -------------------------------------------------------------------------------------
    def _split(self, words: list[str]) -> tuple[list[tuple[str, ...]], tuple[str, ...], str | None] | None:
        """Complete clauses, the trailing partial clause, and the star token if present; None if ungrammatical."""
        clauses, cur, star = [], [], None
        for w in words:
            if star is not None:
                return None  # nothing may follow the star
            if w in STAR_TOKENS:
                if len(clauses) != NUM_CLAUSES or cur:
                    return None
                star = w
            elif w in SEPARATORS:
                if len(clauses) >= NUM_CLAUSES or w != SEPARATORS[len(clauses)] or tuple(cur) not in self.full:
                    return None
                clauses.append(tuple(cur))
                cur = []
            else:
                cur.append(w)
        if tuple(cur) not in self.prefix or (cur and len(clauses) >= NUM_CLAUSES):
            return None
        return clauses, tuple(cur), star

    def posterior(self, words: list[str]) -> np.ndarray | None:
        """Exact ``P(star | prefix)`` as ``(5,)`` (stars 1..5); ``None`` if the prefix is impossible."""
        parts = self._split(words)
        if parts is None:
            return None
        clauses, partial, star = parts
        if star is not None:
            return np.eye(5)[STAR_TOKENS.index(star)]
        log_w = np.zeros(5)  # uniform prior
        for c in clauses:
            log_w += np.log(SENTIMENT_GIVEN_STAR @ self.full[c])
        log_w += np.log(SENTIMENT_GIVEN_STAR @ self.prefix[partial])
        w = np.exp(log_w - log_w.max())
        return w / w.sum()

    def log_prob(self, words: list[str]) -> float:
        """True ``log P(text)`` of a complete review without its star token; ``-inf`` if not in the language."""
        parts = self._split(words)
        if parts is None or len(parts[0]) != NUM_CLAUSES or parts[1] or parts[2] is not None:
            return float("-inf")
        per_star = np.log(np.full(5, 0.2))
        for c in parts[0]:
            per_star += np.log(SENTIMENT_GIVEN_STAR @ self.full[c])
        m = per_star.max()
        return float(m + math.log(np.exp(per_star - m).sum()))

    def label(self, words: list[str]) -> int | None:
        """The class (0..4) of the first star token in ``words`` (how a rollout is labelled), else None."""
        for w in words:
            if w in STAR_TOKENS:
                return STAR_TOKENS.index(w)
        return None

    def words(self, ids: list[int]) -> list[str]:
        """Token ids -> words, dropping ``<bos>``/``<pad>`` and stopping at ``<eos>``."""
        out = []
        for t in self.tokenizer.convert_ids_to_tokens(list(ids)):
            if t == "<eos>":
                break
            if t not in ("<bos>", "<pad>"):
                out.append(t)
        return out


class ReviewsTask:
    """The review language as a :class:`seqlevel.tasks.base.Task`: exact joint P of text and star, exact posterior.

    A sequence is ``<bos>`` + the words of :meth:`ReviewWorld.sample` (text, then the star token) + ``<eos>``, in
    ``ReviewWorld``'s tokenizer's ids (its ``<bksp>`` id is never in the data).
    """

    name = "reviews"
    exact_p = True

    def __init__(self):
        self.world = ReviewWorld()
        self.tokenizer = self.world.tokenizer

    def sample(self, n: int, seed: int = 0) -> list[list[int]]:
        """``n`` reviews of :meth:`ReviewWorld.sample` (the same draws for the same ``seed``)."""
        bos, eos = int(self.tokenizer.bos_token_id), int(self.tokenizer.eos_token_id)
        return [[bos, *self.tokenizer.convert_tokens_to_ids(words), eos] for words, _ in self.world.sample(n, seed)]

    def _text_and_star(self, ids: Sequence[int]) -> tuple[list[str], int | None]:
        """The words before the first star token, and that star (1..5; None if there is none)."""
        words = self.world.words(list(ids))
        star = self.world.label(words)
        return (words, None) if star is None else (words[: words.index(STAR_TOKENS[star])], star + 1)

    def log_prob(self, ids: Sequence[int]) -> float:
        """Exact ``log P(text, star) = log P(text) + log P(star | text)``; ``-inf`` unless ``ids`` is
        ``[<bos>]`` text star ``<eos>`` with a text in the language."""
        ids = [int(t) for t in ids]
        body = ids[1:] if ids[:1] == [self.tokenizer.bos_token_id] else ids
        words = self.world.words(body)
        if body != [*self.tokenizer.convert_tokens_to_ids(words), self.tokenizer.eos_token_id] or \
                not words or words[-1] not in STAR_TOKENS:
            return float("-inf")  # not words, then one star token, then <eos>
        text, star = words[:-1], STAR_TOKENS.index(words[-1])
        log_text = self.world.log_prob(text)  # -inf for a text outside the language
        if log_text == float("-inf"):
            return log_text
        return log_text + math.log(self.world.posterior(text)[star])

    def score(self, ids: Sequence[int]) -> dict[str, float]:
        """On the text before the star token: ``p_star_1..5``, the exact ``P(star | text)`` (NaN if no text of the
        language starts so); ``map_star``, the true most likely star (1..5, NaN likewise); ``valid``: 1 when the
        text is a complete review of the language; ``star``: the star written (0 if none)."""
        text, star = self._text_and_star(ids)
        post = self.world.posterior(text)
        probs = np.full(5, np.nan) if post is None else post
        return {**{f"p_star_{s}": float(probs[s - 1]) for s in range(1, 6)},
                "map_star": float("nan") if post is None else float(np.argmax(post) + 1),
                "valid": float(self.world.log_prob(text) > float("-inf")), "star": float(star or 0)}
