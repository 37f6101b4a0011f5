"""Chunked SequenceMatch from hidden states equals sequencematch_loss / bc_loss on full logits (fp64, 1e-10)."""

from __future__ import annotations

import pytest
import torch

from seqlevel.backspace import collate, encode
from seqlevel.bench.memory import peak_bytes
from seqlevel.losses import bc_loss, sequencematch_loss
from seqlevel.losses.chunked_sequencematch import chunked_bc_loss, chunked_qv, chunked_sequencematch_loss

A, BK, EOS, PAD = 7, 6, 1, 0  # actions 0..6, <bksp> = 6, <eos> = 1
TRAJS = [
    ([2, 3], [4, BK, BK, BK, 5, 2, EOS]),  # data, complete, backspace past the prompt boundary
    ([2], [3, 3, BK, 4]),  # data, truncated
    ([5, 4, 3], [2, BK, 2, 5, EOS]),  # model, complete
    ([3], [BK, 4, 4, 4, 5, BK]),  # model, truncated
]
IS_DATA = [True, True, False, False]


def _setup(trajs=TRAJS, is_data=IS_DATA, d=5, seed=0, bias=False):
    batch = collate([encode(p, a, BK, eos_id=EOS, is_data=x) for (p, a), x in zip(trajs, is_data)], PAD)
    g = torch.Generator().manual_seed(seed)
    B, T = batch["labels"].shape
    h = (torch.randn(B, T, d, generator=g, dtype=torch.float64) * 1.5).requires_grad_(True)
    w = torch.randn(A, d, generator=g, dtype=torch.float64).requires_grad_(True)
    b = torch.randn(A, generator=g, dtype=torch.float64).requires_grad_(True) if bias else None
    return batch, h, w, b


def _full_logits(h, w, b):
    return h @ w.t() + (b if b is not None else 0.0)  # (B, T, A)


def _grads(loss, params):
    return torch.autograd.grad(loss, params)


@pytest.mark.parametrize("divergence", ["chi2_mix", "chi2", "kl", "js", "reverse_kl", "hellinger", "tv"])
@pytest.mark.parametrize("eos", ["absorbing", "done"])
@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_equals_full_logits_loss_values_and_gradients(divergence, eos, chunk):
    batch, h, w, _ = _setup()
    kw = dict(divergence=divergence, gamma=0.9, eos=eos)
    ref = sequencematch_loss(_full_logits(h, w, None), batch, **kw)
    g_ref = _grads(ref, [h, w])
    got = chunked_sequencematch_loss(h, w, batch, chunk_size=chunk, **kw)
    g_got = _grads(got, [h, w])
    assert abs(got.item() - ref.item()) <= 1e-10
    for x, z in zip(g_got, g_ref):
        torch.testing.assert_close(x, z, atol=1e-10, rtol=0)


def test_bias_num_sequences_and_terms_match():
    batch, h, w, b = _setup(bias=True, seed=3)
    kw = dict(gamma=0.95, model_reg=0.4, model_mix=0.3, num_sequences=(5, 7), return_terms=True)
    ref, t_ref = sequencematch_loss(_full_logits(h, w, b), batch, **kw)
    got, t_got = chunked_sequencematch_loss(h, w, batch, lm_head_bias=b, chunk_size=4, **kw)
    assert abs(got.item() - ref.item()) <= 1e-10
    for k in ("phi", "r2", "value", "loss_data", "loss_model", "loss_value"):
        torch.testing.assert_close(t_got[k], t_ref[k], atol=1e-10, rtol=0)
    has = t_ref["has_r"]
    assert torch.equal(t_got["has_r"], has)
    torch.testing.assert_close(t_got["r"][has], t_ref["r"][has], atol=1e-10, rtol=0)
    for x, z in zip(_grads(got, [h, w, b]), _grads(ref, [h, w, b])):
        torch.testing.assert_close(x, z, atol=1e-10, rtol=0)


@pytest.mark.parametrize("is_data", [[True] * 4, [False] * 4])
def test_one_sided_batches(is_data):
    batch, h, w, _ = _setup(is_data=is_data)
    ref = sequencematch_loss(_full_logits(h, w, None), batch, gamma=0.9)
    got = chunked_sequencematch_loss(h, w, batch, gamma=0.9, chunk_size=2)
    assert abs(got.item() - ref.item()) <= 1e-10
    for x, z in zip(_grads(got, [h, w]), _grads(ref, [h, w])):
        torch.testing.assert_close(x, z, atol=1e-10, rtol=0)


def test_bc_from_same_pass_and_chunked_bc_equal_bc_loss():
    batch, h, w, _ = _setup(seed=1)
    logits = _full_logits(h, w, None)
    n_bc = 11
    wt = 0.3
    ref = (1 - wt) * bc_loss(logits, batch, num_items_in_batch=n_bc) + wt * sequencematch_loss(logits, batch)
    got = wt * chunked_sequencematch_loss(h, w, batch, bc_weight=(1 - wt) / wt, bc_num_items=n_bc, chunk_size=5)
    assert abs(got.item() - ref.item()) <= 1e-10
    for x, z in zip(_grads(got, [h, w]), _grads(ref, [h, w])):
        torch.testing.assert_close(x, z, atol=1e-10, rtol=0)
    bc_ref = bc_loss(_full_logits(h, w, None), batch)
    bc_got = chunked_bc_loss(h, w, batch, chunk_size=3)
    assert abs(bc_got.item() - bc_ref.item()) <= 1e-10
    for x, z in zip(_grads(bc_got, [h, w]), _grads(bc_ref, [h, w])):
        torch.testing.assert_close(x, z, atol=1e-10, rtol=0)


def test_fp32_model_dtype_close_to_full():
    batch, h, w, _ = _setup(seed=2)
    h32, w32 = h.detach().float().requires_grad_(True), w.detach().float().requires_grad_(True)
    ref = sequencematch_loss(h32 @ w32.t(), batch)
    got = chunked_sequencematch_loss(h32, w32, batch, chunk_size=4)
    assert got.dtype == torch.float32
    assert abs(got.item() - ref.item()) <= 1e-5


def test_peak_memory_is_chunk_bounded():
    # one (N, A) fp32 tensor would be N*A*4 bytes; the chunked loss stays far below the full-logits loss
    A_big, d = 4096, 16
    trajs = [([2, 3], [4, 5] * 60 + [EOS]), ([2], [3, 4] * 60)] * 2
    batch = collate([encode(p, a, BK, eos_id=EOS, is_data=x) for (p, a), x in zip(trajs, IS_DATA)], PAD)
    B, T = batch["labels"].shape
    h = torch.randn(B, T, d, requires_grad=True)
    w = torch.randn(A_big, d, requires_grad=True)
    full = peak_bytes(lambda: sequencematch_loss(h @ w.t(), batch))
    h.grad = w.grad = None
    chunked = peak_bytes(lambda: chunked_sequencematch_loss(h, w, batch, chunk_size=32))
    assert full > B * T * A_big * 4
    assert chunked < full / 3


def test_bad_input():
    batch, h, w, _ = _setup()
    with pytest.raises(ValueError, match=r"\(B, T\) slots"):
        chunked_sequencematch_loss(h[:, 1:], w, batch)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        chunked_qv(h, w, batch["labels"], chunk_size=0)
    with pytest.raises(ValueError, match="lm_head_weight"):
        chunked_qv(h, w[:, :3], batch["labels"])
    with pytest.raises(ValueError, match="outside the 5 logits"):
        chunked_sequencematch_loss(h, w[:5], batch)
    with pytest.raises(ValueError, match="gamma"):
        chunked_sequencematch_loss(h, w, batch, gamma=1.0)


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gpt2"])
def test_from_a_models_last_hidden_state(preset):
    """How a trainer gets the hidden states through the (DDP-wrapped) forward without (B, T, A) logits:
    ``output_hidden_states=True, logits_to_keep=1``; ``hidden_states[-1]`` is after the final norm."""
    from seqlevel.backspace import model_inputs
    from seqlevel.presets import tiny_model

    model = tiny_model(preset, vocab_size=A, seed=0).double().eval()  # eval: no dropout between the two passes
    batch, _, _, _ = _setup()
    full = model(**model_inputs(batch)).logits  # (B, T, A)
    ref = sequencematch_loss(full, batch, gamma=0.9)
    out = model(**model_inputs(batch), output_hidden_states=True, logits_to_keep=1)
    assert out.logits.shape[1] == 1
    got = chunked_sequencematch_loss(out.hidden_states[-1], model.get_output_embeddings().weight, batch, gamma=0.9,
                                     chunk_size=5)
    assert abs(got.item() - ref.item()) <= 1e-10
    params = [p for p in model.parameters() if p.requires_grad]
    for x, z in zip(torch.autograd.grad(got, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(x, z, atol=1e-10, rtol=0)
