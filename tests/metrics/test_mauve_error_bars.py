"""MAUVE with error bars: std over k-means seeds (0 for identical sets, > 0 for two samples of one distribution),
truncation of both sides to one token length, the featurizer recorded, and the not-meaningful flags."""

import numpy as np
import pytest

from seqlevel.metrics import featurize, mauve, mauve_with_error_bars
from seqlevel.metrics.mauve import report_line

OPTS = dict(num_buckets=10, kmeans_num_redo=1, kmeans_max_iter=50)


def test_identical_feature_sets_have_zero_std():
    x = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    res = mauve_with_error_bars(x, x.copy(), num_seeds=5, **OPTS)
    assert res.std == 0.0 and len(res.scores) == 5 and res.seeds == [0, 1, 2, 3, 4]
    assert res.mean >= 0.99 and res.feature_dim == 16 and res.featurizer == "features"
    assert res.meaningful and res.num_p == res.num_q == 200


def test_two_samples_of_one_distribution_have_positive_std():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(200, 16)).astype(np.float32)
    q = rng.normal(size=(200, 16)).astype(np.float32)
    res = mauve_with_error_bars(p, q, num_seeds=5, seed=3, **OPTS)
    assert res.std > 0.0 and len(set(res.scores)) > 1
    # each score is the single-clustering MAUVE of that seed (naive reference), and mean/std are theirs
    ref = [mauve(p, q, seed=s, **OPTS).mauve for s in range(3, 8)]
    np.testing.assert_allclose(res.scores, ref, atol=1e-12)
    assert res.mean == pytest.approx(np.mean(ref), abs=1e-12)
    assert res.std == pytest.approx(np.std(ref, ddof=1), abs=1e-12)
    assert res.mean > 0.5  # same distribution: close


def test_texts_truncated_to_one_length_and_featurizer_recorded(byte_tok, make_model):
    model = make_model("tiny-gpt2", tokenizer=byte_tok)
    long = [f"reference text number {i} that is quite long" for i in range(6)]
    short = [f"model text {i} a bit longer than that" for i in range(6)]
    res = mauve_with_error_bars(p_texts=long, q_texts=short, featurizer=model, featurizer_tokenizer=byte_tok,
                                featurizer_name="tiny", num_seeds=2, num_buckets=2, kmeans_num_redo=1)
    lengths = [len(byte_tok(t)["input_ids"]) for t in short]
    assert res.max_tokens == int(np.median(lengths))  # the shorter side's median
    assert res.featurizer == "tiny" and res.feature_dim == model.config.n_embd
    # the features are those of texts cut to max_tokens featurizer tokens, on both sides
    res2 = mauve_with_error_bars(featurize(long, model, byte_tok, max_length=res.max_tokens),
                                 featurize(short, model, byte_tok, max_length=res.max_tokens),
                                 num_seeds=2, num_buckets=2, kmeans_num_redo=1)
    assert res2.scores == res.scores
    assert not res.meaningful and "too few samples" in res.warning  # 6 per side
    line = report_line(res.to_dict())
    assert line.startswith("not reported: too few samples") and f"{res.mean:.3f}" not in line.split("(")[0]


def test_unequal_lengths_are_flagged(byte_tok, make_model):
    model = make_model("tiny-gpt2", tokenizer=byte_tok)
    p = ["x" * 40] * 60
    q = ["y" * 40] * 31 + ["y" * 3] * 29  # median 40 but 29 texts of 3 tokens: mean 22 after truncation
    res = mauve_with_error_bars(p_texts=p, q_texts=q, featurizer=model, featurizer_tokenizer=byte_tok,
                                num_seeds=2, num_buckets=4, kmeans_num_redo=1)
    assert not res.meaningful and "unequal lengths" in res.warning and "too few" not in res.warning
    ok = mauve_with_error_bars(p_texts=p, q_texts=["y" * 40] * 60, featurizer=model, featurizer_tokenizer=byte_tok,
                               num_seeds=2, num_buckets=4, kmeans_num_redo=1)
    assert ok.meaningful and ok.warning is None and ok.mean_tokens_p == ok.mean_tokens_q == ok.max_tokens
    assert report_line(ok.to_dict()).startswith(f"{ok.mean:.3f} ± {ok.std:.3f}")


def test_error_bars_bad_input():
    x = np.zeros((10, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="num_seeds must be >= 1"):
        mauve_with_error_bars(x, x, num_seeds=0)
    with pytest.raises(ValueError, match="pass p_features and q_features"):
        mauve_with_error_bars(x)
    with pytest.raises(ValueError, match="give both p_texts and q_texts"):
        mauve_with_error_bars(p_texts=["a", "b"])
