"""Steering rules: exact formulas on a stub head, backtracking through generate, bad input, and on ``reviews``."""

from types import SimpleNamespace

import pytest
import torch

from seqlevel.attributes import AttributeHeadConfig
from seqlevel.attributes.steering import BacktrackRule, ProductRule, SatisficingRule
from seqlevel.decoding import BiasAction, StepContext, generate


class _StubHead:
    """A head whose per-candidate logits are fixed: ``all_candidates(h) -> (R, V, n_out)``."""

    def __init__(self, logits: torch.Tensor, kind="binary", K=2):
        self.logits = logits  # (V, n_out)
        self.config = AttributeHeadConfig(kind, logits.shape[0], 4, num_classes=K)

    def all_candidates(self, h):
        return self.logits.expand(h.shape[0], *self.logits.shape)


def _stub(logits, kind="binary", K=2):
    head = _StubHead(logits, kind, K)
    return SimpleNamespace(head=head, kind=kind)


def _ctx(R, V, step=0):
    return StepContext(step=step, rows=torch.arange(R), live_lengths=torch.full((R,), 2),
                       prompt_lengths=torch.full((R,), 1), tokens=torch.zeros(R, 2, dtype=torch.long),
                       hidden_states=(torch.zeros(R, 4),), backspace_id=None, eos_token_ids=())


def test_product_rule_formula():
    V = 6
    logits = torch.linspace(-2, 2, V)[:, None]
    rule = ProductRule(_stub(logits), target=1, alpha=2.5)
    scores = torch.randn(3, V)
    got = rule(scores, _ctx(3, V))
    want = scores.log_softmax(-1) + 2.5 * torch.sigmoid(logits[:, 0]).log()
    torch.testing.assert_close(got, want.expand(3, V))
    # target 0 of a binary head uses 1 - sigmoid
    got0 = ProductRule(_stub(logits), target=0, alpha=1.0)(scores, _ctx(3, V))
    torch.testing.assert_close(got0, scores.log_softmax(-1) + (1 - torch.sigmoid(logits[:, 0])).log())


def test_satisficing_rule_keeps_qualifying_top_k_or_falls_back():
    V = 6
    attr = torch.tensor([0.9, 0.1, 0.85, 0.95, 0.2, 0.5])  # P(a*|v)
    logits = (attr / (1 - attr)).log()[:, None]
    p = torch.tensor([[0.3, 0.3, 0.2, 0.0005, 0.1, 0.0995]])
    rule = SatisficingRule(_stub(logits), target=1, top_k=4, epsilon=1e-3, tau=0.8)
    out = rule(p.log(), _ctx(1, V))
    # top-4 by p = {0, 1, 2, 4}; qualifying (P >= 0.8) = {0, 2}; 3 has P=0.95 but p < ε and is not in the top-4
    kept = torch.isfinite(out[0]).nonzero().squeeze(1).tolist()
    assert kept == [0, 2]
    torch.testing.assert_close(out[0, [0, 2]], p[0, [0, 2]].log())
    # nothing qualifies: the highest attribute among the top-k pool is forced
    rule = SatisficingRule(_stub(logits), target=1, top_k=4, epsilon=1e-3, tau=0.99)
    out = rule(p.log(), _ctx(1, V))
    assert torch.isfinite(out[0]).nonzero().squeeze(1).tolist() == [0]


def test_backtrack_rule_deletes_bad_tokens(make_model):
    V, bad = 20, 7
    lm = make_model("tiny-gpt2", vocab_size=V)
    logits = torch.full((V, 1), 2.2)
    logits[bad] = -10.0  # P(a*|bad) ≈ 0: choosing it drops the estimate by ~0.9
    rule = BacktrackRule(_stub(logits), target=1, threshold=0.3, inner=BiasAction(bad, 4.0), max_backspaces=100)
    prompt = torch.tensor([[1, 2, 3]] * 6)
    out = generate(lm, prompt, max_new_actions=30, max_new_tokens=8, eos_token_id=None, backspace_id=V - 2,
                   steer=rule, seed=0)
    assert int(out.num_backspaces.sum()) > 0
    # a bad token survives only as the very last action (the run ended before the rule could see it)
    assert all(bad not in seq[:-1] for seq in out.sequences)
    plain = generate(lm, prompt, max_new_actions=8, eos_token_id=None, steer=BiasAction(bad, 4.0), seed=0)
    assert sum(seq.count(bad) for seq in plain.sequences) > 0  # without the rule the bad token is frequent


def test_bad_steering_input_is_refused():
    m = _stub(torch.zeros(5, 1))
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        ProductRule(m, 1, alpha=-1.0)
    with pytest.raises(ValueError, match="tau must be in"):
        SatisficingRule(m, 1, tau=1.5)
    with pytest.raises(ValueError, match="not one of the head's classes"):
        ProductRule(m, 2)
    with pytest.raises(ValueError, match="not one of the head's classes"):
        SatisficingRule(_stub(torch.zeros(5, 3), "categorical", 3), 3)
    with pytest.raises(ValueError, match="numeric"):
        ProductRule(_stub(torch.zeros(5, 2), "numeric"), 0)
    with pytest.raises(ValueError, match="threshold must be in"):
        BacktrackRule(m, 1, threshold=-0.1)
