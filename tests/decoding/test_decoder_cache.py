"""The decoder's pre-allocated KV cache (``PreallocatedLayer``) holds exactly what ``DynamicLayer`` would."""

from __future__ import annotations

import torch

from seqlevel.decoding.decoder import PreallocatedLayer, preallocated_cache


def test_preallocated_layer_returns_the_concatenation_and_falls_back_past_its_capacity():
    g = torch.Generator().manual_seed(0)
    chunks = [torch.randn(2, 3, m, 4, generator=g) for m in (5, 1, 1, 2, 1)]
    for capacity in (10, 7):  # 7: the last two updates exceed it and fall back to growing
        layer = PreallocatedLayer(capacity)
        for i, c in enumerate(chunks):
            k, v = layer.update(c, 2 * c)
            want = torch.cat(chunks[: i + 1], dim=-2)
            assert torch.equal(k, want) and torch.equal(v, 2 * want)
            assert layer.get_seq_length() == want.shape[-2]


def test_preallocated_cache_gives_a_model_the_same_logits_as_a_dynamic_cache():
    from transformers import DynamicCache

    from seqlevel.presets import tiny_model

    model = tiny_model("tiny-gpt2", vocab_size=64, seed=0).eval()
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(1))
    outs = []
    for cache in (DynamicCache(), preallocated_cache(8)):
        with torch.no_grad():
            a = model(input_ids=ids, cache=cache, use_cache=True).logits
            b = model(input_ids=ids[:, :1], cache=cache, use_cache=True).logits
            c = model(input_ids=ids[:, 1:2], cache=cache, use_cache=True).logits
            d = model(input_ids=ids[:, 2:3], cache=cache, use_cache=True).logits  # slot 9 > capacity 8: fallback
        outs.append((a, b, c, d))
    for x, y in zip(*outs):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
