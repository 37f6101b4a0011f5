"""The SequenceMatch loss split into the pieces that make it up, per kind of slot: the instrument that says which
term moves what (issue 21: which term lowers π(<bksp>) at states only the model visits).

``(1 − w)·BC + w·SM`` (the trainer's step loss) is written as a sum of scalar pieces:

* ``bc``: ``(1 − w)·BC``;
* ``data_linear``: ``w·s·(−Ê_D[Σ γ^i r_i])``, the linear part of the data side's ``φ(r) = r − c·r²`` (for
  ``tv`` the whole of it), over the transitions; ``data_linear/tail`` the same over the absorbing tail;
* ``data_r2/<kind>`` and ``model_r2/<kind>``: ``w·s·c·Ê[Σ γ^i r_i²]`` over the slots of one kind, on data and on
  model rows (the χ² terms; ``model_r2`` only for ``chi2_mix``, weight ``model_reg``);
* ``value_data`` / ``value_model``: ``w·s·(1 − λ)·Ê_D[value]`` and ``w·s·λ·Ê_M[value]``;

where ``s`` is ``1 − γ`` under ``occupancy_normalize``. The kinds are integer labels per slot given by the caller
(``slot_kind (B, T)``, names in ``kind_names``), e.g. "the action that made an unseen error", "⌫ after an unseen
error". The pieces add up to the loss of :func:`seqlevel.losses.sequencematch_loss` (tested), so the gradient of
each piece is that term's share of the step's gradient.
"""

from __future__ import annotations

import torch

from seqlevel.losses.sequencematch import _check_weights, _side_weights, _transitions, bc_loss

Tensor = torch.Tensor


def sequencematch_parts(
    logits: Tensor,
    batch: dict[str, Tensor],
    slot_kind: Tensor,
    kind_names: tuple[str, ...],
    *,
    sm_weight: float = 0.5,
    divergence: str = "chi2_mix",
    gamma: float = 0.998,
    eos: str = "absorbing",
    chi2_weight: float = 0.01,
    model_reg: float | None = None,
    model_mix: float = 0.5,
    occupancy_normalize: bool = True,
    value_on_truncated: bool = False,
    num_sequences: tuple[float, float, float] | None = None,
    num_bc_targets: float | None = None,
    sequence_weights: Tensor | None = None,
) -> dict[str, Tensor]:
    """Scalar pieces of ``(1 − w)·BC + w·SM`` whose sum is the step loss (see the module docstring).

    Args:
        logits: ``(B, T, A)`` logits of ``model(**model_inputs(batch))``.
        batch: a :func:`seqlevel.backspace.collate` batch.
        slot_kind: ``(B, T)`` long, the kind of each slot (an index into ``kind_names``); the absorbing tail slot
            of a row ending in ``<eos>`` may carry its own kind.
        kind_names: names of the kinds.
        sm_weight: the convex weight ``w`` of SM against BC.
        divergence: ``chi2_mix``, ``chi2`` or ``tv`` (the pieces need φ to be a polynomial).
        gamma, eos, chi2_weight, model_reg, model_mix, occupancy_normalize, value_on_truncated: as :func:`sequencematch_loss`.
        num_sequences: ``(n_data, n_model, n_model_complete)`` of the whole step (default: this batch's).
        num_bc_targets: BC targets of the whole step (default: this batch's).
        sequence_weights: optional ``(B,)`` row weights, as :func:`sequencematch_loss`.

    Returns:
        ``{"bc", "data_linear", "data_linear/tail", "value_data", "value_model", "data_r2/<kind>",
        "model_r2/<kind>"}``, scalars.
    """
    if divergence not in ("chi2_mix", "chi2", "tv"):
        raise ValueError(f"sequencematch_parts splits chi2_mix, chi2 or tv, got {divergence!r}")
    c_m = _check_weights(model_reg, model_mix, chi2_weight)
    c = float(chi2_weight) if divergence != "tv" else 0.0
    c_m = c_m if divergence == "chi2_mix" else 0.0
    lg = logits.double() if logits.dtype == torch.float64 else logits.float()
    dt = lg.dtype
    Q = lg.gather(-1, batch["labels"].to(lg.device).clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T)
    t = _transitions(torch.logsumexp(lg, -1), Q, batch, gamma=gamma, eos=eos)  # the loss's own per-slot arithmetic
    w, has, r = t["w"], t["has_r"].to(dt), t["r"]
    lin = has * w * r
    lin_tail = torch.zeros_like(lin)
    sq = has * w * r**2
    value = t["valid"].to(dt) * w * (t["V"] - gamma * t["V_next"])
    if t["tail"] is not None:  # closed-form tail at u_K (losses/sequencematch.py)
        a = t["tail"].to(dt)
        lin_tail = a * t["tail_w"] * t["r_abs"]
        sq = sq + a * t["tail_w"] * t["r_abs"] ** 2
        value = value + t["eos_abs"].to(dt) * w * t["V"]
    d, m, mv, n_d, n_m, n_mv, lam = _side_weights(batch["is_data"], t["eos_abs"].any(1), model_mix=model_mix,
                                                 num_sequences=num_sequences, sequence_weights=sequence_weights,
                                                 value_on_truncated=value_on_truncated, dtype=dt)
    scale = (1.0 - gamma) if occupancy_normalize else 1.0
    k = sm_weight * scale
    zero = lg.sum() * 0.0
    out = {"bc": (1.0 - sm_weight) * bc_loss(logits, batch, num_items_in_batch=num_bc_targets)
           if sm_weight < 1 else zero}
    out["data_linear"] = -k * (d[:, None] * lin).sum() / n_d if n_d > 0 else zero
    out["data_linear/tail"] = -k * (d[:, None] * lin_tail).sum() / n_d if n_d > 0 else zero
    out["value_data"] = k * (1.0 - lam) * (d * value.sum(1)).sum() / n_d if n_d > 0 else zero
    out["value_model"] = k * lam * (mv * value.sum(1)).sum() / n_mv if n_mv > 0 else zero
    kind = slot_kind.to(lg.device)
    for j, name in enumerate(kind_names):
        sel = (kind == j).to(dt)
        out[f"data_r2/{name}"] = k * c * (d[:, None] * sel * sq).sum() / n_d if n_d > 0 else zero
        out[f"model_r2/{name}"] = k * c_m * (m[:, None] * sel * sq).sum() / n_m if n_m > 0 else zero
    return out
