"""reviews: the exact posterior agrees with brute-force enumeration and with sampling frequencies."""

import itertools

import numpy as np

from seqlevel.tasks.reviews import SENTIMENT_GIVEN_STAR, ReviewWorld


def test_posterior_matches_brute_force_enumeration():
    w = ReviewWorld()
    words = ["the", "food", "was", "not", "bad", ",", "the", "room", "is", "really"]
    # brute force: sum P(s) Π P(clause) over every first clause and every second clause starting "the room is really"
    clauses = list(w.full)
    num = np.zeros(5)
    for s in range(5):
        for c1, c2 in itertools.product(clauses, clauses):
            if list(c1) != words[:5] or list(c2[:4]) != words[6:10]:
                continue
            num[s] += 0.2 * (SENTIMENT_GIVEN_STAR[s] @ w.full[c1]) * (SENTIMENT_GIVEN_STAR[s] @ w.full[c2])
    np.testing.assert_allclose(w.posterior(words), num / num.sum(), rtol=1e-10)


def test_posterior_matches_sampling_frequency():
    w = ReviewWorld()
    rows = w.sample(20_000, seed=0)
    prefix = ("the", "staff")  # uninformative so far -> uniform; then check a clause-level event
    assert np.allclose(w.posterior(list(prefix)), 0.2)
    hits = [s for words, s in rows if words[3] in ("great", "amazing")]
    freq = np.bincount(hits, minlength=6)[1:] / len(hits)
    exact = w.posterior(["the", "staff", "is", "great", ","])
    np.testing.assert_allclose(freq, exact, atol=0.02)  # ~2000 hits: s.e. <= 0.011


def test_log_prob_sums_to_one_and_grammar_checks():
    w = ReviewWorld()
    clauses = list(w.full)
    # Σ over all 3-clause texts of P(text) = 1 (exact enumeration: per-star clause marginals factorise)
    per_star = np.array([sum(SENTIMENT_GIVEN_STAR[s] @ w.full[c] for c in clauses) for s in range(5)])
    assert np.allclose(per_star, 1.0)
    words, _ = w.sample(1, seed=3)[0]
    assert np.isfinite(w.log_prob(words[:-1]))
    assert w.log_prob(words[:-2]) == float("-inf")  # missing the final clause's end
    assert w.posterior(["the", "the"]) is None
    assert w.label(words) == int(words[-1][1]) - 1
    ids = w.tokenizer(" ".join(words))["input_ids"]
    assert w.words(ids) == words
