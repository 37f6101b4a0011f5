"""Text statistics used by the papers' tables: diversity (two definitions), rep-n, n-gram entropy, lengths.

Inputs are token sequences: ``list[list[int]]`` (or any hashable tokens), or strings, which are split on
whitespace. Two *different* diversity metrics exist in this literature and are named distinctly here:

* :func:`distinct_ngram_diversity` — MixCE's ``diversity()``: per text, all 1..4-grams pooled, ``#distinct /
  #total`` (n-grams with n > 2 made of one repeated token are skipped), averaged over texts.
* :func:`simctg_diversity` — Su et al. (SimCTG, 2022): ``∏_{n=2..4} (1 − rep-n)``, with corpus-level rep-n.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence

Tokens = Sequence[Hashable]


def _tokens(texts: Sequence[str | Tokens]) -> list[list]:
    if isinstance(texts, str):
        raise ValueError("pass a list of texts (or token lists), not a single string")
    return [t.split() if isinstance(t, str) else list(t) for t in texts]


def _ngrams(tokens: list, n: int) -> list[tuple]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_ngram_diversity(texts: Sequence[str | Tokens], max_n: int = 4) -> float:
    """MixCE's diversity: per text ``#distinct / #total`` over the pooled 1..``max_n``-grams, averaged over texts.

    n-grams with n > 2 consisting of a single repeated token (e.g. ``"a a a"``) are skipped, as in the MixCE
    code. Texts with no n-gram are left out of the average; returns 0.0 when no text has one.
    """
    scores = []
    for toks in _tokens(texts):
        grams = []
        for n in range(1, max_n + 1):
            grams += [g for g in _ngrams(toks, n) if not (n > 2 and len(set(g)) == 1)]
        if grams:
            scores.append(len(set(grams)) / len(grams))
    return sum(scores) / len(scores) if scores else 0.0


def rep_n(texts: Sequence[str | Tokens], n: int) -> float:
    """SimCTG's rep-n as a fraction: ``1 − Σ_texts |unique n-grams| / Σ_texts |n-grams|`` (0 = no repetition)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    total = unique = 0
    for toks in _tokens(texts):
        grams = _ngrams(toks, n)
        total += len(grams)
        unique += len(set(grams))
    return 1.0 - unique / total if total else 0.0


def simctg_diversity(texts: Sequence[str | Tokens]) -> float:
    """SimCTG diversity ``(1 − rep-2)(1 − rep-3)(1 − rep-4)``; 1 means no repeated 2-, 3- or 4-gram."""
    return math.prod(1.0 - rep_n(texts, n) for n in (2, 3, 4))


def ngram_entropy(texts: Sequence[str | Tokens], n: int = 1) -> float:
    """Entropy (nats) of the corpus-level n-gram frequency distribution."""
    counts = Counter(g for toks in _tokens(texts) for g in _ngrams(toks, n))
    total = sum(counts.values())
    if total == 0:
        return 0.0
    return -sum(c / total * math.log(c / total) for c in counts.values())


def length_stats(texts: Sequence[str | Tokens]) -> dict[str, float]:
    """Mean, median, min and max length in tokens."""
    lengths = sorted(len(t) for t in _tokens(texts))
    if not lengths:
        return {"mean": 0.0, "median": 0.0, "min": 0, "max": 0}
    mid = len(lengths) // 2
    median = lengths[mid] if len(lengths) % 2 else (lengths[mid - 1] + lengths[mid]) / 2
    return {"mean": sum(lengths) / len(lengths), "median": float(median), "min": lengths[0], "max": lengths[-1]}


def backspace_usage(actions: Sequence[Sequence[int]], backspace_id: int) -> dict[str, float]:
    """How often generated action sequences used ``<bksp>``.

    Returns:
        ``rate`` (backspaces / actions), ``per_sequence`` (mean backspaces per sequence) and ``fraction_used``
        (share of sequences with at least one backspace).
    """
    n_actions = sum(len(a) for a in actions)
    counts = [sum(1 for x in a if int(x) == backspace_id) for a in actions]
    n = len(counts)
    return {
        "rate": sum(counts) / n_actions if n_actions else 0.0,
        "per_sequence": sum(counts) / n if n else 0.0,
        "fraction_used": sum(c > 0 for c in counts) / n if n else 0.0,
    }
