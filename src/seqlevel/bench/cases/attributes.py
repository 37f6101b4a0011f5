"""Cases of CAT, the Conditional Attribute Transformer (issues 6, 8 and 16).

* speed ``cat-estimate-vs-forward``: one pass giving p(v) and P(a = 1 | v) for every candidate v at every
  position (binary head, the Key-to-Door / clinical setting) vs the base model's plain forward + softmax.
* speed ``cat-estimate-vs-forward-k5``: the same with a K = 5 categorical head, one target class asked for.
* memory ``attribute``: CAT's ``CE + 0.15 · L_attr`` with a binary head gathered at the labels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from seqlevel.bench.cases import SpeedCase, device_sync, random_tokens

Tensor = torch.Tensor


def _workload(device: str, quick: bool, kind: str, num_classes: int = 2):
    """Small GPT-2 (or tiny when ``quick``), its CAT model (rank 8) and one batch of random ids: the one CAT
    synthetic batch."""
    from seqlevel.attributes import AttributeModel
    from seqlevel.presets import tiny_model

    V, B, T = (512, 2, 32) if quick else (8192, 4, 128)
    base = tiny_model("tiny-gpt2" if quick else "small-gpt2", vocab_size=V, seed=0).to(device).eval()
    model = AttributeModel.for_base(base, kind, num_classes, rank=8).eval()
    ids = random_tokens(B, T, V).to(device)
    return base, model, ids, f"{'tiny' if quick else 'small'}-gpt2, batch {B}x{T}, V={V}"


def _estimate_case(device: str, quick: bool, kind: str, target: int, num_classes: int = 2) -> SpeedCase:
    """CAT forward + p(v) + P(a = target | v) for every candidate v (one GEMM pass, no ``(B, T, V, K)`` tensor,
    written into the logits once their softmax is taken) against a plain LM forward + softmax."""
    from seqlevel.attributes.estimate import class_probability

    base, model, ids, desc = _workload(device, quick, kind, num_classes)

    @torch.no_grad()
    def estimate():
        out = model(ids)  # logits (B, T, V), hidden (B, T, d)
        p = out.logits.softmax(-1)  # p(v)
        return p, class_probability(model.head, out.hidden, target=target, out=out.logits)  # in the logits

    @torch.no_grad()
    def forward():
        return base(input_ids=ids).logits.softmax(-1)

    k = f", K={num_classes}" if kind == "categorical" else ""
    return SpeedCase(a=estimate, b=forward, a_name=f"CAT forward + all-candidates P(a={target}|v){k} (r=8)",
                     b_name="plain LM forward + softmax", sync=device_sync(device), description=desc + k)


def cat_estimate_vs_forward(device: str = "cpu", quick: bool = False) -> SpeedCase:
    """A: one pass giving p(v) and P(a = 1 | v) for every candidate v at every position (binary attribute);
    B: the base model's plain forward + softmax on the same batch.

    The head's extra work is one ``(B·T, r + 2) x (r + 2, V)`` GEMM (r = 8 vs d = 128 for the LM head) and a
    sigmoid over ``(B, T, V)``, done block by block while the block is in cache
    (:func:`seqlevel.attributes.estimate.class_probability`), written into the logits once their softmax is taken
    (no second fresh ``(B, T, V)`` tensor)."""
    return _estimate_case(device, quick, "binary", target=1)


def cat_estimate_vs_forward_k5(device: str = "cpu", quick: bool = False) -> SpeedCase:
    """The same workload with a K = 5 categorical head, computing what a caller asks for: p(v) and
    P(a = target | v) for every candidate v at every position (the binary case's P(a = 1 | v), for one of five
    classes), via :func:`seqlevel.attributes.estimate.class_probability`, which never builds the
    ``(B, T, V, K)`` tensor (the full tensor measured 3.3–3.9× a forward)."""
    return _estimate_case(device, quick, "categorical", target=4, num_classes=5)


def attribute_memory(hidden: Tensor, weight: Tensor, labels: Tensor, chunk: int) -> Callable[[], Tensor]:
    """CAT ``CE + 0.15 · L_attr`` (binary head gathered at the labels) from hidden states.

    The head is built here, before measuring (its parameters are inputs, like the output projection). Its rank
    is ``min(32, d // 8)`` (32 at the default d = 256, the CAT setting): the head's ``(V, r)`` key table gets a
    gradient like the ``(V, d)`` projection, so a rank comparable to d (only possible in toy widths) would
    measure the head, not the loss.
    """
    from seqlevel.attributes.head import AttributeHead, AttributeHeadConfig
    from seqlevel.losses.chunked_attribute import chunked_cat_loss

    V, d = weight.shape
    torch.manual_seed(0)
    head = AttributeHead(AttributeHeadConfig(kind="binary", vocab_size=V, hidden_size=d, rank=max(1, min(32, d // 8))))

    def loss() -> Tensor:
        attr = head.gathered(hidden, labels.clamp(min=0))  # (B, T, 1)
        a = torch.arange(labels.shape[0]) % 2  # (B,) one binary label per sequence
        return chunked_cat_loss(hidden, weight, labels, attr, a, "binary", 0.15, chunk_size=chunk)

    return loss
