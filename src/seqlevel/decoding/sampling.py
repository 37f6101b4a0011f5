"""Sampling rules: temperature, top-k and nucleus (top-p) filtering, then a draw or an argmax.

The same rules as Hugging Face's ``TemperatureLogitsWarper``, ``TopKLogitsWarper`` and ``TopPLogitsWarper``
(applied in that order), written as plain functions on a ``(B, V)`` score tensor so the decoding loop stays a
loop. Filtered entries become ``-inf``; at least one entry per row always survives.
"""

from __future__ import annotations

import torch


def check_sampling_options(do_sample: bool, temperature: float, top_k: int, top_p: float, *,
                           flags: bool = False) -> None:
    """Raise a ``ValueError`` that says how to fix a bad sampling option.

    ``flags=True`` names the command-line flags (``--top-p``, ``--greedy``) instead of the Python arguments.
    """
    top_p_name, top_k_name, temp_name = ("--top-p", "--top-k", "--temperature") if flags else \
        ("top_p", "top_k", "temperature")
    greedy = "pass --greedy" if flags else "use do_sample=False (greedy)"
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"{top_p_name} must be in (0, 1], got {top_p}; 1.0 disables nucleus sampling")
    if top_k < 0:
        raise ValueError(f"{top_k_name} must be >= 0, got {top_k}; 0 disables top-k filtering")
    if do_sample and not temperature > 0.0:
        raise ValueError(f"{temp_name} must be > 0 when sampling, got {temperature}; for the most likely action "
                         f"{greedy}")


def filter_scores(scores: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Apply temperature, then top-k, then top-p to a batch of scores.

    Args:
        scores: ``(B, V)`` logits (or any log-scores) in float32.
        temperature: divide the scores by this (> 0); 1.0 leaves them unchanged.
        top_k: keep only the ``top_k`` highest scores per row; 0 keeps all.
        top_p: keep the smallest set of highest-probability entries whose mass reaches ``top_p``; 1.0 keeps all.

    Returns:
        ``(B, V)`` scores with filtered entries at ``-inf`` (a new tensor unless nothing was asked for).
    """
    if temperature != 1.0:
        scores = scores / temperature
    V = scores.shape[-1]
    if 0 < top_k < V:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]  # (B, 1): smallest kept score
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)  # (B, V)
        probs = sorted_scores.softmax(dim=-1)
        # mass strictly before each entry; an entry is dropped once the mass before it already reaches top_p,
        # so the most likely entry always survives
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores


def choose_actions(
    scores: torch.Tensor,
    *,
    do_sample: bool,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One action per row: a draw from the filtered distribution, or the argmax when ``do_sample=False``.

    Args:
        scores: ``(B, V)`` float32 scores (after any steering).
        do_sample: sample if True; otherwise greedy (temperature, top-k and top-p are then ignored, as in
            Hugging Face ``generate``).
        generator: the random stream for sampling (seeded for reproducibility).

    Returns:
        ``(B,)`` long tensor of chosen action ids.
    """
    if not do_sample:
        return scores.argmax(dim=-1)
    probs = filter_scores(scores, temperature, top_k, top_p).softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
