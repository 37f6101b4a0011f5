"""MAUVE sanity (identical >= 0.95, clearly different <= 0.5), featurization, perplexity, oracle NLL."""

import math

import numpy as np
import pytest
import torch

from seqlevel.losses import mle_loss
from seqlevel.metrics import FeatureCache, coherence, featurize, mauve, perplexity, true_nll

OPTS = dict(num_buckets=5, kmeans_num_redo=1, kmeans_max_iter=50, seed=1)


def test_mauve_identical_features_score_high():
    x = np.random.default_rng(0).normal(size=(100, 16)).astype(np.float32)
    assert mauve(p_features=x, q_features=x.copy(), **OPTS).mauve >= 0.95


def test_mauve_different_features_score_low():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(100, 16)).astype(np.float32)
    q = (rng.normal(size=(100, 16)) + 6.0).astype(np.float32)
    assert mauve(p_features=p, q_features=q, **OPTS).mauve <= 0.5


def test_featurize_last_real_token_and_cache(byte_tok, make_model):
    model = make_model("tiny-gpt2", tokenizer=byte_tok)
    texts = ["hello there", "a", "some longer text here"]
    f = featurize(texts, model, byte_tok, batch_size=2)
    assert f.shape == (3, model.config.n_embd) and f.dtype == np.float32
    # the same as running each text alone (padding must not leak in)
    ids = byte_tok("a", return_tensors="pt")
    alone = model(**ids, output_hidden_states=True).hidden_states[-1][0, -1]
    np.testing.assert_allclose(f[1], alone.detach().numpy(), atol=1e-5)
    cache = FeatureCache()
    a = cache.get(texts, model, byte_tok)
    b = cache.get(texts, model, byte_tok)
    assert a is b and len(cache) == 1
    res = mauve(p_texts=texts * 4, q_texts=texts * 4, featurizer=model, featurizer_tokenizer=byte_tok, cache=cache,
                **OPTS)
    assert res.mauve >= 0.95


def test_mauve_bad_input():
    x = np.zeros((10, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="q side missing"):
        mauve(p_features=x)
    with pytest.raises(ValueError, match="differ in width"):
        mauve(p_features=x, q_features=np.zeros((10, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="needs featurizer"):
        mauve(p_features=x, q_texts=["a", "b"])


def test_perplexity_matches_loss(byte_tok, make_model):
    model = make_model("tiny-llama", tokenizer=byte_tok)
    seqs = [[5, 6, 7, 8], [9, 10]]
    got = perplexity(model, seqs, batch_size=1)
    total = 0.0
    for s in seqs:
        ids = torch.tensor([s])
        total += mle_loss(model(input_ids=ids).logits[:, :-1], ids[:, 1:], reduction="sum").item()
    assert got["tokens"] == 4
    assert got["nll"] == pytest.approx(total / 4, rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(total / 4), rel=1e-5)


def test_coherence_identical_texts_is_one(byte_tok, make_model):
    model = make_model("tiny-gpt2", tokenizer=byte_tok)
    assert coherence(["abc", "xyz"], ["abc", "xyz"], model, byte_tok) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="one per prompt"):
        coherence(["a"], ["a", "b"], model, byte_tok)


def test_true_nll():
    logp = {(1, 2): math.log(0.5), (3,): -math.inf, (4,): math.log(0.25)}
    out = true_nll([(1, 2), (3,), (4,)], lambda s: logp[tuple(s)], per_token=True)
    assert out["nll"] == pytest.approx((math.log(2) + math.log(4)) / 2)
    assert out["impossible_fraction"] == pytest.approx(1 / 3)
    assert out["nll_per_token"] == pytest.approx((math.log(2) + math.log(4)) / 3)


def test_mauve_call_prints_no_faiss_clustering_warning(capfd):
    """issue 23: faiss printed "WARNING clustering 16 points to 2 centroids" five times per MAUVE call."""
    pytest.importorskip("mauve")
    import numpy as np

    from seqlevel.metrics.mauve import mauve

    rng = np.random.default_rng(0)
    res = mauve(p_features=rng.normal(size=(16, 4)), q_features=rng.normal(size=(16, 4)) + 1, num_buckets=2,
                kmeans_num_redo=5, kmeans_max_iter=10)
    assert 0 < res.mauve <= 1
    out, err = capfd.readouterr()
    assert "WARNING clustering" not in out + err
