"""A tabular instrument for the SequenceMatch objective: tree MDPs with exact occupancies and a free logit row per
state, optimised to convergence on the library's own :func:`seqlevel.losses.sequencematch_loss`.

The world (``n_tokens`` ordinary tokens, then ``<eos>``, ``<bksp>`` and a ``<bos>`` prompt):

* the expert emits strings of at most ``max_len`` tokens from a fixed random tree policy. Token ``n_tokens − 1``
  (the *noise token*) is never emitted, and token ``n_tokens − 2`` is forbidden after token 0; so the states
  ``s ⊕ noise`` and ``s ⊕ forbidden`` are states the expert never visits;
* data trajectories are expert strings, optionally with environment noise (§4.2 option A): before each data
  action, with probability ``p_noise``, the noise token is inserted and then deleted by ``<bksp>``. Every noise
  pattern is enumerated with its exact probability, so noise lands only on non-expert states;
* model trajectories are *every* action sequence of at most ``horizon`` actions (tokens, ``<eos>``, ``<bksp>``),
  weighted by their exact probability under the current policy: the exact model occupancy;
* the policy is a free ``(n_states, A)`` logit table, one row per string (and one per absorbing post-``<eos>``
  state), so the model can represent the expert exactly and the optimum is the objective's, not a network's.

:func:`solve` minimises ``(1 − w)·BC + w·SM`` by fixed-point iteration: the model-side weights are the current
policy's (detached, as a replay buffer is), L-BFGS minimises over the table, and the two alternate until the
policy stops moving. :func:`report` gives the optimum's distance from the expert: occupancy-weighted policy TV
and entropy on expert states, KL(expert ‖ model) of the final strings after backspaces, and the probability of
``<bksp>`` at states only the model visits (one forbidden or noise token past an expert state).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from seqlevel.backspace.actions import apply_actions
from seqlevel.backspace.encoding import collate, encode
from seqlevel.backspace.noise import ActionList
from seqlevel.losses.sequencematch import sequencematch_loss

Tensor = torch.Tensor


@dataclass
class TabularWorld:
    """A small tree MDP over strings; see the module docstring.

    Attributes:
        n_tokens: ordinary tokens ``0 .. n_tokens − 1`` (at least 3: the last is the noise token, the one before
            it is forbidden after token 0).
        max_len: longest expert string (tokens, ``<eos>`` not counted).
        horizon: longest model trajectory in actions; longer rollouts are truncated (no final string).
        p_noise: environment-noise probability per data action (0: clean data).
        model_slip: probability that a model rollout, in a state ending with token 0, emits the forbidden token
            whatever its policy says (a fixed error the model cannot remove, as a finite network makes). It gives
            the states only the model visits a positive model occupancy at the optimum, so the objective decides
            the policy there; with 0 the optimum stops visiting them and their rows are left undetermined.
        seed: seed of the expert's random tree policy.
    """

    n_tokens: int = 3
    max_len: int = 2
    horizon: int = 5
    p_noise: float = 0.0
    model_slip: float = 0.0
    seed: int = 0
    expert: dict = field(init=False)

    def __post_init__(self):
        if self.n_tokens < 3:
            raise ValueError(f"n_tokens must be >= 3 (a noise token and a forbidden token), got {self.n_tokens}")
        if self.horizon < self.max_len + 1:
            raise ValueError(f"horizon={self.horizon} cannot finish an expert string of max_len={self.max_len} "
                             f"(+ <eos>); use horizon >= {self.max_len + 1}")
        rng = np.random.default_rng(self.seed)
        self.expert = {}
        for n in range(self.max_len + 1):
            for s in itertools.product(range(self.n_tokens), repeat=n):
                if self.noise in s or any(s[i] == 0 and s[i + 1] == self.forbidden for i in range(len(s) - 1)):
                    continue  # not an expert state
                p = np.zeros(self.n_tokens + 1)
                if n == self.max_len:
                    p[self.eos] = 1.0
                else:
                    allowed = [t for t in range(self.n_tokens) if t != self.noise
                               and not (s and s[-1] == 0 and t == self.forbidden)] + [self.eos]
                    p[allowed] = rng.dirichlet(np.ones(len(allowed)))
                self.expert[s] = p

    # ids
    @property
    def eos(self) -> int:
        return self.n_tokens

    @property
    def bksp(self) -> int:
        return self.n_tokens + 1

    @property
    def bos(self) -> int:
        return self.n_tokens + 2

    @property
    def n_actions(self) -> int:
        return self.n_tokens + 2

    @property
    def noise(self) -> int:
        return self.n_tokens - 1

    @property
    def forbidden(self) -> int:
        return self.n_tokens - 2

    def expert_strings(self) -> dict[tuple, float]:
        """Every complete expert string with its exact probability."""
        out, frontier = {}, [((), 1.0)]
        while frontier:
            s, p = frontier.pop()
            for a, q in enumerate(self.expert[s]):
                if q <= 0:
                    continue
                if a == self.eos:
                    out[s] = out.get(s, 0.0) + p * q
                else:
                    frontier.append((s + (a,), p * q))
        return out


@dataclass
class _Enumerated:
    batch: dict  # collate() fields of every data and model trajectory
    slot_state: Tensor  # (B, T) long: table row of the state held at each slot (0 on padding)
    action: Tensor  # (B, T) long: the action actually taken at each slot (-1 where none)
    data_prob: Tensor  # (n_data,) exact probability of each data trajectory
    finals: list  # final string of each model trajectory (None when truncated)
    states: list  # table row -> state key (a string tuple, or ("abs",) + string)


def _enumerate(world: TabularWorld) -> _Enumerated:
    index: dict[tuple, int] = {}

    def row(key):
        if key not in index:
            index[key] = len(index)
        return index[key]

    for n in range(world.horizon + 1):  # every string a rollout can reach, then the absorbing copies
        for s in itertools.product(range(world.n_tokens), repeat=n):
            row(s)
    for n in range(world.horizon + 1):
        for s in itertools.product(range(world.n_tokens), repeat=n):
            row(("abs",) + s)

    def walk(actions):  # table rows of the state before each action, then of the state after the last one
        live, rows = [], [row(())]
        for a in actions:
            if a == world.eos:
                rows.append(row(("abs",) + tuple(live)))
                continue
            if a == world.bksp:
                if live:
                    live.pop()
            else:
                live.append(a)
            rows.append(row(tuple(live)))
        return rows

    encs, slot_rows, taken, data_prob, finals = [], [], [], [], []
    for s, p in world.expert_strings().items():  # data: every noise pattern of every expert string
        xs = list(s) + [world.eos]
        for pattern in itertools.product([False, True], repeat=len(xs) if world.p_noise > 0 else 0):
            actions, targets = [], []
            q = p
            for x, noisy in zip(xs, pattern or [False] * len(xs)):
                q *= world.p_noise if noisy else (1.0 - world.p_noise)
                if noisy:  # option A: the expert aims at x, the environment appends the noise token
                    actions += [world.noise, world.bksp]
                    targets += [x, world.bksp]
                actions.append(x)
                targets.append(x)
            encs.append(encode([world.bos], ActionList(actions, targets), world.bksp, eos_id=world.eos))
            slot_rows.append(walk(actions))
            taken.append(actions)
            data_prob.append(q)

    def rollouts(prefix):
        if len(prefix) == world.horizon:
            yield prefix
            return
        for a in range(world.n_actions):
            if a == world.eos:
                yield prefix + [a]
            else:
                yield from rollouts(prefix + [a])

    for acts in rollouts([]):
        encs.append(encode([world.bos], acts, world.bksp, eos_id=world.eos, is_data=False))
        slot_rows.append(walk(acts))
        taken.append(acts)
        finals.append(tuple(apply_actions([], acts[:-1], world.bksp)) if acts and acts[-1] == world.eos else None)
    batch = collate(encs, pad_id=world.bos, dtype=torch.float64)
    B, T = batch["labels"].shape
    slot_state = torch.zeros(B, T, dtype=torch.long)
    action = torch.full((B, T), -1, dtype=torch.long)
    for b, (rows, acts) in enumerate(zip(slot_rows, taken)):
        slot_state[b, : len(rows)] = torch.tensor(rows)  # slot 0 is the prompt = state (), slot k the state after k
        action[b, : len(acts)] = torch.tensor(acts)
    keys = [None] * len(index)
    for k, i in index.items():
        keys[i] = k
    return _Enumerated(batch, slot_state, action, torch.tensor(data_prob, dtype=torch.float64), finals, keys)


def _model_prob(table: Tensor, en: _Enumerated, world: TabularWorld) -> Tensor:
    """Exact probability of each enumerated model trajectory under softmax(table) (with the world's model slips);
    ``(n_model,)``."""
    pol = torch.softmax(table, -1)
    if world.model_slip > 0:
        slip = torch.tensor([bool(k) and k[-1] == 0 for k in en.states], dtype=pol.dtype)[:, None]  # (S, 1)
        onehot = torch.zeros_like(pol)
        onehot[:, world.forbidden] = 1.0
        pol = pol * (1 - world.model_slip * slip) + world.model_slip * slip * onehot
    logp = torch.log(pol.clamp_min(1e-300))[en.slot_state]  # (B, T, A)
    taken = en.action.clamp(min=0)
    lp = logp.gather(-1, taken.unsqueeze(-1)).squeeze(-1) * (en.action >= 0)
    return lp[~en.batch["is_data"]].sum(1).exp()


def objective(table: Tensor, en: _Enumerated, model_prob: Tensor, *, sm_weight: float, sm_kwargs: dict) -> Tensor:
    """``(1 − w)·BC + w·SM`` in exact expectation: BC is the token-level NLL of the data actions (expected over the
    data trajectories, normalised by the expected number of targets), SM the library's loss with
    ``sequence_weights`` = the exact trajectory probabilities (model side: ``model_prob``, held fixed)."""
    b = en.batch
    logits = table[en.slot_state]  # (B, T, A)
    w_seq = torch.cat([en.data_prob, model_prob])
    loss = table.new_zeros(())
    if sm_weight < 1:
        logp = torch.log_softmax(logits, -1)
        keep = b["valid"] & b["is_data"][:, None] & (b["labels"] >= 0)
        nll = -logp.gather(-1, b["labels"].clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
        wd = w_seq[: len(en.data_prob), None]
        loss = loss + (1 - sm_weight) * (nll[b["is_data"]] * wd).sum() / (keep[b["is_data"]] * wd).sum()
    if sm_weight > 0:
        loss = loss + sm_weight * sequencematch_loss(logits, b, sequence_weights=w_seq, **sm_kwargs)
    return loss


def solve(world: TabularWorld, *, sm_weight: float = 0.5, outer: int = 30, inner: int = 100, tol: float = 1e-6,
          init: Tensor | None = None, **sm_kwargs) -> tuple[Tensor, _Enumerated]:
    """The optimum of ``(1 − w)·BC + w·SM`` over the logit table, by fixed-point iteration (see module docstring).

    Args:
        world: the tabular world.
        sm_weight: ``w``; 0 is BC alone.
        outer: most fixed-point rounds (model weights recomputed each round).
        inner: L-BFGS iterations per round.
        tol: stop when the model trajectory probabilities move by less than this (max abs) between rounds.
        init: ``(n_states, A)`` starting table; default zeros (the uniform policy).
        **sm_kwargs: passed to :func:`seqlevel.losses.sequencematch_loss` (``gamma``, ``chi2_weight``, ``eos``...).

    Returns:
        ``(table, enumeration)``.
    """
    en = _enumerate(world)
    table = (torch.zeros(len(en.states), world.n_actions, dtype=torch.float64) if init is None
             else init.clone().double()).requires_grad_(True)
    prev = None
    for _ in range(outer):
        with torch.no_grad():
            mp = _model_prob(table, en, world)
        if prev is not None and float((mp - prev).abs().max()) < tol:
            break
        prev = mp
        opt = torch.optim.LBFGS([table], lr=1.0, max_iter=inner, tolerance_grad=1e-12, tolerance_change=1e-14,
                                line_search_fn="strong_wolfe")

        def closure(opt=opt, mp=mp):
            opt.zero_grad()
            loss = objective(table, en, mp, sm_weight=sm_weight, sm_kwargs=sm_kwargs)
            loss.backward()
            return loss

        opt.step(closure)
    return table.detach(), en


def report(world: TabularWorld, table: Tensor, en: _Enumerated) -> dict[str, float]:
    """Distances of a solved table from the expert.

    Returns:
        ``tv``: expert-occupancy-weighted policy TV on expert states (``<bksp>`` counts as mass off the expert);
        ``tv_max``: the largest TV over expert states with expert occupancy ≥ 1e-3;
        ``entropy`` / ``expert_entropy``: occupancy-weighted policy entropy (nats) on expert states;
        ``final_kl``: KL(expert ‖ model) of the final strings after backspaces (truncated rollouts have no string);
        ``bksp_clean``: occupancy-weighted ``π(<bksp>)`` at expert states;
        ``bksp_offdata``: model-occupancy-weighted ``π(<bksp>)`` at states one forbidden or noise token past an
        expert state (states only the model visits, or reached only through noise);
        ``bksp_offdata_model_only``: the same over the forbidden-token states alone (never reached by noise): the
        "uncovered" errors of issue 21; ``bksp_offdata_noise``: the same over the noise-token states (the errors the
        noise shows: "covered").
    """
    with torch.no_grad():
        pol = torch.softmax(table, -1).numpy()
        mp = _model_prob(table, en, world).numpy()
    row = {k: i for i, k in enumerate(en.states)}
    occ, frontier = {}, [((), 1.0)]
    while frontier:  # expert state occupancy (undiscounted visit probability)
        s, p = frontier.pop()
        occ[s] = occ.get(s, 0.0) + p
        for a, q in enumerate(world.expert[s]):
            if q > 0 and a != world.eos:
                frontier.append((s + (a,), p * q))
    tv = ent = ent_e = bk = 0.0
    tv_max = 0.0
    Z = sum(occ.values())
    for s, p in occ.items():
        e = np.append(world.expert[s], 0.0)  # + <bksp>
        m = pol[row[s]]
        d = 0.5 * np.abs(m - e).sum()
        tv += p * d / Z
        if p >= 1e-3:
            tv_max = max(tv_max, d)
        ent += p * float(-(m * np.log(m + 1e-300)).sum()) / Z
        ent_e += p * float(-(e[e > 0] * np.log(e[e > 0])).sum()) / Z
        bk += p * m[world.bksp] / Z
    # model occupancy of off-data states one step past an expert state
    model_occ: dict[int, float] = {}
    is_model = ~en.batch["is_data"]
    st = en.slot_state[is_model].numpy()
    valid = en.batch["valid"][is_model].numpy()
    for b in range(st.shape[0]):
        for t in np.nonzero(valid[b])[0]:
            model_occ[int(st[b, t])] = model_occ.get(int(st[b, t]), 0.0) + float(mp[b])
    off = {"any": [0.0, 0.0], "model_only": [0.0, 0.0], "noise": [0.0, 0.0]}
    for s in occ:
        for tok in (world.noise, world.forbidden):
            child = s + (tok,)
            if child in world.expert or len(child) > world.horizon or child not in row:
                continue
            o = model_occ.get(row[child], 0.0)
            p_b = pol[row[child]][world.bksp]
            off["any"][0] += o * p_b
            off["any"][1] += o
            key = "model_only" if tok == world.forbidden else "noise"
            off[key][0] += o * p_b
            off[key][1] += o
    strings = world.expert_strings()
    pm: dict[tuple, float] = {}
    for f, p in zip(en.finals, mp):
        if f is not None:
            pm[f] = pm.get(f, 0.0) + float(p)
    kl = sum(p * math.log(p / max(pm.get(s, 0.0), 1e-300)) for s, p in strings.items())
    return {"tv": tv, "tv_max": tv_max, "entropy": ent, "expert_entropy": ent_e, "final_kl": kl, "bksp_clean": bk,
            "bksp_offdata": off["any"][0] / max(off["any"][1], 1e-300),
            "bksp_offdata_model_only": off["model_only"][0] / max(off["model_only"][1], 1e-300),
            "bksp_offdata_noise": off["noise"][0] / max(off["noise"][1], 1e-300)}


SETTINGS = {  # name -> solve() kwargs; the table in docs/results.md
    "bc": dict(sm_weight=0.0),
    "default (c=0.01, γ=0.998, w=0.5)": dict(sm_weight=0.5, chi2_weight=0.01, gamma=0.998),
    "SM alone (w=1)": dict(sm_weight=1.0, chi2_weight=0.01, gamma=0.998),
    "literal c=1/4": dict(sm_weight=0.5, chi2_weight=0.25, gamma=0.998),
    "c=1/4, γ=0.9": dict(sm_weight=0.5, chi2_weight=0.25, gamma=0.9),
    "value term on truncated rollouts": dict(sm_weight=0.5, chi2_weight=0.01, gamma=0.998, value_on_truncated=True),
    "eos=done": dict(sm_weight=0.5, chi2_weight=0.01, gamma=0.998, eos="done"),
    "tv (φ linear)": dict(sm_weight=0.5, divergence="tv", gamma=0.998),
}


def settings_table(horizon: int = 4, settings: dict | None = None, log=print) -> list[dict]:
    """Solve every setting in three worlds (clean; noise 0.2; clean + model slips 0.1; noise + slips) and print
    one Markdown row each: the instrument's table in docs/results.md."""
    rows = []
    worlds = {"clean": dict(), "noise 0.2": dict(p_noise=0.2), "slips 0.1": dict(model_slip=0.1),
              "noise + slips": dict(p_noise=0.2, model_slip=0.1)}
    log("| world | setting | policy TV | TV max | entropy (expert) | final-string KL | π(⌫) clean | "
        "π(⌫) model-only |")
    log("|---|---|---|---|---|---|---|---|")
    for wname, wkw in worlds.items():
        world = TabularWorld(horizon=horizon, **wkw)
        for name, kw in (settings or SETTINGS).items():
            r = report(world, *solve(world, **kw))
            rows.append({"world": wname, "setting": name, **r})
            log(f"| {wname} | {name} | {r['tv']:.4f} | {r['tv_max']:.4f} | {r['entropy']:.3f} "
                f"({r['expert_entropy']:.3f}) | {r['final_kl']:.4f} | {r['bksp_clean']:.3f} | "
                f"{r['bksp_offdata_model_only']:.3f} |")
    return rows
