"""Head-only refit on cached trunk states: the ``head_only`` regime, done once per trunk state instead of per step.

With the trunk frozen (and no dropout) every head-only optimizer step sees the same trunk states, so they can be
computed once and the head trained on them in large minibatches: the gradients are those of
``AttributeTrainer(regime="head_only")`` on the same positions, at a small fraction of the cost. It is a tool for
probing what a trained trunk's states hold (Key-to-Door: a refitted head played better than the jointly trained one
of a full-history trunk), not the published method. The measured reason joint training lagged there is not a small
share of the gradient (extra weight on the key-room decisions did not help) but that the action-dependent part of
the win probability is small and learned last, while a full-history trunk memorises trajectories first
(docs/results.md, issue 14).

``candidate_ids`` restricts the fit to positions whose next token is one of those ids (an agent's actions, as
opposed to environment tokens); ``None`` uses every position, as CAT does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from seqlevel.data import CausalLMCollator
from seqlevel.losses.attribute import attribute_loss, check_attribute_labels


@torch.no_grad()
def cached_states(model, sequences: Sequence[Sequence[int]], candidate_ids: Sequence[int] | None = None,
                  pad_id: int = 0, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Trunk states ``h_t`` and realised next tokens ``x_{t+1}`` at the positions to fit, with their sequence index.

    Returns ``(hidden (N, d), next_tokens (N,), sequence_index (N,))``.
    """
    allowed = None if candidate_ids is None else torch.tensor(sorted(set(candidate_ids)))
    hs, nx, si = [], [], []
    device = next(model.parameters()).device
    collate = CausalLMCollator(pad_id)
    for start in range(0, len(sequences), chunk):
        batch = collate([{"input_ids": s} for s in sequences[start:start + chunk]])
        ids, mask = batch["input_ids"], batch["attention_mask"]
        hidden = model(ids.to(device), mask.to(device)).hidden[:, :-1].float().cpu()
        nxt, keep = ids[:, 1:], mask[:, 1:].bool()
        if allowed is not None:
            keep &= torch.isin(nxt, allowed)
        hs.append(hidden[keep])
        nx.append(nxt[keep])
        si.append((torch.arange(len(ids)) + start).unsqueeze(1).expand_as(keep)[keep])
    return torch.cat(hs), torch.cat(nx), torch.cat(si)


def refit_head(model, sequences: Sequence[Sequence[int]], attribute_labels, *,
               candidate_ids: Sequence[int] | None = None, steps: int = 3000, batch_size: int = 8192,
               lr: float = 3e-3, pad_id: int = 0, seed: int = 0, progress: bool = False) -> list[float]:
    """Train ``model.head`` alone on cached trunk states; returns the loss every 100 steps.

    Args:
        model: an :class:`~seqlevel.attributes.AttributeModel` (its base is only run forward, once).
        sequences: token id lists (the training data, ``<eos>`` included).
        attribute_labels: one label per sequence (the head's kind decides the type, checked as in training).
        candidate_ids: fit only positions whose next token is one of these (``None``: every position).
        steps / batch_size / lr: optimisation of the head (Adam, ``lr`` decayed linearly to 0, which averages out
            the label noise of the last steps); positions are drawn uniformly with replacement.
        pad_id: id used to pad (masked out).
        seed: minibatch sampling seed.
        progress: show a progress bar.
    """
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"steps and batch_size must be >= 1 and lr > 0, got {steps}, {batch_size}, {lr}")
    if len(sequences) != len(attribute_labels):
        raise ValueError(f"got {len(sequences)} sequences but {len(attribute_labels)} labels; give one per sequence")
    cfg = model.head.config
    dtype = torch.float if cfg.kind == "numeric" else torch.long
    labels = torch.as_tensor(attribute_labels, dtype=dtype)
    check_attribute_labels(labels, cfg.kind, cfg.num_classes)
    was_training = model.training
    model.eval()
    hidden, nxt, index = cached_states(model, sequences, candidate_ids, pad_id)
    if len(nxt) == 0:
        raise ValueError("no position to fit: no next token is in candidate_ids; check the ids against the data")
    device = model.head.token_keys.device
    hidden, nxt, y = hidden.to(device), nxt.to(device), labels[index].to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.head.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 - k / steps)
    losses = []
    model.head.train()
    steps_iter = range(steps)
    if progress:
        from tqdm.auto import tqdm

        steps_iter = tqdm(steps_iter, desc="head refit")
    for step in steps_iter:
        pick = torch.randint(0, len(nxt), (min(batch_size, len(nxt)),), generator=gen).to(device)
        attr = model.head.gathered(hidden[pick], nxt[pick]).unsqueeze(1)  # (n, 1, n_out)
        loss = attribute_loss(attr, y[pick], torch.ones(len(pick), 1, dtype=torch.bool, device=device), cfg.kind,
                              cfg.num_classes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            losses.append(float(loss.detach()))
    model.train(was_training)
    return losses
