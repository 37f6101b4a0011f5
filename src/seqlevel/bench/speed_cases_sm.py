"""Speed case for the SequenceMatch single-pass encoding (issue 3): how much the masking scheme costs.

``sm-encoded-vs-mle``: forward + backward of a small Llama on a collated batch of encoded trajectories with
backspaces (explicit position ids, 4-D mask, SequenceMatch χ²-mix loss on half data / half model rows) against
plain causal MLE forward + backward on the same number of token slots. The paper claims the masking scheme
adds little overhead over MLE.
"""

from __future__ import annotations

import random

import torch

from seqlevel.backspace import collate, encode, model_inputs
from seqlevel.bench.speed import SpeedCase
from seqlevel.losses import mle_loss, sequencematch_loss
from seqlevel.presets import tiny_model


def _sync_for(device: str):
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def _trajectories(B: int, T: int, V: int, bk: int, p_bksp: float, seed: int = 0):
    """``B`` trajectories of exactly ``T`` slots (no padding): 8-token prompt, ~``p_bksp`` backspaces."""
    rng = random.Random(seed)
    out = []
    for b in range(B):
        prompt = [rng.randrange(3, bk) for _ in range(8)]
        acts = [bk if rng.random() < p_bksp else rng.randrange(3, bk) for _ in range(T - len(prompt))]
        out.append(encode(prompt, acts, bk, is_data=b % 2 == 0))
    return out


def sm_encoded_vs_mle(device: str = "cpu", quick: bool = False, mask_format: str = "float") -> SpeedCase:
    """Forward+backward, small Llama: encoded batch with 30% backspaces (A) vs plain causal MLE (B)."""
    V, B, T = (256, 4, 64) if quick else (2048, 8, 256)
    model = tiny_model("tiny-llama" if quick else "small-llama", vocab_size=V, seed=0,
                       attn_implementation="sdpa").to(device)
    model.train()
    bk = V - 1
    batch = collate(_trajectories(B, T, V, bk, p_bksp=0.3), pad_id=0, mask_format=mask_format)
    sm_inputs = model_inputs(batch, device=device)
    sm_batch = {k: v.to(device) for k, v in batch.items()}
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, bk, (B, T), generator=g).to(device)

    def encoded_step():
        logits = model(**sm_inputs).logits  # (B, T, V): slot t scores labels[:, t]
        loss = sequencematch_loss(logits, sm_batch)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss

    def mle_step():
        logits = model(input_ids=ids).logits[:, :-1]  # (B, T-1, V); causal mask built by SDPA (is_causal)
        loss = mle_loss(logits, ids[:, 1:])
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss

    return SpeedCase(
        a=encoded_step,
        b=mle_step,
        a_name=f"encoded batch ({mask_format} 4-D mask, position ids) + sequencematch_loss fwd+bwd",
        b_name="plain causal batch + mle_loss fwd+bwd",
        description=f"forward+backward, {'tiny' if quick else 'small'}-llama (sdpa), {B}x{T} slots, V={V}, "
                    "30% backspaces",
        sync=_sync_for(device),
    )
