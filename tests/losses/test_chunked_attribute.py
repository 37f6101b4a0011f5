"""chunked_cat_loss from hidden states equals cat_loss on full logits (fp64, 1e-10)."""

import pytest
import torch

from seqlevel.attributes.head import AttributeHead, AttributeHeadConfig
from seqlevel.losses import cat_loss
from seqlevel.losses.chunked_attribute import chunked_cat_loss


@pytest.mark.parametrize("kind,K", [("binary", 2), ("categorical", 3), ("numeric", 2)])
@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_equals_cat_loss(kind, K, chunk):
    g = torch.Generator().manual_seed(0)
    V, d = 11, 6
    h = torch.randn(3, 7, d, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, d, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, V, (3, 7), generator=g)
    y[0, 5:] = -100
    torch.manual_seed(0)
    head = AttributeHead(AttributeHeadConfig(kind=kind, vocab_size=V, hidden_size=d, num_classes=K, rank=4)).double()
    labels = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64) if kind == "numeric" else torch.tensor([0, 1, K - 1])
    params = [h, w, *head.parameters()]

    def attr():
        return head.gathered(h, y.clamp(min=0))

    ref = cat_loss(h @ w.t(), y, attr(), labels, kind, 0.3, num_classes=K, num_items_in_batch=20)
    g_ref = torch.autograd.grad(ref, params, allow_unused=True)
    got = chunked_cat_loss(h, w, y, attr(), labels, kind, 0.3, num_classes=K, chunk_size=chunk, num_items_in_batch=20)
    g_got = torch.autograd.grad(got, params, allow_unused=True)
    assert abs(got.item() - ref.item()) <= 1e-10
    for a, b in zip(g_got, g_ref):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_negative_lambda():
    h, w, y = torch.zeros(1, 2, 3), torch.zeros(4, 3), torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        chunked_cat_loss(h, w, y, torch.zeros(1, 2, 1), torch.tensor([1]), "binary", -1.0)
