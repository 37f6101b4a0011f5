"""Speed case for CAT (issue 6): all-candidates attribute estimate vs a plain LM forward on the same batch."""

from __future__ import annotations

import torch

from seqlevel.attributes import AttributeModel
from seqlevel.bench.speed import SpeedCase
from seqlevel.presets import tiny_model


def cat_estimate_vs_forward(device: str = "cpu", quick: bool = False) -> SpeedCase:
    """A: one pass giving p(v) and P(a = 1 | v) for every candidate v at every position (binary attribute, the
    Key-to-Door / clinical setting); B: the base model's plain forward + softmax on the same batch.

    The head's extra work is one ``(B·T, r) x (r, V)`` GEMM (r = 8 vs d = 128 for the LM head) and a sigmoid over
    ``(B, T, V)``. A K-class head writes K times the logits' size; on CPU that allocation dominates (see
    docs/results.md for the K = 5 ratio)."""
    V, B, T = (512, 2, 32) if quick else (8192, 4, 128)
    base = tiny_model("tiny-gpt2" if quick else "small-gpt2", vocab_size=V, seed=0).to(device).eval()
    model = AttributeModel.for_base(base, "binary", rank=8).eval()
    ids = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0)).to(device)

    @torch.no_grad()
    def estimate():
        out = model(ids, all_candidates=True)  # attribute: (B, T, V, 1) view of a fresh tensor
        return out.logits.softmax(-1), out.attribute[..., 0].sigmoid_()  # p(v) (B,T,V), P(a=1|v) (B,T,V)

    @torch.no_grad()
    def forward():
        return base(input_ids=ids).logits.softmax(-1)

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    return SpeedCase(a=estimate, b=forward, a_name="CAT forward + all-candidates P(a=1|v) (r=8)",
                     b_name="plain LM forward + softmax", sync=sync,
                     description=f"{'tiny' if quick else 'small'}-gpt2, batch {B}x{T}, V={V}")
