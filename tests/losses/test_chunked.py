"""Chunked (fused output-projection) losses equal the plain ones, and really do use less memory."""

import pytest
import torch

from seqlevel.bench.memory import peak_bytes
from seqlevel.losses import mixce_loss, mle_loss
from seqlevel.losses.chunked import chunked_mixce_loss, chunked_mle_loss


def _data(V=50, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 9, 8, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(V, 8, generator=g, dtype=dtype, requires_grad=True)
    y = torch.randint(0, V, (2, 9), generator=g)
    y[0, 3] = y[1, 0] = -100
    return h, w, y


@pytest.mark.parametrize("eta", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_value_and_gradients_equal_unchunked(eta, chunk):
    h, w, y = _data()
    a = chunked_mixce_loss(h, w, y, eta, chunk_size=chunk)
    ga = torch.autograd.grad(a, [h, w])
    b = mixce_loss(h @ w.t(), y, eta)
    gb = torch.autograd.grad(b, [h, w])
    assert a.item() == pytest.approx(b.item(), abs=1e-12)
    for x, z in zip(ga, gb):
        torch.testing.assert_close(x, z, atol=1e-12, rtol=0)


def test_num_items_and_all_ignored():
    h, w, y = _data()
    n = y.ne(-100).sum() * 3
    assert chunked_mle_loss(h, w, y, num_items_in_batch=n).item() == pytest.approx(mle_loss(h @ w.t(), y).item() / 3)
    z = chunked_mle_loss(h, w, torch.full_like(y, -100))
    assert z.item() == 0.0
    (gh,) = torch.autograd.grad(z, [h])
    assert gh.abs().max() == 0


def test_peak_memory_does_not_grow_with_batch_times_vocab():
    # unchunked: the (N, V) logits dominate; chunked: bounded by chunk * V
    V, N, d = 4096, 512, 16
    h = torch.randn(1, N, d, requires_grad=True)
    w = torch.randn(V, d, requires_grad=True)
    y = torch.randint(0, V, (1, N))
    plain = peak_bytes(lambda: mle_loss(h @ w.t(), y))
    h.grad = w.grad = None
    chunked = peak_bytes(lambda: chunked_mle_loss(h, w, y, chunk_size=64))
    assert plain > N * V * 4  # at least one fp32 (N, V) tensor
    assert chunked < plain / 3


def test_bad_input():
    h, w, y = _data()
    with pytest.raises(ValueError, match="not aligned"):
        chunked_mle_loss(h, w, y[:, 1:])
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        chunked_mle_loss(h, w, y, chunk_size=0)
    with pytest.raises(ValueError, match="hidden width"):
        chunked_mle_loss(h, w[:, :4], y)
