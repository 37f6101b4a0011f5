"""Head-only refit on cached trunk states (seqlevel.attributes.refit)."""

import pytest
import torch

from seqlevel.attributes import AttributeModel
from seqlevel.attributes.refit import cached_states, refit_head
from seqlevel.presets import tiny_model


def _model():
    base = tiny_model("tiny-gpt2", vocab_size=16, n_embd=32, n_layer=1, n_head=2, seed=0)
    return AttributeModel.for_base(base, "binary", rank=4).eval()


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    seqs, labels = [], []
    for _ in range(n):
        a = int(torch.randint(3, 5, (1,), generator=g))  # the "decision": token 3 or 4, label = (a == 4)
        seqs.append([1, 7, a, 8, 9, 2][: 4 + int(torch.randint(0, 3, (1,), generator=g))])
        labels.append(int(a == 4))
    return seqs, labels


def test_cached_states_match_a_full_forward_and_respect_candidate_ids():
    model, (seqs, _) = _model(), _data(8)
    h, nxt, idx = cached_states(model, seqs, candidate_ids=[3, 4], pad_id=0, chunk=3)
    assert len(nxt) == 8 and set(nxt.tolist()) <= {3, 4} and idx.tolist() == list(range(8))
    with torch.no_grad():
        ref = model.base(input_ids=torch.tensor([seqs[5]]), output_hidden_states=True).hidden_states[-1][0, 1]
    torch.testing.assert_close(h[5], ref, atol=1e-5, rtol=1e-5)  # position 1 predicts the decision token
    h_all, nxt_all, _ = cached_states(model, seqs, pad_id=0)
    assert len(nxt_all) == sum(len(s) - 1 for s in seqs)


def test_refit_learns_the_decision_and_leaves_the_trunk_alone():
    model, (seqs, labels) = _model(), _data()
    before = {k: v.clone() for k, v in model.base.state_dict().items()}
    losses = refit_head(model, seqs, labels, candidate_ids=[3, 4], steps=300, batch_size=64, lr=1e-2, pad_id=0)
    assert losses[-1] < 0.1 < losses[0]
    for k, v in model.base.state_dict().items():
        assert torch.equal(v, before[k]), k
    h = model.base(input_ids=torch.tensor([[1, 7]]), output_hidden_states=True).hidden_states[-1][0, -1]
    p = model.head.all_candidates(h)[[3, 4], 0].sigmoid()
    assert p[0] < 0.1 and p[1] > 0.9


@pytest.mark.parametrize("kwargs,msg", [({"steps": 0}, "steps and batch_size"),
                                        ({"candidate_ids": [15]}, "no position to fit")])
def test_bad_input(kwargs, msg):
    model, (seqs, labels) = _model(), _data(4)
    with pytest.raises(ValueError, match=msg):
        refit_head(model, seqs, labels, **kwargs)
    with pytest.raises(ValueError, match="one per sequence"):
        refit_head(model, seqs, labels[:2])
