"""Speed cases for the token-weighted objectives (issue 2). Other areas keep their cases beside their code."""

from __future__ import annotations

import torch

from seqlevel.bench.speed import SpeedCase
from seqlevel.losses import mixce_loss, mle_loss
from seqlevel.presets import tiny_model


def _sync_for(device: str):
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def mixce_vs_mle(device: str = "cpu", quick: bool = False) -> SpeedCase:
    """One AdamW step of a small GPT-2 on a fixed batch: ``mixce_loss`` (A) vs ``mle_loss`` (B)."""
    V, B, T = (256, 4, 64) if quick else (2048, 8, 256)
    model = tiny_model("tiny-gpt2" if quick else "small-gpt2", vocab_size=V, seed=0).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (B, T), generator=g).to(device)
    labels = ids[:, 1:]

    def step(loss_fn):
        def _run():
            logits = model(input_ids=ids).logits[:, :-1]  # (B, T-1, V)
            loss = loss_fn(logits, labels)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        return _run

    return SpeedCase(
        a=step(lambda lg, lb: mixce_loss(lg, lb, eta=0.5)),
        b=step(mle_loss),
        a_name="mixce_loss(eta=0.5) step",
        b_name="mle_loss step",
        description=f"one optimizer step, small GPT-2, batch {B}x{T}, V={V}",
        sync=_sync_for(device),
    )
