"""Model-side metrics: perplexity on data (forward cross-entropy) and prompt–continuation coherence."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from seqlevel.losses import mle_loss


def right_pad(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both ``(B, W)`` long: token-id sequences right-padded with ``pad`` (each
    row's positions stay 0..len−1, as unpadded)."""
    W = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), W), pad, dtype=torch.long)
    att = torch.zeros_like(ids)
    for r, s in enumerate(seqs):
        ids[r, : len(s)], att[r, : len(s)] = torch.as_tensor(list(s)), 1
    return ids, att


@torch.no_grad()
def perplexity(model, sequences: Sequence[Sequence[int]], *, batch_size: int = 16, pad_id: int = 0) -> dict:
    """Token-level perplexity ``exp(Σ NLL / #tokens)`` of ``model`` on token-id sequences (first token is context).

    Returns:
        ``{"nll": mean nats per predicted token, "perplexity": exp(nll), "tokens": count}``.
    """
    if len(sequences) == 0:
        raise ValueError("no sequences given; perplexity needs at least one sequence of >= 2 tokens")
    device = next(model.parameters()).device
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(sequences), batch_size):
        ids, am = right_pad(sequences[i : i + batch_size], pad_id)
        ids, am = ids.to(device), am.to(device)
        labels = ids.masked_fill(am == 0, -100)[:, 1:]
        logits = model(input_ids=ids, attention_mask=am).logits[:, :-1]
        total += mle_loss(logits, labels, reduction="sum").item()
        count += int(labels.ne(-100).sum())
    if count == 0:
        raise ValueError("every sequence is shorter than 2 tokens, so nothing is predicted")
    nll = total / count
    return {"nll": nll, "perplexity": math.exp(nll), "tokens": count}


@torch.no_grad()
def _embed(texts: Sequence[str], encoder, tokenizer, max_length: int) -> torch.Tensor:
    enc = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    enc = enc.to(next(encoder.parameters()).device)
    out = encoder(**enc, output_hidden_states=True)
    h = out.hidden_states[-1]  # (B, T, d)
    m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp_min(1)  # mean pooling over real tokens


def coherence(prompts: Sequence[str], continuations: Sequence[str], encoder, tokenizer, *,
              max_length: int = 512) -> float:
    """MixCE's coherence: mean cosine similarity between prompt and continuation embeddings.

    The paper used SimCSE (``sup-simcse-bert-base-uncased``); any local sentence encoder works here
    (mean-pooled last hidden state).
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations; pass one per prompt")
    if len(prompts) == 0:
        raise ValueError("no prompts given")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    a = _embed(prompts, encoder, tokenizer, max_length)
    b = _embed(continuations, encoder, tokenizer, max_length)
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).mean().item()
