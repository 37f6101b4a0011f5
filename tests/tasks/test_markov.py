"""The bigram world of the MixCE synthetic experiment: P construction, sampling, exact log P, metrics, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import distance

from seqlevel.tasks.markov import (
    MAX_LENGTH,
    MarkovP,
    avg_js,
    avg_zero_mass,
    make_p,
    make_world,
    sample,
    sequence_log_prob,
)
from seqlevel.tasks.markov_train import BigramLM, TrainConfig, parse_objective, train_bigram


@pytest.mark.parametrize("init", ["random", "zipf"])
@pytest.mark.parametrize("V", [21, 51])
def test_p_construction(V, init):
    p = make_p(V, seed=3, init=init)
    n = V - 1
    T = p.transition
    assert T.shape == (n, n) and p.first.shape == (n,)
    np.testing.assert_allclose(T[:-1].sum(axis=1), 1.0, atol=1e-12)  # rows sum to 1 ...
    assert np.all(T[-1] == 0.0)  # ... except EOS's, which is all zero
    assert np.all(T[:-1, -1] > 0.0)  # EOS column never zeroed: every row can terminate
    np.testing.assert_allclose(p.first, 1.0 / n)  # uniform first token, EOS included
    zero_frac = (T[:-1, :-1] == 0).mean()
    # zero fraction ~ Binomial((n-1)^2, 0.5) / (n-1)^2: 4 sigma = 4 * 0.5 / (n-1)
    assert abs(zero_frac - 0.5) < 4 * 0.5 / (n - 1), zero_frac
    assert p.eos == n and p.vocab_size == V


def test_p_matches_official_random_stream():
    """Same P as the official loop (np.random.seed, dirichlet, then one uniform per entry, row-major)."""
    n, seed = 20, 42
    np.random.seed(seed)
    T = np.random.dirichlet(np.ones(n) / 2, size=n)
    for i in range(n - 1):
        for j in range(n - 1):
            if np.random.random() < 0.5:
                T[i][j] = 0
    T = T / np.expand_dims(T.sum(axis=1), axis=1)
    T[-1] = 0
    np.testing.assert_array_equal(make_p(n + 1, seed).transition, T)


def test_bad_p_inputs():
    with pytest.raises(ValueError, match="vocab_size"):
        make_p(2, 0)
    with pytest.raises(ValueError, match="init"):
        make_p(21, 0, init="uniform")
    with pytest.raises(ValueError, match="zero_percent"):
        make_p(21, 0, zero_percent=1.0)


def test_sampling_matches_p():
    """Empirical bigram frequencies vs P, each row within 5 binomial standard errors (+1e-3)."""
    p = make_p(11, seed=0)
    s = sample(p, 20_000, seed=1)
    assert np.all(s.tokens[s.offsets + s.lengths - 1] == p.eos)  # every sequence ends with EOS ...
    assert np.sum(s.tokens == p.eos) == len(s)  # ... and has exactly one
    prev, nxt = s.bigram_pairs()
    counts = np.zeros((p.vocab_size, p.vocab_size))
    np.add.at(counts, (prev, nxt), 1)
    first = counts[0, 1:] / counts[0].sum()
    np.testing.assert_allclose(first, p.first, atol=5 * np.sqrt(0.1 * 0.9 / counts[0].sum()) + 1e-3)
    for k in range(1, p.n):  # rows of tokens 1..n-1
        row = counts[k, 1:]
        emp = row / row.sum()
        se = np.sqrt(p.transition[k - 1] * (1 - p.transition[k - 1]) / row.sum())
        assert np.all(np.abs(emp - p.transition[k - 1]) <= 5 * se + 1e-3), k
        assert np.all(row[p.transition[k - 1] == 0] == 0)  # never a forbidden transition


def test_max_length_forces_eos():
    T = np.zeros((3, 3))
    T[0] = [0.0, 0.999, 0.001]  # token 1 -> 2 almost surely
    T[1] = [0.999, 0.0, 0.001]  # token 2 -> 1 almost surely
    p = MarkovP(transition=T, first=np.full(3, 1 / 3))
    s = sample(p, 300, seed=0, max_length=20)
    assert s.lengths.max() == 20
    assert np.all(s.tokens[s.offsets + s.lengths - 1] == 3)
    np.testing.assert_allclose(s.log_p, sequence_log_prob(p, s.padded(), s.lengths), rtol=1e-12)
    assert MAX_LENGTH == 500


def test_sequence_log_prob_vs_naive_loop():
    p = make_p(21, seed=5)
    s = sample(p, 200, seed=6)
    padded = s.padded()
    naive = []
    for i in range(len(s)):
        x = padded[i, : s.lengths[i]]
        lp = np.log(p.first[x[0] - 1] + 1e-30)
        for a, b in zip(x[:-1], x[1:]):
            lp += np.log(p.transition[a - 1, b - 1] + 1e-30)
        naive.append(lp)
    np.testing.assert_allclose(sequence_log_prob(p, padded, s.lengths), naive, rtol=1e-12)
    np.testing.assert_allclose(s.log_p, naive, rtol=1e-12)
    bad = padded.copy()
    bad[0, 0], bad[0, 1] = 1, 1  # a forbidden or allowed 1 -> 1; costs log(1e-30) if forbidden
    if p.transition[0, 0] == 0:
        assert sequence_log_prob(p, bad[:1], s.lengths[:1])[0] < -60


def test_metrics_by_hand_and_vs_scipy():
    # n = 2 tokens (token 1, EOS=2), V = 3: gold rows = [first; T[0]] = [[.5, .5], [0, 1]]
    p = MarkovP(transition=np.array([[0.0, 1.0], [0.0, 0.0]]), first=np.array([0.5, 0.5]))
    learned = np.array([[0.2, 0.4, 0.4], [0.1, 0.3, 0.6], [0.3, 0.3, 0.4]])  # (V, V) incl. PAD row/col
    # row BOS: learned [.4,.4] -> renormalised [.5,.5] = gold: JS 0. Row 1: a=[1/3, 2/3], b=[0, 1].
    a, b = np.array([1 / 3, 2 / 3]), np.array([0.0, 1.0])
    m = (a + b) / 2
    js1 = 0.5 * np.sum(a * np.log(a / m)) + 0.5 * np.sum(b[b > 0] * np.log(b[b > 0] / m[b > 0]))
    assert avg_js(learned, p) == pytest.approx(js1 / 2, rel=1e-12)
    L, G = learned[:-1, 1:], np.array([[0.5, 0.5], [0.0, 1.0]])
    assert avg_js(learned, p) == pytest.approx(np.square(distance.jensenshannon(L, G, axis=1)).mean(), rel=1e-10)
    assert avg_zero_mass(learned, p) == pytest.approx(0.3)  # the one forbidden cell, not renormalised
    # a bigger random case against scipy
    p = make_p(21, seed=9)
    rng = np.random.default_rng(0)
    learned = rng.dirichlet(np.ones(21), size=21)
    L = learned[:-1, 1:]
    G = np.concatenate([p.first[None], p.transition[:-1]])
    assert avg_js(learned, p) == pytest.approx(np.square(distance.jensenshannon(L, G, axis=1)).mean(), rel=1e-9)
    assert avg_zero_mass(learned, p) == pytest.approx(L[G == 0].mean(), rel=1e-12)


def test_model_forward_equals_official_per_position_mlp():
    torch.manual_seed(0)
    m = BigramLM(21).eval()
    prev = torch.randint(0, 21, (50,))
    torch.testing.assert_close(m(prev), m.mlp(m.embedding(prev)))
    with torch.no_grad():
        expect = torch.softmax(m(torch.arange(21)), -1).double().numpy()
    np.testing.assert_allclose(m.transition_matrix(), expect, rtol=1e-6)
    m.train()
    torch.manual_seed(1)
    out = m(torch.zeros(20_000, dtype=torch.long))  # same input, independent dropout per position
    assert out.std(0).mean() > 1e-3


def test_parse_objective():
    assert parse_objective("mle").param is None
    assert parse_objective("mixce:0.9").eta == 0.9
    assert parse_objective("tailr:1e-7").param == 1e-7 and parse_objective("tailr:1e-7").eta is None
    for bad, msg in [("mixce:1.5", "eta must be in"), ("mixce", "needs its eta"), ("bogus", "unknown objective"),
                     ("mle:0.5", "takes no parameter"), ("mixce:x", "must be a number")]:
        with pytest.raises(ValueError, match=msg):
            parse_objective(bad)


def test_training_learns_and_early_stops():
    """A short MLE run gets much closer to P than the untrained model; the result is the best-dev epoch."""
    p, train, dev = make_world(11, seed=0, train_size=3000, dev_size=500)
    torch.manual_seed(0)
    untrained = avg_js(BigramLM(11).transition_matrix(), p)
    r = train_bigram(p, train, dev, parse_objective("mle"), 0, TrainConfig(max_epochs=6, batch_size=500))
    assert r.avg_js < 0.5 * untrained
    assert r.best_epoch == 1 + int(np.argmin(r.dev_losses))
    assert r.avg_js == r.history[r.best_epoch - 1]["avg_js"]
    with pytest.raises(ValueError, match="smaller than one batch"):
        train_bigram(p, train, dev, parse_objective("mle"), 0, TrainConfig(batch_size=5000))
