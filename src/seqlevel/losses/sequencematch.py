"""SequenceMatch objective (Cundy & Ermon 2024, §3 of our notes) and its behaviour-cloning baseline.

The LM's logits are soft-Q values over the extended vocabulary (tokens, ``<eos>``, ``<bksp>``):

* ``Q(s, a) = ℓ_θ(a | s)``, ``V(s) = logsumexp_a ℓ_θ(a | s)``, implicit reward ``r = Q(s, a) − γ V(s')`` (eq. 4);
* the IQ-Learn / Proposition 1 objective to maximise is ``E_ρD[φ(r)] − E_ρ[V(s) − γ V(s')]``; we minimise its
  negative, with every expectation an occupancy-weighted sum over time steps (weights ``γ^i``, §3.5);
* ``chi2_mix`` (default) adds the model-side χ² regulariser ``c·E_ρM[r²]`` (LS-IQ's mixture, §3.4), with the
  data side ``φ(r) = r − c·r²``.

Layout (from :func:`seqlevel.backspace.collate`): ``logits[:, t]`` are the Q-values of the state held at slot
``t``; ``labels[:, t]`` is the action taken there; the next state is slot ``t + 1``; ``valid`` marks slots with a
transition; ``step`` is the time index; ``eos_abs`` marks the absorbing state after ``<eos>``; ``is_data`` says
which rows are data and which are model (replay) trajectories. One batch holds both.

Reconstructed choices (RECON in the notes), each a knob with the principled default:

* ``eos="absorbing"``: after ``<eos>`` the state is absorbing and its infinite tail is summed in closed form
  (LS-IQ's ``treat_absorbing_states``); ``eos="done"`` is IQ-Learn's ``y = (1 − done) γ V'`` with no tail.
  ``eos="absorbing_eos"`` is the same tail for an absorbing state whose only action is ``<eos>``: its value is
  its ``<eos>`` logit, ``V(u_K) = Q(u_K, <eos>)``, and the other logits at that slot play no part. Why it exists
  (docs/results.md, issue 21): the logits at the ``<eos>`` input position are never a BC target, so with
  ``"absorbing"`` the tail's ``r = log π(<eos> | u_K) + (1 − γ)V(u_K)`` starts on an untrained softmax (a BC
  checkpoint put 0.94 on ``<bksp>`` there) with the occupancy weight ``γ^K/(1 − γ)`` of ~500 steps; its gradient,
  shared by every state through the ``<bksp>`` row, lowers π(``<bksp>``) everywhere at the start of SequenceMatch
  (first order: −64 against BC's +0.14 on log π(``<bksp>``) after unseen errors). ``"absorbing_eos"`` removes that
  (+0.11), and in the tabular instrument both modes have the same optimum; it is not the default because on five
  seeds it did not raise deletion after unseen errors at the end of a fine-tune and it left more impossible
  bigrams than BC continued at full noise coverage (docs/results.md).
* ``chi2_weight=0.01``: the weight ``c`` of the χ² terms, on both sides: ``φ(r) = r − c·r²`` on data and
  ``c·Ê_M[r²]`` on model rows. ``c = ¼`` is the literal LS-IQ derivation (the paper's ``φ(x) = x − x²/4``); we
  read the paper's unexplained "α = 0.01" as ``c`` (notes §0.1). Why not ¼: the value term telescopes, so on
  complete trajectories χ²-mix is γ-weighted BC minus ``c·(Ê_D + Ê_M)[Σ γ^i r_i²]``, and the ``r²`` terms pull the
  policy towards the zero-reward soft-optimal (maximum-entropy) policy with weight ``c`` against BC's 1, so a
  smaller ``c`` keeps that pull weaker. Measured in the tabular instrument (:mod:`seqlevel.tasks.tabular`,
  docs/results.md): at γ = 0.998 both 0.01 and ¼ recover the expert (policy TV ≤ 0.0004) and backspace at the
  states only the model visits; the flattening an earlier audit reported for ¼ shows here only at γ = 0.9.
  ``model_reg`` overrides the model-side weight alone (default: ``chi2_weight``).
* ``model_mix=0.5``: weight of model trajectories in the value term's ``ρ_mix`` (IQ-Learn's 50/50 batches). When
  the batch (or ``num_sequences``) has no model trajectories, the value term falls back to the data side alone.
* normalisation: per-sequence γ-weighted sums, averaged over data and over model sequences separately, times
  ``(1 − γ)`` (``occupancy_normalize=True``) so the loss is an expectation under the normalised occupancy.
* a trajectory without a final ``<eos>`` is truncated, not terminal: its sums simply stop, and its last state
  enters only through ``V(s')`` of the last transition.
* ``max_phi_slope=10``: where φ is undefined or singular (``kl``, ``js``, ``hellinger``), φ is continued along
  its tangent below the point where ``φ' = max_phi_slope``; the result is concave and C¹ everywhere.
"""

from __future__ import annotations

import math

import torch

from seqlevel.losses.token_weighted import mle_loss

Tensor = torch.Tensor
IGNORE = -100
DIVERGENCES = ("chi2_mix", "chi2", "kl", "reverse_kl", "js", "hellinger", "tv")
EOS_MODES = ("absorbing", "done", "absorbing_eos")


def _phi_exact(divergence: str, r: Tensor, chi2_weight: float = 0.25) -> Tensor:
    # φ(r) = −f*(−r) for D_f(ρ_θ ‖ ρ_data) (§3.3 table)
    if divergence in ("chi2_mix", "chi2"):
        return r - chi2_weight * r**2  # Pearson χ²: the paper's φ(x) = x − x²/4 at chi2_weight = ¼
    if divergence == "kl":
        return 1.0 + torch.log(r)  # forward KL(ρ_data ‖ ρ_θ); r > 0
    if divergence == "reverse_kl":
        return -torch.exp(-(r + 1.0))  # KL(ρ_θ ‖ ρ_data), IQ-Learn's "kl"
    if divergence == "js":
        return torch.log(2.0 - torch.exp(-r))  # r > −log 2
    if divergence == "hellinger":
        return r / (1.0 + r)  # r > −1
    return r  # total variation (|r| ≤ ½ is not enforced, as in IQ-Learn)


def _phi_slope_point(divergence: str, s: float) -> float | None:
    """The r where φ'(r) = s, below which φ continues along its tangent; None where φ is used as is."""
    if divergence == "kl":
        return 1.0 / s  # φ' = 1/r
    if divergence == "js":
        return -math.log(2.0 * s / (1.0 + s))  # φ' = e^{−r} / (2 − e^{−r})
    if divergence == "hellinger":
        return 1.0 / math.sqrt(s) - 1.0  # φ' = 1/(1+r)²
    return None


def phi(divergence: str, r: Tensor, max_phi_slope: float = 10.0, chi2_weight: float = 0.25) -> Tensor:
    """The concave φ of a divergence (§3.3), tangent-continued where it is undefined (see module docstring).

    Args:
        divergence: one of ``DIVERGENCES``.
        r: implicit rewards, any shape.
        max_phi_slope: φ's slope at the continuation point (``kl``, ``js``, ``hellinger`` only); must be > 1.
        chi2_weight: ``c`` in ``φ(r) = r − c·r²`` (``chi2``/``chi2_mix`` only); ¼ is the literal Pearson χ².

    Returns:
        ``φ(r)``, same shape as ``r``.
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; choose one of {DIVERGENCES} (the paper used 'chi2_mix')")
    r_lo = _phi_slope_point(divergence, float(max_phi_slope)) if divergence in ("kl", "js", "hellinger") else None
    if r_lo is None:
        return _phi_exact(divergence, r, chi2_weight)
    if not max_phi_slope > 1.0:
        raise ValueError(f"max_phi_slope must be > 1, got {max_phi_slope}; 10 keeps φ' bounded but steep")
    r_lo_t = torch.as_tensor(r_lo, dtype=r.dtype, device=r.device)
    return _phi_exact(divergence, torch.maximum(r, r_lo_t)) + max_phi_slope * torch.clamp(r - r_lo_t, max=0.0)


class _QV(torch.autograd.Function):
    """``(V, Q) = (logsumexp(x), x[a])`` in one fused pass, as cheap as a cross-entropy.

    Forward reuses the fused log-softmax kernel (``V = x_a − log_softmax(x)_a``); backward writes
    ``gV · softmax(x) + gQ · onehot(a)`` into one buffer instead of autograd's three (logsumexp's, gather's, sum).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        logp = torch.log_softmax(logits, dim=-1)  # (B, T, A)
        idx = actions.unsqueeze(-1)  # (B, T, 1)
        Q = logits.gather(-1, idx).squeeze(-1)  # (B, T)
        V = Q - logp.gather(-1, idx).squeeze(-1)  # (B, T): logsumexp, since log π(a|s) = Q(s,a) − V(s)
        ctx.save_for_backward(logp, idx)
        return V, Q

    @staticmethod
    def backward(ctx, gV: Tensor, gQ: Tensor) -> tuple[Tensor, None]:
        logp, idx = ctx.saved_tensors
        grad = logp.exp().mul_(gV.unsqueeze(-1))  # dV/dx = softmax(x)
        grad.scatter_add_(-1, idx, gQ.unsqueeze(-1))  # dQ/dx = onehot(a)
        return grad, None


def _check(logits: Tensor, batch: dict, gamma: float, divergence: str, eos: str) -> None:
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; choose one of {DIVERGENCES} (the paper used 'chi2_mix')")
    if not 0.0 < float(gamma) < 1.0:
        raise ValueError(f"gamma must be in (0, 1), got {gamma}; the paper used 0.998")
    if eos not in EOS_MODES:
        raise ValueError(f"eos must be one of {EOS_MODES}, got {eos!r}; 'absorbing' sums the tail after <eos>, "
                         "'absorbing_eos' with the <eos> logit as the absorbing state's value")
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, T, A), got shape {tuple(logits.shape)}")
    for key in ("labels", "valid", "step", "eos_abs", "is_data"):
        if key not in batch:
            raise ValueError(f"batch has no {key!r}; build it with seqlevel.backspace.collate")
    if tuple(batch["labels"].shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"logits cover {tuple(logits.shape[:2])} (B, T) slots but the batch has {tuple(batch['labels'].shape)}; "
            "run the model on model_inputs(batch) without shifting: slot t's logits score labels[:, t]"
        )
    lab = batch["labels"]
    if bool(((lab != IGNORE) & ((lab < 0) | (lab >= logits.shape[-1]))).any()):
        raise ValueError(f"labels hold ids outside the {logits.shape[-1]} logits; did the model get the <bksp> row "
                         "(add_backspace_token)?")


def sequencematch_terms(
    logits: Tensor,
    batch: dict[str, Tensor],
    *,
    divergence: str = "chi2_mix",
    gamma: float = 0.998,
    eos: str = "absorbing",
    max_phi_slope: float = 10.0,
    chi2_weight: float = 0.01,
) -> dict[str, Tensor]:
    """Per-sequence γ-weighted sums of the three SequenceMatch terms (not yet signed, weighted or averaged).

    Args:
        logits: ``(B, T, A)`` extended-vocabulary logits of ``model(**model_inputs(batch))``.
        batch: a :func:`seqlevel.backspace.collate` batch.
        divergence, gamma, eos, max_phi_slope, chi2_weight: as in :func:`sequencematch_loss`.

    Returns:
        ``phi (B,)``: Σ_i γ^i φ(r_i) (+ absorbing tail); ``r2 (B,)``: Σ_i γ^i r_i² (+ tail); ``value (B,)``:
        Σ_i γ^i (V(s_i) − γ V(s_{i+1})) (+ tail γ^K V(u_K)), which telescopes to V(s_0) on a complete trajectory;
        ``r``, ``V``: ``(B, T)`` detached diagnostics; ``has_r``: ``(B, T)`` where ``r`` is defined.
    """
    _check(logits, batch, gamma, divergence, eos)
    lg = logits if logits.dtype == torch.float64 else logits.float()  # (B, T, A) fp32 at least
    # V(s) = log Σ_a exp Q(s, a) over the extended vocabulary (<bksp>, <eos> included); Q(s_t, a_t)
    V, Q = _QV.apply(lg, batch["labels"].to(lg.device).clamp(min=0))  # (B, T), (B, T)
    return sequencematch_terms_from_qv(V, Q, batch, divergence=divergence, gamma=gamma, eos=eos,
                                       max_phi_slope=max_phi_slope, chi2_weight=chi2_weight)


def _transitions(V: Tensor, Q: Tensor, batch: dict[str, Tensor], *, gamma: float = 0.998,
                eos: str = "absorbing") -> dict[str, Tensor | None]:
    """The per-slot quantities every SequenceMatch term is built from, given ``V (B, T)`` and ``Q (B, T)``.

    Returns ``V`` (``V(u_K) = Q(u_K, <eos>)`` at the absorbing slot for ``eos="absorbing_eos"``), ``V_next``
    (``V(s_{t+1})``, 0 into the terminal state for ``eos="done"``), ``w`` (occupancy weight ``γ^i``), ``has_r`` (slots
    with a transition and a target), ``r = Q(s, a) − γ V(s')`` (eq. 4), ``valid``, ``eos_abs``, and for the absorbing
    modes the tail: ``tail`` (bool, the absorbing slots with a target), ``r_abs = Q − γ V`` and ``tail_w = w / (1 − γ)``
    (``Σ_{j≥K} γ^j = γ^K / (1 − γ)``); ``tail`` / ``r_abs`` / ``tail_w`` are None for ``eos="done"``. All ``(B, T)``.
    """
    dev, dt = V.device, V.dtype
    labels, valid, eos_abs = batch["labels"].to(dev), batch["valid"].to(dev), batch["eos_abs"].to(dev)
    if eos == "absorbing_eos":  # the absorbing state's only action is <eos>: V(u_K) = Q(u_K, <eos>)
        V = torch.where(eos_abs & (labels != IGNORE), Q, V)
    V_next = torch.cat([V[:, 1:], torch.zeros_like(V[:, :1])], dim=1)  # (B, T): V(s_{t+1}) sits at slot t+1
    w = torch.exp(batch["step"].to(dev, dt) * math.log(gamma))  # (B, T): occupancy weight γ^i
    if eos == "done":  # IQ-Learn: y = (1 − done) γ V(s'); the transition into the <eos> state is terminal
        done = torch.cat([eos_abs[:, 1:], torch.zeros_like(eos_abs[:, :1])], dim=1)
        V_next = V_next.masked_fill(done, 0.0)
    out = {"V": V, "V_next": V_next, "w": w, "has_r": valid & (labels != IGNORE), "r": Q - gamma * V_next,
           "valid": valid, "eos_abs": eos_abs, "tail": None, "r_abs": None, "tail_w": None}
    if eos in ("absorbing", "absorbing_eos"):  # <eos> in u_K leads back to u_K
        out.update(tail=eos_abs & (labels != IGNORE), r_abs=Q - gamma * V, tail_w=w / (1.0 - gamma))
    return out


def sequencematch_terms_from_qv(
    V: Tensor,
    Q: Tensor,
    batch: dict[str, Tensor],
    *,
    divergence: str = "chi2_mix",
    gamma: float = 0.998,
    eos: str = "absorbing",
    max_phi_slope: float = 10.0,
    chi2_weight: float = 0.01,
) -> dict[str, Tensor]:
    """:func:`sequencematch_terms` given ``V (B, T)`` and ``Q (B, T)``: the arithmetic shared by the full-logits
    and the chunked (hidden-state) losses.

    Returns the same dict (``phi``, ``r2``, ``value`` per sequence ``(B,)``; ``r``, ``V``, ``has_r`` ``(B, T)``).
    """
    dt = V.dtype
    t = _transitions(V, Q, batch, gamma=gamma, eos=eos)
    V, V_next, w, has_r, r, valid = t["V"], t["V_next"], t["w"], t["has_r"], t["r"], t["valid"]
    mask = has_r.to(dt)
    phi_sum = (mask * w * phi(divergence, torch.where(has_r, r, 0.0), max_phi_slope, chi2_weight)).sum(1)
    r_weight = w  # occupancy weight of each slot's r (the per-slot gradient scale); γ^K/(1 − γ) at the tail
    r2_sum = (mask * w * r**2).sum(1)
    value_sum = (valid.to(dt) * w * (V - gamma * V_next)).sum(1)  # telescopes over time steps
    eos_abs = t["eos_abs"]
    if t["tail"] is not None:  # closed-form tail at u_K: Σ_{j≥K} γ^j x = γ^K x / (1 − γ)
        a, r_abs, tail_w = t["tail"], t["r_abs"], t["tail_w"]
        am = a.to(dt)
        phi_sum = phi_sum + (am * tail_w * phi(divergence, torch.where(a, r_abs, 0.0), max_phi_slope,
                                               chi2_weight)).sum(1)
        r2_sum = r2_sum + (am * tail_w * r_abs**2).sum(1)
        value_sum = value_sum + (eos_abs.to(dt) * w * V).sum(1)
        r = torch.where(a, r_abs, r)
        has_r = has_r | a
        r_weight = torch.where(a, tail_w, w)
    return {"phi": phi_sum, "r2": r2_sum, "value": value_sum, "r": r.detach(), "V": V.detach(), "has_r": has_r,
            "r_weight": (r_weight * has_r.to(dt)).detach(), "complete": eos_abs.any(1)}


def _check_weights(model_reg: float | None, model_mix: float, chi2_weight: float = 0.01) -> float:
    """Validates the weights; returns the model-side ``r²`` weight (``model_reg``, default ``chi2_weight``)."""
    if not 0.0 <= float(model_mix) <= 1.0:
        raise ValueError(f"model_mix must be in [0, 1], got {model_mix}; 0.5 is IQ-Learn's 50/50 mixture")
    if not float(chi2_weight) >= 0.0:
        raise ValueError(f"chi2_weight must be >= 0, got {chi2_weight}; 0.01 is the default (the paper's α), "
                         "0.25 the literal φ(x) = x − x²/4")
    if model_reg is None:
        return float(chi2_weight)
    if not float(model_reg) >= 0.0:
        raise ValueError(f"model_reg must be >= 0, got {model_reg}; leave it None to use chi2_weight on both sides")
    return float(model_reg)


def _side_weights(is_data: Tensor, complete: Tensor, *, model_mix: float, num_sequences=None,
                 sequence_weights: Tensor | None = None, value_on_truncated: bool = False,
                 dtype: torch.dtype = torch.float32) -> tuple:
    """Row weights and normalisers of the data side, the model side and the value term's model side.

    Returns ``(d, m, mv, n_d, n_m, n_mv, lam)``: ``(B,)`` weights of data rows, model rows and the model rows in the
    value term (complete ones only unless ``value_on_truncated``), their totals (or ``num_sequences``), and the
    value term's model weight ``λ`` (``model_mix``, or the one side that exists).
    """
    is_data = is_data.to(complete.device)
    d, m = is_data.to(dtype), (~is_data).to(dtype)  # (B,)
    # model rows in the value term: the telescoping identity E_ρ[V − γV'] = (1 − γ)E[V(s_0)] needs complete
    # trajectories; a rollout cut at max_new_actions would add −γ^K V(s_K), a reward for high V wherever it was cut
    mv = m if value_on_truncated else m * complete.to(dtype)
    if sequence_weights is not None:  # importance weights per row: Ê is a weighted mean within each side
        sw = sequence_weights.to(d.device, dtype)
        if tuple(sw.shape) != tuple(d.shape) or bool((sw < 0).any()):
            raise ValueError(f"sequence_weights must be (B,) = {tuple(d.shape)} and >= 0, got shape "
                             f"{tuple(sw.shape)}; one non-negative weight per row")
        d, m, mv = d * sw, m * sw, mv * sw
    if num_sequences is None:
        n_d, n_m, n_mv = float(d.sum()), float(m.sum()), float(mv.sum())
    else:
        n_d, n_m = float(num_sequences[0]), float(num_sequences[1])
        n_mv = float(num_sequences[2]) if len(num_sequences) > 2 else (n_m if value_on_truncated else float(mv.sum()))
    lam = model_mix if n_d > 0 and n_mv > 0 else (1.0 if n_mv > 0 else 0.0)
    return d, m, mv, n_d, n_m, n_mv, lam


def _combine(terms: dict[str, Tensor], is_data: Tensor, divergence: str, gamma: float, model_reg: float,
             model_mix: float, occupancy_normalize: bool, num_sequences,
             sequence_weights: Tensor | None = None,
             value_on_truncated: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    # the signed, weighted average of the per-sequence terms (value term on whichever side exists)
    d, m, mv, n_d, n_m, n_mv, lam = _side_weights(is_data, terms["complete"], model_mix=model_mix,
                                                 num_sequences=num_sequences, sequence_weights=sequence_weights,
                                                 value_on_truncated=value_on_truncated, dtype=terms["phi"].dtype)
    zero = terms["phi"].sum() * 0.0
    loss_data = -(d * terms["phi"]).sum() / n_d if n_d > 0 else zero  # −Ê_D[φ(r)]
    loss_model = model_reg * (m * terms["r2"]).sum() / n_m if divergence == "chi2_mix" and n_m > 0 else zero
    loss_value = zero
    if n_d > 0:
        loss_value = loss_value + (1.0 - lam) * (d * terms["value"]).sum() / n_d
    if n_mv > 0:
        loss_value = loss_value + lam * (mv * terms["value"]).sum() / n_mv
    scale = (1.0 - gamma) if occupancy_normalize else 1.0
    parts = {"loss_data": scale * loss_data.detach(), "loss_model": scale * loss_model.detach(),
             "loss_value": scale * loss_value.detach()}
    return scale * (loss_data + loss_model + loss_value), parts


def sequencematch_loss(
    logits: Tensor,
    batch: dict[str, Tensor],
    divergence: str = "chi2_mix",
    gamma: float = 0.998,
    eos: str = "absorbing",
    *,
    chi2_weight: float = 0.01,
    model_reg: float | None = None,
    model_mix: float = 0.5,
    occupancy_normalize: bool = True,
    max_phi_slope: float = 10.0,
    num_sequences: tuple[int, ...] | None = None,
    sequence_weights: Tensor | None = None,
    value_on_truncated: bool = False,
    return_terms: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """SequenceMatch loss to minimise (§3.4, §3.7): data and model trajectories in one batch.

    ``L = −Ê_D[Σ γ^i φ(r_i)] + c_M·Ê_M[Σ γ^i r_i²] + (1−λ)·Ê_D[value] + λ·Ê_M[value]``, times ``(1 − γ)``,
    where ``Ê_D``/``Ê_M`` average per-sequence sums over data/model rows, ``λ = model_mix``, ``φ(r) = r − c·r²``
    for the χ² divergences (``c = chi2_weight``), ``c_M = model_reg`` (default ``c``), and the model-side ``r²``
    term is present for ``chi2_mix`` only.

    Args:
        logits: ``(B, T, A)`` logits of ``model(**model_inputs(batch))``, any float dtype (computed in fp32).
        batch: a :func:`seqlevel.backspace.collate` batch (``labels``, ``valid``, ``step``, ``eos_abs``, ``is_data``).
        divergence: ``chi2_mix`` (default), ``chi2``, ``kl``, ``reverse_kl``, ``js``, ``hellinger`` or ``tv``.
            Names follow the f-divergence convention of §3.3 (RECON; unchecked against the PDF): ``kl`` is
            KL(ρ_data ‖ ρ_θ) with φ = 1 + log r, ``reverse_kl`` is KL(ρ_θ ‖ ρ_data) with φ = −e^{−(r+1)}
            (IQ-Learn calls this one "kl").
        gamma: discount in (0, 1); the paper used 0.998.
        eos: ``"absorbing"`` (closed-form tail), ``"absorbing_eos"`` (the same with ``V(u_K) = Q(u_K, <eos>)``: the
            absorbing state's only action is ``<eos>``; see the module docstring) or ``"done"`` (IQ-Learn
            done-masking).
        chi2_weight: ``c``, the weight of the χ² terms on both sides (RECON, see the module docstring): 0.01,
            our reading of the paper's "α = 0.01"; ¼ is the literal LS-IQ/paper φ. IQ-Learn's entropy temperature
            α_T (``V = α_T·logsumexp(Q/α_T)``) is not a separate knob: at α_T the loss is α_T times this loss at
            ``c = α_T/4`` on rescaled logits, i.e. the same optimum as ``c = α_T/4`` with a smaller gradient.
        model_reg: weight of the model-side ``r²`` term for ``chi2_mix``; None (default) uses ``chi2_weight``.
        model_mix: weight of model trajectories in the value term (RECON; ½).
        occupancy_normalize: multiply by ``(1 − γ)`` (an expectation under the normalised occupancy).
        max_phi_slope: tangent continuation of φ for ``kl``/``js``/``hellinger`` (RECON).
        num_sequences: ``(n_data, n_model[, n_model_complete])`` in the whole optimizer step, for exact gradient
            accumulation (the analogue of ``num_items_in_batch``); ``n_model_complete`` counts the model rows that
            ended in ``<eos>`` (the value term's model side). Default: the counts (or summed ``sequence_weights``)
            in this batch.
        sequence_weights: optional ``(B,)`` non-negative weight per row (e.g. exact trajectory probabilities,
            importance weights): each side's average becomes a weighted average. None: every row counts 1.
        value_on_truncated: also put model rows that never reached ``<eos>`` (cut at the rollout cap) in the value
            term. Default False (RECON): the value term telescopes to ``(1 − γ)E[V(s_0)]`` only over complete
            trajectories; a truncated row adds ``−γ^K V(s_K)``, which rewards high V wherever the rollout was cut
            (in the tabular instrument at horizon 5 it moved π(<bksp>) at off-data states from 0.97 to 0.29; at
            horizon 4 it made no difference). Truncated rows keep their ``r²`` terms.
        return_terms: also return the per-sequence terms and diagnostics.

    Returns:
        A scalar loss (and the terms of :func:`sequencematch_terms` plus ``loss_data``/``loss_model``/
        ``loss_value`` when ``return_terms``).
    """
    model_reg = _check_weights(model_reg, model_mix, chi2_weight)
    terms = sequencematch_terms(logits, batch, divergence=divergence, gamma=gamma, eos=eos,
                                max_phi_slope=max_phi_slope, chi2_weight=chi2_weight)
    loss, parts = _combine(terms, batch["is_data"], divergence, gamma, model_reg, model_mix, occupancy_normalize,
                           num_sequences, sequence_weights, value_on_truncated)
    return (loss, {**terms, **parts}) if return_terms else loss


def bc_loss(
    logits: Tensor,
    batch: dict[str, Tensor],
    *,
    data_only: bool = True,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Behaviour cloning: plain MLE over the actions (``<bksp>`` included) of the same encoding (§3.6, §5).

    Args:
        logits: ``(B, T, A)`` logits of ``model(**model_inputs(batch))``.
        batch: a :func:`seqlevel.backspace.collate` batch; ``labels`` where ``valid`` are the targets.
        data_only: count data trajectories only (default; BC never imitates the model's own samples).
        num_items_in_batch: number of targets in the whole optimizer step (gradient accumulation).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        Scalar fp32 loss (mean over targets), as :func:`seqlevel.losses.mle_loss`.
    """
    labels = batch["labels"].to(logits.device)
    if tuple(labels.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"logits cover {tuple(logits.shape[:2])} (B, T) slots but the batch has "
                         f"{tuple(labels.shape)}; run the model on model_inputs(batch) without shifting")
    keep = batch["valid"].to(logits.device)
    if data_only:
        keep = keep & batch["is_data"].to(keep.device).unsqueeze(1)
    targets = labels.masked_fill(~keep, IGNORE)  # the absorbing slot and padding are not BC targets
    return mle_loss(logits, targets, num_items_in_batch=num_items_in_batch, reduction=reduction)
