"""Sampling rules against Hugging Face's logits warpers, and their guarantees."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from seqlevel.decoding import choose_actions, filter_scores


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8),
                                                             (0.9, 10, 0.5), (1.0, 0, 0.05)])
def test_filter_matches_hf_warpers(temperature, top_k, top_p):
    scores = torch.randn(6, 50, generator=torch.Generator().manual_seed(0)) * 3
    ref = scores.clone()
    if temperature != 1.0:
        ref = TemperatureLogitsWarper(temperature)(None, ref)
    if top_k:
        ref = TopKLogitsWarper(top_k)(None, ref)
    if top_p < 1.0:
        ref = TopPLogitsWarper(top_p)(None, ref)
    ours = filter_scores(scores, temperature, top_k, top_p)
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))
    finite = ~torch.isinf(ref)
    torch.testing.assert_close(ours[finite], ref[finite], rtol=0, atol=1e-6)


def test_top_p_keeps_the_most_likely_action():
    scores = torch.tensor([[10.0, 0.0, -1.0], [0.0, 0.0, 5.0]])
    out = filter_scores(scores, top_p=1e-6)
    assert torch.isfinite(out).sum(dim=1).tolist() == [1, 1]
    assert out.argmax(dim=1).tolist() == [0, 2]


def test_sampling_follows_the_distribution_and_greedy_takes_argmax():
    probs = torch.tensor([0.1, 0.6, 0.3])
    scores = probs.log().expand(20000, 3)
    g = torch.Generator().manual_seed(0)
    draws = choose_actions(scores, do_sample=True, generator=g)
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    torch.testing.assert_close(freq, probs, rtol=0, atol=0.015)  # ~3.5 standard errors
    assert choose_actions(scores[:2], do_sample=False).tolist() == [1, 1]
