"""Text statistics against examples computed by hand."""

import math

import pytest

from seqlevel.metrics import (
    backspace_usage,
    distinct_ngram_diversity,
    length_stats,
    ngram_entropy,
    rep_n,
    simctg_diversity,
)


def test_distinct_ngram_diversity_by_hand():
    # "a b a": 1-grams a,b,a (2 distinct/3); 2-grams ab,ba (2/2); 3-gram aba (1/1) -> 5/6
    assert distinct_ngram_diversity(["a b a"]) == pytest.approx(5 / 6)
    # "a a a a": 1-grams 1/4, 2-grams (a a)x3 -> 1/3 kept (n<=2), 3-/4-grams of one repeated token are skipped
    assert distinct_ngram_diversity(["a a a a"]) == pytest.approx(2 / 7)
    # averaged over texts, token lists accepted
    assert distinct_ngram_diversity([[1, 2, 1], [7, 7, 7, 7]]) == pytest.approx((5 / 6 + 2 / 7) / 2)


def test_rep_n_and_simctg_diversity_by_hand():
    texts = ["a b a b", "c d"]
    # 2-grams: text1 ab,ba,ab (3 total, 2 unique); text2 cd (1,1) -> rep-2 = 1 - 3/4
    assert rep_n(texts, 2) == pytest.approx(0.25)
    # 3-grams: aba, bab (2,2) -> 0; 4-grams: abab (1,1) -> 0
    assert rep_n(texts, 3) == 0.0 and rep_n(texts, 4) == 0.0
    assert simctg_diversity(texts) == pytest.approx(0.75)
    assert simctg_diversity(["x y z w"]) == 1.0


def test_ngram_entropy_by_hand():
    assert ngram_entropy(["a b"], 1) == pytest.approx(math.log(2))
    assert ngram_entropy(["a a a"], 1) == 0.0
    assert ngram_entropy(["a b c d"], 2) == pytest.approx(math.log(3))


def test_length_stats_and_backspace_usage():
    assert length_stats(["a b c", "a", [1, 2]]) == {"mean": 2.0, "median": 2.0, "min": 1, "max": 3}
    use = backspace_usage([[5, 9, 6], [1, 2], [9, 9]], backspace_id=9)
    assert use == {"rate": pytest.approx(3 / 7), "per_sequence": 1.0, "fraction_used": pytest.approx(2 / 3)}


def test_bad_input():
    with pytest.raises(ValueError, match="not a single string"):
        rep_n("a b c", 2)
    with pytest.raises(ValueError, match="n must be >= 1"):
        rep_n(["a"], 0)
