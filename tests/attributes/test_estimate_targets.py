"""What-the-caller-asks-for estimation (issue 16): one class for every candidate, or every class for the top-k
candidates, against the full ``(B, T, V, K)`` computation."""

import pytest
import torch

from seqlevel.attributes import AttributeModel, to_distribution
from seqlevel.attributes.estimate import class_probability, top_candidates

V = 24
TOL = dict(rtol=1e-5, atol=1e-6)  # float32 rounding: 1 / (1 + Σ exp(gap)) vs the softmax


def _model(make_model, kind, K):
    m = AttributeModel.for_base(make_model("tiny-gpt2", vocab_size=V), kind, K, rank=4, query_std=1.0).eval()
    with torch.no_grad():  # a trained-looking head: biases and the prefix term non-zero
        m.head.token_bias.normal_(0, 2.0)
        m.head.prefix.weight.normal_()
    return m


@pytest.mark.parametrize("kind,K", [("binary", 2), ("categorical", 2), ("categorical", 5)])
@pytest.mark.parametrize("chunk", [32, 3])
def test_class_probability_equals_the_full_distribution(make_model, kind, K, chunk):
    m = _model(make_model, kind, K)
    x = torch.randint(0, V, (2, 7))
    with torch.no_grad():
        out = m(x, all_candidates=True)
        full = to_distribution(out.attribute, kind)  # (B, T, V, K)
    for target in range(K):
        got = class_probability(m.head, out.hidden, target, chunk=chunk)
        assert got.shape == (2, 7, V)
        torch.testing.assert_close(got, full[..., target], **TOL)


def test_class_probability_survives_huge_gaps(make_model):
    m = _model(make_model, "categorical", 5)
    with torch.no_grad():
        m.head.token_bias[:, 0] = 200.0  # exp(gap) overflows to inf for every other target: P must be 0, not NaN
        h = torch.randn(1, 3, m.head.config.hidden_size)
        full = to_distribution(m.head.all_candidates(h), "categorical")
    torch.testing.assert_close(class_probability(m.head, h, 0), full[..., 0], **TOL)
    p3 = class_probability(m.head, h, 3)
    assert torch.isfinite(p3).all() and float(p3.max()) < 1e-30


def test_class_probability_rejects_numeric_heads_and_bad_targets(make_model):
    with pytest.raises(ValueError, match="binary or categorical"):
        class_probability(_model(make_model, "numeric", 2).head, torch.zeros(1, 1, 32), 0)
    with pytest.raises(ValueError, match=r"target in \[0, 5\)"):
        class_probability(_model(make_model, "categorical", 5).head, torch.zeros(1, 1, 32), 5)


@pytest.mark.parametrize("kind,K", [("binary", 2), ("categorical", 5), ("numeric", 2)])
def test_top_candidates_equal_the_full_computation_at_the_top_ids(make_model, kind, K):
    m = _model(make_model, kind, K)
    x = torch.randint(0, V, (2, 5))
    with torch.no_grad():
        out = m(x, all_candidates=True)
        full = to_distribution(out.attribute, kind)  # (B, T, V, K)
    top = top_candidates(m.head, out.hidden, out.logits, 6, kind)
    p = out.logits.softmax(-1)
    ref_probs, ref_ids = p.topk(6, dim=-1)
    assert torch.equal(top.ids, ref_ids)
    torch.testing.assert_close(top.probs, ref_probs)
    ref = full.gather(2, ref_ids[..., None].expand(-1, -1, -1, full.shape[-1]))  # (B, T, 6, K)
    torch.testing.assert_close(top.attribute, ref, **TOL)
    with pytest.raises(ValueError, match=r"k must be in \[1, 24\]"):
        top_candidates(m.head, out.hidden, out.logits, 0, kind)


def test_head_at_candidates_equals_all_candidates_gathered(make_model):
    m = _model(make_model, "categorical", 5)
    h = torch.randn(3, 4, m.head.config.hidden_size)
    tok = torch.randint(0, V, (3, 4, 7))
    with torch.no_grad():
        full = m.head.all_candidates(h)  # (3, 4, V, 5)
        torch.testing.assert_close(m.head.at_candidates(h, tok), full.gather(2, tok[..., None].expand(-1, -1, -1, 5)),
                                   **TOL)


def test_class_probability_can_write_into_the_logits(make_model):
    m = _model(make_model, "categorical", 5)
    x = torch.randint(0, V, (2, 6))
    with torch.no_grad():
        out = m(x)
        ref = class_probability(m.head, out.hidden, 2)
        p = out.logits.softmax(-1)
        got = class_probability(m.head, out.hidden, 2, out=out.logits)
    assert got.data_ptr() == out.logits.data_ptr()
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert torch.allclose(p.sum(-1), torch.ones(2, 6))
    with pytest.raises(ValueError, match="out must be a contiguous"):
        class_probability(m.head, out.hidden, 2, out=out.logits[:, :3])
