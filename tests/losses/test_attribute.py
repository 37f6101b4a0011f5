"""CAT attribute losses against naive loops, the no-materialisation property and bad-label errors."""

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from seqlevel.attributes import AttributeHead, AttributeHeadConfig
from seqlevel.losses import attribute_loss, cat_loss, consistency_loss, mle_loss


def _naive_attr(attr, y, mask, kind):
    """Loop over sequences and positions; each term written from its textbook formula."""
    total, n = 0.0, 0
    B, T, _ = attr.shape
    for b in range(B):
        for t in range(T):
            if not mask[b, t]:
                continue
            a = attr[b, t].double()
            if kind == "binary":
                p = 1 / (1 + math.exp(-a[0].item()))
                total += -(math.log(p) if int(y[b]) == 1 else math.log(1 - p))
            elif kind == "categorical":
                z = a.exp()
                total += -math.log((z[int(y[b])] / z.sum()).item())
            else:
                mu, var = a[0].item(), math.exp(a[1].item())
                total += -math.log(math.exp(-(float(y[b]) - mu) ** 2 / (2 * var)) / math.sqrt(2 * math.pi * var))
            n += 1
    return total / n


@pytest.mark.parametrize("kind,n_out", [("binary", 1), ("categorical", 4), ("numeric", 2)])
def test_attribute_loss_matches_naive(kind, n_out):
    g = torch.Generator().manual_seed(0)
    attr = torch.randn(3, 5, n_out, generator=g)
    mask = torch.rand(3, 5, generator=g) > 0.3
    y = {"binary": torch.tensor([0, 1, 1]), "categorical": torch.tensor([3, 0, 2]),
         "numeric": torch.tensor([0.5, -1.2, 2.0])}[kind]
    got = attribute_loss(attr, y, mask, kind)
    assert got.item() == pytest.approx(_naive_attr(attr, y, mask, kind), rel=1e-5)


def test_num_items_in_batch_normalises_and_cat_loss_adds_lambda():
    g = torch.Generator().manual_seed(1)
    logits, attr = torch.randn(2, 4, 7, generator=g), torch.randn(2, 4, 3, generator=g)
    labels = torch.randint(0, 7, (2, 4), generator=g)
    labels[1, 3] = -100
    y = torch.tensor([2, 1])
    s = attribute_loss(attr, y, labels != -100, "categorical", reduction="sum")
    assert attribute_loss(attr, y, labels != -100, "categorical", num_items_in_batch=20).item() == pytest.approx(
        s.item() / 20, rel=1e-6)
    want = mle_loss(logits, labels) + 0.15 * attribute_loss(attr, y, labels != -100, "categorical")
    assert cat_loss(logits, labels, attr, y, "categorical").item() == pytest.approx(want.item(), rel=1e-6)


def test_consistency_loss_matches_naive_kl():
    g = torch.Generator().manual_seed(2)
    attr = torch.randn(2, 3, 4, generator=g)
    tgt = torch.rand(2, 3, 4, generator=g)
    tgt = tgt / tgt.sum(-1, keepdim=True)
    mask = torch.ones(2, 3, dtype=torch.bool)
    q = attr.softmax(-1)
    naive = (tgt * (tgt / q).log()).sum(-1).mean()
    assert consistency_loss(attr, tgt, mask, "categorical").item() == pytest.approx(naive.item(), rel=1e-5)
    # binary: Bernoulli KL; zero when the prediction equals the target
    p = torch.tensor([[[0.3, 0.7]]])
    logit = torch.tensor([[[math.log(0.7 / 0.3)]]])
    assert consistency_loss(logit, p, torch.ones(1, 1, dtype=torch.bool), "binary").item() == pytest.approx(0, abs=1e-6)


class _MaxNumel(TorchDispatchMode):
    """Records the largest tensor any op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.max = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor):
                self.max = max(self.max, o.numel())
        return out


@pytest.mark.parametrize("V,K", [(500, 3), (20000, 3), (20000, 12)])
def test_loss_never_materialises_BTVK(V, K):
    # peak tensor size of gather + loss + backward is bounded by the parameters (V·r, V·K), not by B·T·V·K
    B, T, d, r = 4, 16, 8, 4
    head = AttributeHead(AttributeHeadConfig("categorical", V, d, num_classes=K, rank=r))
    h = torch.randn(B, T, d, requires_grad=True)
    nxt = torch.randint(0, V, (B, T))
    y = torch.randint(0, K, (B,))
    with _MaxNumel() as m:
        loss = attribute_loss(head.gathered(h, nxt), y, torch.ones(B, T, dtype=torch.bool), "categorical")
        loss.backward()
    params = max(p.numel() for p in head.parameters())
    assert m.max <= params, (m.max, params)
    assert m.max * 10 < B * T * V * K


@pytest.mark.parametrize("bad,kind,msg", [
    (torch.tensor([0.5, 1.0]), "categorical", "integer class labels"),
    (torch.tensor([0, 5]), "categorical", "outside the head's classes"),
    (torch.tensor([0, 2]), "binary", "outside the head's classes"),
    (torch.tensor([float("nan"), 1.0]), "numeric", "finite"),
])
def test_bad_labels_are_refused(bad, kind, msg):
    n_out = {"binary": 1, "categorical": 5, "numeric": 2}[kind]
    with pytest.raises(ValueError, match=msg):
        attribute_loss(torch.zeros(2, 3, n_out), bad, torch.ones(2, 3, dtype=torch.bool), kind, 5)


def test_negative_lambda_is_refused():
    with pytest.raises(ValueError, match="lam must be >= 0"):
        cat_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, 1),
                 torch.tensor([1]), "binary", lam=-0.1)
