"""Issue 21, item 0: which SequenceMatch term moves π(<bksp>) after an unseen error, in a network and in the
tabular instrument.

Network: a checkpoint of the markov-backspace world (e.g. BC continued from ``benchmarks/sm_screen.py
--save-models``); data rows are the trainer's own noise-augmented encodings and model rows are rollouts drawn by
the trainer's own ``refresh_buffer``. The step loss ``(1 − w)·BC + w·SM`` is split by
:func:`seqlevel.losses.sequencematch_parts.sequencematch_parts` into pieces per term and per kind of slot; for
each piece the first-order change of a probe quantity under one SGD step on that piece alone is
``−⟨∇θ piece, ∇θ probe⟩`` (per unit learning rate), for the probes: mean log π(⌫) at the deletion probe's
uncovered / covered / valid states, mean ⌫ logit Q(s, ⌫) and V(s) at the uncovered states, and V of their parents.

Tabular: the same pieces in the "noise + slips" world of :mod:`seqlevel.tasks.tabular` at its BC optimum (slips
are errors the noise never shows), with exact occupancies; the probe is the model-occupancy-weighted log π(⌫) at
the slip states, the noise states and the expert states, and the change is the same inner product over the table.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sm_term_gradients.py --model DIR --seed 0 --coverage 0.5
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace

import numpy as np
import torch

KINDS = ("makes_unseen_error", "makes_covered_error", "bksp_after_unseen", "bksp_after_covered", "bksp_clean",
         "token_after_error", "token_clean", "tail")


def _walk_kinds(prompt, actions, labels_len, is_err, bk, eos, prompt_slots) -> list[int]:
    """Kind of each slot of one encoded trajectory (index into KINDS); -1 where no transition."""
    kinds = [-1] * labels_len
    live = list(prompt)
    for k, a in enumerate(actions):
        i = prompt_slots - 1 + k
        last_err = is_err(live[-2], live[-1]) if len(live) >= 2 else 0
        if a == bk:
            kinds[i] = KINDS.index({2: "bksp_after_unseen", 1: "bksp_after_covered", 0: "bksp_clean"}[last_err])
            if len(live) > len(prompt):
                live.pop()
            continue
        made = is_err(live[-1], a) if a != eos else 0
        if made:
            kinds[i] = KINDS.index("makes_unseen_error" if made == 2 else "makes_covered_error")
        else:
            kinds[i] = KINDS.index("token_after_error" if last_err else "token_clean")
        live.append(a)
    if actions and actions[-1] == eos:
        kinds[prompt_slots + len(actions) - 1] = KINDS.index("tail")
    return kinds


def _flat_grad(scalar, params, retain=True):
    gs = torch.autograd.grad(scalar, params, retain_graph=retain, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(gs, params)])


def network(args) -> dict:
    from transformers import AutoModelForCausalLM

    from seqlevel.backspace import collate, model_inputs
    from seqlevel.bench import markov_backspace as mb
    from seqlevel.losses.sequencematch_parts import sequencematch_parts
    from seqlevel.metrics.lm import right_pad
    from seqlevel.tasks.markov_backspace import forbidden_noise, forbidden_pairs, probe_states, to_markov_id
    from seqlevel.trainers import SequenceMatchConfig, SequenceMatchTrainer

    torch.manual_seed(0)
    cfg = replace(mb.Config(), noise_coverage=args.coverage)
    w = mb.world(cfg, args.seed)
    p, tok, covered = w["p"], w["tok"], w["covered"]
    eos = int(tok.eos_token_id)
    forb = forbidden_pairs(p)

    def is_err(t_id, u_id):  # 2: unseen (uncovered) error, 1: covered error, 0: valid
        t, u = to_markov_id(p, t_id, eos), to_markov_id(p, u_id, eos)
        if t == 0 or u == 0 or u == p.eos or not forb[t - 1, u - 1]:
            return 0
        return 1 if covered[t - 1, u - 1] else 2

    model = AutoModelForCausalLM.from_pretrained(args.model)
    sm = dict(divergence=args.divergence, gamma=cfg.gamma, eos_handling=args.eos, chi2_weight=args.c,
              occupancy_normalize=not args.no_normalize)
    with tempfile.TemporaryDirectory() as tmp:
        targs = SequenceMatchConfig(output_dir=tmp, report_to="none", use_cpu=True, seed=args.seed, max_steps=1,
                                    per_device_train_batch_size=32, p_noise=cfg.p_noise, noise_type="task",
                                    bc_warmup_steps=0, sm_weight=args.w, rollouts_per_refresh=args.rollouts,
                                    replay_buffer_size=args.rollouts, max_new_actions=cfg.max_new_actions,
                                    max_length=cfg.max_tokens + 1, rollout_temperature=args.temperature, **sm)
        tr = SequenceMatchTrainer(model=model, args=targs, train_dataset=w["ds"], processing_class=tok,
                                  noise_fn=forbidden_noise(p, eos, covered))
        tr.refresh_buffer(1)
    model = tr.model
    bk = tr.backspace_id
    rng = np.random.default_rng([args.seed, 5])
    data = [tr.data_encoded[int(i)] for i in rng.choice(len(tr.data_encoded), args.n_data, replace=False)]
    rolls = list(tr.replay.items)
    model_enc = [tr._encoded_rollout(r) for r in rolls]
    encs = data + model_enc
    n_d, n_m = len(data), len(model_enc)
    n_mc = sum(bool(e.eos_abs.any()) for e in model_enc)
    n_bc = sum(int((e.valid & (e.labels != -100)).sum()) for e in data)
    params = [q for q in model.parameters() if q.requires_grad]
    model.eval()  # no dropout in these models anyway; the probe reads eval-mode logits

    # probe gradients
    states = probe_states(p, w["dev"], tok, covered, cfg.max_tokens, args.probe_prefixes, seed=0)
    probes = {}
    pad = int(tok.pad_token_id)

    def last_logits(seqs):
        ids, att = right_pad(seqs, pad)
        return model(input_ids=ids, attention_mask=att).logits.float()[torch.arange(len(seqs)), att.sum(1) - 1]

    for g in ("uncovered", "covered", "valid"):
        lg = last_logits(states[g])
        probes[f"logpi_bksp_{g}"] = _flat_grad((lg[:, bk] - torch.logsumexp(lg, -1)).mean(), params, retain=False)
    lg = last_logits(states["uncovered"])
    probes["Q_bksp_uncovered"] = _flat_grad(lg[:, bk].mean(), params)
    probes["V_uncovered"] = _flat_grad(torch.logsumexp(lg, -1).mean(), params, retain=False)
    lg = last_logits([s[:-1] for s in states["uncovered"]])
    u = torch.tensor([s[-1] for s in states["uncovered"]])
    probes["V_parent"] = _flat_grad(torch.logsumexp(lg, -1).mean(), params)
    probes["logpi_make_unseen_error"] = _flat_grad(
        (lg.gather(1, u[:, None]).squeeze(1) - torch.logsumexp(lg, -1)).mean(), params, retain=False)

    # per-piece gradients, accumulated over chunks
    grads: dict[str, torch.Tensor] = {}
    counts = {k: 0 for k in KINDS}
    for i in range(0, len(encs), args.chunk):
        chunk = encs[i: i + args.chunk]
        batch = collate(chunk, tr.pad_id)
        kinds = torch.full(batch["labels"].shape, -1, dtype=torch.long)
        for b, e in enumerate(chunk):
            ks = _walk_kinds(e.input_ids[: e.prompt_len].tolist(), e.actions.tolist(), len(e), is_err, bk, eos,
                             e.prompt_len)
            kinds[b, : len(ks)] = torch.tensor(ks)
            if not e.is_data:
                for k in ks:
                    if k >= 0:
                        counts[KINDS[k]] += 1
        logits = model(**model_inputs(batch)).logits
        parts = sequencematch_parts(logits, batch, kinds, KINDS, sm_weight=args.w, divergence=args.divergence,
                                    gamma=cfg.gamma, eos=args.eos, chi2_weight=args.c,
                                    occupancy_normalize=not args.no_normalize, num_sequences=(n_d, n_m, n_mc),
                                    num_bc_targets=n_bc)
        names = list(parts)
        for j, name in enumerate(names):
            if parts[name].requires_grad:
                gflat = _flat_grad(parts[name], params, retain=j < len(names) - 1)
                grads[name] = grads.get(name, 0) + gflat
    table = {name: {pk: float(-(g @ pg)) for pk, pg in probes.items()} for name, g in grads.items()}
    total = sum(grads.values())
    table["TOTAL"] = {pk: float(-(total @ pg)) for pk, pg in probes.items()}
    return {"table": table, "model_slot_counts": counts, "n_data": n_d, "n_model": n_m, "n_model_complete": n_mc,
            "settings": {**sm, "w": args.w, "temperature": args.temperature, "model": args.model}}


def tabular(args) -> dict:
    """The same pieces in the tabular instrument's "noise + slips" world at its BC optimum (exact occupancies)."""
    from seqlevel.losses.sequencematch_parts import sequencematch_parts
    from seqlevel.tasks import tabular as tb

    world = tb.TabularWorld(horizon=4, p_noise=0.2, model_slip=0.1)
    table0, en = tb.solve(world, sm_weight=0.0)
    table = table0.clone().requires_grad_(True)
    b = en.batch
    keys = en.states

    def is_err(t, u):  # tabular: the noise token = covered, forbidden-after-0 (the slip) = unseen
        if u == world.noise:
            return 1
        return 2 if t == 0 and u == world.forbidden else 0

    kinds = torch.full(b["labels"].shape, -1, dtype=torch.long)
    for r in range(b["labels"].shape[0]):
        acts = [int(a) for a in en.action[r] if a >= 0]
        ks = _walk_kinds([world.bos], acts, b["labels"].shape[1], is_err, world.bksp, world.eos, 1)
        kinds[r] = torch.tensor(ks)
    with torch.no_grad():
        mp = tb._model_prob(table, en, world)
    w_seq = torch.cat([en.data_prob, mp])
    logits = table[en.slot_state]
    parts = sequencematch_parts(logits, b, kinds, KINDS, sm_weight=args.w, divergence=args.divergence,
                                gamma=0.998, eos=args.eos, chi2_weight=args.c,
                                occupancy_normalize=not args.no_normalize, sequence_weights=w_seq)
    # the tabular BC of tasks.tabular.objective is expected over data trajectories; replace the piece with it
    logp = torch.log_softmax(logits, -1)
    keep = b["valid"] & b["is_data"][:, None] & (b["labels"] >= 0)
    nll = -logp.gather(-1, b["labels"].clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
    wd = en.data_prob[:, None]
    parts["bc"] = (1 - args.w) * (nll[b["is_data"]] * wd).sum() / (keep[b["is_data"]] * wd).sum()
    # probes: model-occupancy-weighted log π(⌫) at slip states / noise states, expert-visited states
    occ = torch.zeros(len(keys), dtype=torch.float64)
    st = en.slot_state[~b["is_data"]]
    va = b["valid"][~b["is_data"]]
    for r in range(st.shape[0]):
        for t in torch.nonzero(va[r]).flatten().tolist():
            occ[int(st[r, t])] += float(mp[r])
    groups = {"uncovered": [], "covered": [], "valid": []}
    for i, k in enumerate(keys):
        if not k or k[0] == "abs" or occ[i] <= 0:
            continue
        if len(k) >= 2 and k[-2] == 0 and k[-1] == world.forbidden:
            groups["uncovered"].append(i)
        elif k[-1] == world.noise:
            groups["covered"].append(i)
        elif k in world.expert:
            groups["valid"].append(i)
    probes = {}
    for g, idx in groups.items():
        idx_t = torch.tensor(idx)
        wgt = occ[idx_t] / occ[idx_t].sum()

        def f(tab, idx_t=idx_t, wgt=wgt):
            return (wgt * torch.log_softmax(tab[idx_t], -1)[:, world.bksp]).sum()

        probes[f"logpi_bksp_{g}"] = torch.autograd.grad(f(table), table)[0].reshape(-1)
    idx_t = torch.tensor(groups["uncovered"])
    wgt = occ[idx_t] / occ[idx_t].sum()
    probes["Q_bksp_uncovered"] = torch.autograd.grad((wgt * table[idx_t, world.bksp]).sum(), table)[0].reshape(-1)
    probes["V_uncovered"] = torch.autograd.grad((wgt * torch.logsumexp(table[idx_t], -1)).sum(), table)[0].reshape(-1)
    parent = torch.tensor([keys.index(keys[i][:-1]) for i in groups["uncovered"]])
    probes["V_parent"] = torch.autograd.grad((wgt * torch.logsumexp(table[parent], -1)).sum(), table)[0].reshape(-1)
    probes["logpi_make_unseen_error"] = torch.autograd.grad(
        (wgt * torch.log_softmax(table[parent], -1)[:, world.forbidden]).sum(), table)[0].reshape(-1)
    out = {}
    names = list(parts)
    total = 0
    for name in names:
        if not parts[name].requires_grad:
            continue
        g = torch.autograd.grad(parts[name], table, retain_graph=True)[0].reshape(-1)
        total = total + g
        out[name] = {pk: float(-(g @ pg)) for pk, pg in probes.items()}
    out["TOTAL"] = {pk: float(-(total @ pg)) for pk, pg in probes.items()}
    pol = torch.softmax(table0, -1)
    levels = {"pi_bksp_uncovered": float((wgt * pol[idx_t, world.bksp]).sum()),
              "V_uncovered": float((wgt * torch.logsumexp(table0[idx_t], -1)).sum()),
              "V_parent": float((wgt * torch.logsumexp(table0[parent], -1)).sum())}
    return {"table": out, "levels_at_bc_optimum": levels}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="checkpoint for the network part (omit: tabular only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--coverage", type=float, default=0.5)
    ap.add_argument("--c", type=float, default=0.01)
    ap.add_argument("--w", type=float, default=0.5)
    ap.add_argument("--eos", default="absorbing")
    ap.add_argument("--divergence", default="chi2_mix")
    ap.add_argument("--no-normalize", action="store_true")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--rollouts", type=int, default=1024)
    ap.add_argument("--n-data", type=int, default=1024)
    ap.add_argument("--probe-prefixes", type=int, default=400)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--out", help="write the JSON here too")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    res = {"tabular": tabular(args)}
    if args.model:
        res["network"] = network(args)
    for part in ("tabular", "network"):
        if part not in res:
            continue
        t = res[part]["table"]
        cols = list(next(iter(t.values())))
        print(f"\n{part}: first-order change of each probe per unit SGD learning rate")
        print("| piece | " + " | ".join(cols) + " |")
        print("|---|" + "---|" * len(cols))
        for name, row in t.items():
            print(f"| {name} | " + " | ".join(f"{row[c]:+.3e}" for c in cols) + " |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
