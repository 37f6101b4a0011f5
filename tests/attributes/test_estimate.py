"""Inference API: candidates, trace/credit against naive loops, counterfactuals, the Monte-Carlo estimator."""

import numpy as np
import pytest
import torch

from seqlevel.attributes import AttributeModel, to_distribution
from seqlevel.attributes.estimate import candidates, counterfactuals, trace
from seqlevel.attributes.monte_carlo import monte_carlo_estimate


@pytest.fixture
def cat(make_model):
    m = AttributeModel.for_base(make_model("tiny-gpt2", vocab_size=24), "categorical", 3, rank=4).eval()
    with torch.no_grad():
        m.head.token_bias.normal_()
        m.head.prefix.weight.normal_()
    return m


def test_candidates_match_the_full_forward(cat):
    x = torch.randint(0, 24, (2, 6))
    c = candidates(cat, x)
    with torch.no_grad():
        out = cat(x, all_candidates=True)
    torch.testing.assert_close(c.probs, out.logits[:, -1].softmax(-1))
    torch.testing.assert_close(c.attribute, to_distribution(out.attribute[:, -1], "categorical"))
    assert torch.allclose(c.attribute.sum(-1), torch.ones(2, 24))
    # right padding: the last real token is used
    xp = torch.cat([x[:, :4], torch.zeros(2, 2, dtype=torch.long)], 1)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]] * 2)
    torch.testing.assert_close(candidates(cat, xp, mask).attribute, candidates(cat, x[:, :4]).attribute,
                               rtol=1e-5, atol=1e-6)


def test_trace_and_credit_against_naive_loops(cat):
    x = torch.randint(0, 24, (1, 7))
    tr = trace(cat, x, chunk=3)
    assert torch.isnan(tr.estimate[0, 0]).all()
    for t in range(1, 7):
        c = candidates(cat, x[:, :t])  # prefix x_<t
        est = c.attribute[0, x[0, t]]
        expected = sum(c.probs[0, v] * c.attribute[0, v] for v in range(24))
        torch.testing.assert_close(tr.estimate[0, t], est, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(tr.expected[0, t], expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(tr.credit[0, t], est - expected, rtol=1e-5, atol=1e-6)
        assert tr.token_probs[0, t].item() == pytest.approx(c.probs[0, x[0, t]].item(), rel=1e-5)
    # the credit is an advantage: its expectation under p is zero
    c = candidates(cat, x[:, :4])
    e = (c.probs[0, :, None] * c.attribute[0]).sum(0)
    assert torch.allclose((c.probs[0, :, None] * (c.attribute[0] - e)).sum(0), torch.zeros(3), atol=1e-6)


def test_counterfactuals(cat):
    x = torch.randint(0, 24, (8,))
    rows = counterfactuals(cat, x, 5, alternatives=[1, 2, 3])
    assert rows[0].token_id == int(x[5]) and rows[0].delta == [0.0, 0.0, 0.0]
    c = candidates(cat, x[None, :5])
    for r in rows[1:]:
        want = (c.attribute[0, r.token_id] - c.attribute[0, int(x[5])]).tolist()
        assert r.delta == pytest.approx(want, abs=1e-6)
    assert len(counterfactuals(cat, x, 3, top=4)) == 5
    with pytest.raises(ValueError, match="position must be in"):
        counterfactuals(cat, x, 0)
    with pytest.raises(ValueError, match="target class 7"):
        counterfactuals(cat, x, 2, target=7)


def test_monte_carlo_matches_the_exact_model_probability(make_model):
    lm = make_model("tiny-llama", vocab_size=16)
    prefix = [3, 5, 7]
    with torch.no_grad():
        p = lm(torch.tensor([prefix])).logits[0, -1].softmax(-1)
    exact = float(p[::2].sum())  # label 1 iff the first generated token is even
    est = monte_carlo_estimate(lm, [prefix], lambda ids: int(ids[3] % 2 == 0), 2, n_rollouts=600,
                               max_new_actions=1, eos_token_id=None, seed=0)
    assert est.shape == (1, 2) and est[0].sum() == pytest.approx(1.0)
    assert abs(est[0, 1] - exact) < 0.07  # s.e. <= 0.02 at n=600
    with pytest.raises(ValueError, match="n_rollouts"):
        monte_carlo_estimate(lm, [prefix], lambda ids: 0, 2, n_rollouts=0, max_new_actions=1, eos_token_id=None)
    assert np.allclose(monte_carlo_estimate(lm, [prefix], lambda ids: None, 2, n_rollouts=3, max_new_actions=1,
                                            eos_token_id=None), 0.5)
