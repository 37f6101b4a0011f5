"""Cases of the token-weighted objectives (MLE, MixCE, DFT, TaiLr; issue 2 and issue 8).

* speed ``mixce-vs-mle``: one AdamW step of a small GPT-2 with ``mixce_loss`` (A) vs ``mle_loss`` (B).
* memory ``mle`` / ``mixce`` / ``dft`` / ``tailr``: the chunked (fused output-projection) losses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from seqlevel.bench.cases import SpeedCase, device_sync, random_tokens

Tensor = torch.Tensor


def mixce_vs_mle(device: str = "cpu", quick: bool = False) -> SpeedCase:
    """One AdamW step of a small GPT-2 on a fixed batch: ``mixce_loss`` (A) vs ``mle_loss`` (B)."""
    from seqlevel.losses import mixce_loss, mle_loss
    from seqlevel.presets import tiny_model

    V, B, T = (256, 4, 64) if quick else (2048, 8, 256)
    model = tiny_model("tiny-gpt2" if quick else "small-gpt2", vocab_size=V, seed=0).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = random_tokens(B, T, V).to(device)
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
        sync=device_sync(device),
    )


def _tailr_weight(q: Tensor) -> Tensor:
    return (q / (1e-7 + (1 - 1e-7) * q)).clamp(0.2, 1.0)


def mle_memory(hidden: Tensor, weight: Tensor, labels: Tensor, chunk: int) -> Callable[[], Tensor]:
    """Chunked MLE: the reference every memory case is compared with."""
    from seqlevel.losses.chunked import chunked_mle_loss

    return lambda: chunked_mle_loss(hidden, weight, labels, chunk_size=chunk)


def mixce_memory(hidden: Tensor, weight: Tensor, labels: Tensor, chunk: int) -> Callable[[], Tensor]:
    """Chunked MixCE, ``eta = 0.5``."""
    from seqlevel.losses.chunked import chunked_mixce_loss

    return lambda: chunked_mixce_loss(hidden, weight, labels, 0.5, chunk_size=chunk)


def dft_memory(hidden: Tensor, weight: Tensor, labels: Tensor, chunk: int) -> Callable[[], Tensor]:
    """Chunked DFT (MixCE with ``eta = 0``: every token weighted by its own probability)."""
    from seqlevel.losses.chunked import chunked_mixce_loss

    return lambda: chunked_mixce_loss(hidden, weight, labels, 0.0, chunk_size=chunk)


def tailr_memory(hidden: Tensor, weight: Tensor, labels: Tensor, chunk: int) -> Callable[[], Tensor]:
    """Chunked TaiLr-style token weighting (weights clamped to [0.2, 1])."""
    from seqlevel.losses.chunked import chunked_token_weighted_loss

    return lambda: chunked_token_weighted_loss(hidden, weight, labels, _tailr_weight, chunk_size=chunk)
