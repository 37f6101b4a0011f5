"""``seqlevel bench key-to-door``: CAT-steered play vs BC, %BC and random on Key-to-Door (DT Table 6, CAT §3.1).

Per seed: 10,000 uniform-random trajectories (:func:`seqlevel.tasks.key_to_door.random_trajectories`); three
models of the same architecture (a small GPT-2 over the trajectory tokens) trained with
:class:`~seqlevel.trainers.AttributeTrainer`:

* **CAT**: ``CE + λ·L_attr (+ μ·L_consistency)`` on all trajectories, win/loss as a binary attribute (λ = 10;
  the NADO one-step consistency term, which the paper's CAT does not have, is off by default); then, by default,
  a fresh wider head is fitted on the frozen trunk's states at the action decisions
  (:mod:`seqlevel.attributes.refit`, ``--head-refit-steps``), because joint training leaves the rare key-room
  decisions underfit; played with the product rule
  ``p(a)·P(win | a)^α`` restricted to the four action tokens, greedily (α large = one-step policy improvement);
* **BC**: ``λ = 0`` (plain next-token CE) on all trajectories (``--bc-epochs``), greedy actions;
* **%BC**: ``λ = 0`` on the successful trajectories only (≈3%), greedy actions;
* **random**: uniform actions.

Diagnostics beside the win rates: greedy play on the exact behaviour-policy action values ``Q^β`` (the ceiling of
CAT's one-step improvement; 1.0 on this layout) and how often the CAT head's best first action is best under
``Q^β`` (``cat_vs_exact_q``). Each policy plays ``--episodes`` fresh episodes (the same start/key layouts for every policy). Sampled (temperature
1) win rates of BC and %BC are reported too, as the DT paper does not say which it used (tasks.md B.3).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from transformers import DynamicCache

from seqlevel.attributes import AttributeModel
from seqlevel.attributes.head import AttributeHead
from seqlevel.attributes.steering import ProductRule
from seqlevel.decoding import StepContext
from seqlevel.tasks import key_to_door as ktd


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="tiny configuration for tests (no acceptance numbers)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training/evaluation seeds (default 0)")
    p.add_argument("--episodes", type=int, default=1000, help="evaluation episodes per policy (default 1000)")
    p.add_argument("--train-size", type=int, default=10_000, help="random trajectories (default 10000)")
    p.add_argument("--epochs", type=float, default=10.0, help="training epochs of CAT (default 10)")
    p.add_argument("--attribute-lambda", type=float, default=10.0, help="λ of the CAT model (default 10)")
    p.add_argument("--alpha", type=float, default=16.0, help="α of the CAT product rule (default 16)")
    p.add_argument("--consistency", type=float, default=0.0,
                   help="weight of the NADO one-step consistency term for CAT (default 0 = the paper's CAT)")
    p.add_argument("--bc-epochs", type=float, default=1.0, help="training epochs for BC (default 1)")
    p.add_argument("--head-refit-steps", type=int, default=8000,
                   help="after joint training, fit a fresh head on cached trunk states of the action decisions "
                        "(seqlevel.attributes.refit; 0 = off, the plain joint CAT; default 8000)")
    p.add_argument("--head-refit-block", type=int, default=256, help="attribute block width of the refit head (256)")
    p.add_argument("--model-dir", default=None, help="also save the CAT model of the first seed here")


def _train(data, seed: int, lam: float, epochs: float, quick: bool, successes_only: bool = False,
           consistency: float = 0.0) -> AttributeModel:
    import datasets
    from transformers import PrinterCallback

    from seqlevel.presets import tiny_model
    from seqlevel.trainers import AttributeConfig, AttributeTrainer
    from seqlevel.trainers.attribute import AttributeCollator

    keep = [i for i in range(len(data.tokens)) if data.success[i] or not successes_only]
    ds = datasets.Dataset.from_dict({"input_ids": [data.tokens[i] for i in keep],
                                     "attribute": [int(data.success[i]) for i in keep]})
    base = tiny_model("tiny-gpt2", vocab_size=ktd.VOCAB_SIZE, n_embd=64, n_layer=2, n_head=4, seed=seed,
                      bos_token_id=ktd.BOS, eos_token_id=ktd.EOS, pad_token_id=ktd.PAD)
    steps = max(int(epochs * len(keep) / 64), 20 if successes_only and not quick else 1)
    cfg = AttributeConfig(output_dir="runs/ktd_tmp", report_to="none", max_steps=steps,
                          per_device_train_batch_size=64, learning_rate=3e-3, lr_scheduler_type="cosine",
                          warmup_steps=min(50, steps // 10), logging_steps=max(steps // 4, 1), save_strategy="no",
                          use_cpu=True, seed=seed, disable_tqdm=True, attribute_kind="binary",
                          attribute_lambda=lam, consistency_weight=consistency, head_rank=16, append_eos=False,
                          max_length=128,
                          # CAT queries start at std 0.5, not 0.02, so the candidate-dependent term is not left at ~0
                          head_query_std=0.5 if lam > 0 else 0.02)
    tr = AttributeTrainer(base, args=cfg, train_dataset=ds,
                          data_collator=AttributeCollator(ktd.PAD, "binary"))
    tr.remove_callback(PrinterCallback)  # stdout carries only the --json result
    tr.train()
    return tr.model.eval()


@torch.no_grad()
def play(model: AttributeModel | None, episodes: int, seed: int, *, mode: str, alpha: float = 16.0) -> dict:
    """Play ``episodes`` episodes; ``mode`` is ``cat`` (product rule, greedy), ``greedy``, ``sample`` or ``random``."""
    env = ktd.KeyToDoor(episodes, seed)
    rng = np.random.default_rng(seed + 7)
    gen = torch.Generator().manual_seed(seed)
    n = episodes
    ids = torch.tensor(np.stack([np.full(n, ktd.BOS), env.key_tokens(), env.observation()], 1))
    rule = ProductRule(model, target=1, alpha=alpha) if mode == "cat" else None
    not_action = torch.ones(ktd.VOCAB_SIZE, dtype=torch.bool)
    not_action[ktd.ACTION_IDS] = False
    out, cache, step = None, DynamicCache(), 0
    feed = ids
    while not env.done.all():
        if mode == "random":
            a = rng.integers(0, 4, n)
        else:
            out = model.base(input_ids=feed, past_key_values=cache, use_cache=True, output_hidden_states=True)
            scores = out.logits[:, -1].float().masked_fill(not_action, float("-inf"))  # (n, V)
            if rule is not None:
                h = out.hidden_states[-1][:, -1]
                ctx = StepContext(step=step, rows=torch.arange(n), live_lengths=torch.full((n,), ids.shape[1]),
                                  prompt_lengths=torch.full((n,), 3), tokens=ids, hidden_states=(h,),
                                  backspace_id=None, eos_token_ids=())
                scores = rule(scores, ctx).masked_fill(not_action, float("-inf"))
            if mode == "sample":
                choice = torch.multinomial(scores.softmax(-1), 1, generator=gen).squeeze(1)
            else:
                choice = scores.argmax(-1)
            a = (choice - ktd.ACTION0).numpy()
        obs, _ = env.step(a)
        # same token layout as the training data: no observation inside the empty room (all episodes are in step)
        in_room2 = bool((env.phase[~env.done] == 2).all()) if (~env.done).any() else False
        feed = torch.tensor((ktd.ACTION0 + a)[:, None] if in_room2 else np.stack([ktd.ACTION0 + a, obs], 1))
        ids = torch.cat([ids, feed], 1)
        step += 1
    wins = env.success
    shortest = float((env.steps_to_win[wins] == ktd.SHORTEST_WIN).mean()) if wins.any() else 0.0
    return {"win_rate": float(wins.mean()), "wins": int(wins.sum()), "shortest_path_share": shortest}


@torch.no_grad()
def behaviour_agreement(model: AttributeModel) -> dict:
    """How well the head's ``P(win | a)`` matches the exact ``Q^β`` (:func:`~seqlevel.tasks.key_to_door.behaviour_action_values`)
    at the 100 first decisions (10 key cells x 10 start cells): the share where the head's best action is also
    best under ``Q^β`` (what greedy steering needs), and the correlation of the per-state centred values."""
    q, _ = ktd.behaviour_action_values()
    n_keys, n_starts = len(ktd._KEY_CELLS), len(ktd._START_CELLS)
    env = ktd.KeyToDoor(n_keys * n_starts)
    env.key = np.repeat(np.arange(n_keys), n_starts)
    env.pos = np.tile(np.array(ktd._START_CELLS), (n_keys, 1))
    ids = np.stack([np.full(env.n, ktd.BOS), env.key_tokens(), env.observation()], 1)
    out = model.eval()(torch.tensor(ids), all_candidates=True)
    pred = out.attribute[:, -1, ktd.ACTION_IDS, 0].float().sigmoid().numpy()
    true = q[0, env.pos[:, 0], env.pos[:, 1], env.key]  # (100, 4)
    best = true[np.arange(len(true)), pred.argmax(1)] >= true.max(1) - 1e-12
    centred = lambda x: (x - x.mean(1, keepdims=True)).ravel()  # noqa: E731
    return {"argmax_agreement": float(best.mean()), "centred_correlation": float(np.corrcoef(centred(pred),
                                                                                             centred(true))[0, 1])}


def refit(model: AttributeModel, data, seed: int, steps: int, block: int, quick: bool) -> AttributeModel:
    """Replace the jointly trained head by a fresh, wider one fitted on the frozen trunk's states at the action
    decisions (:func:`seqlevel.attributes.refit.refit_head`): joint training leaves the rare key-room decisions
    underfit (docs/results.md, issue 6)."""
    import dataclasses

    from seqlevel.attributes.refit import refit_head

    torch.manual_seed(seed)
    model.head = AttributeHead(dataclasses.replace(model.head.config, block_size=block, rank=32, query_std=0.5))
    refit_head(model, data.tokens, data.success.astype(int), candidate_ids=ktd.ACTION_IDS, steps=steps,
               batch_size=512 if quick else 8192, pad_id=ktd.PAD, seed=seed)
    return model.eval()


def run(args: argparse.Namespace) -> int:
    if args.head_refit_steps < 0 or args.head_refit_block < 1:
        raise ValueError(f"--head-refit-steps must be >= 0 and --head-refit-block >= 1, got "
                         f"{args.head_refit_steps}, {args.head_refit_block}")
    if args.alpha < 0:
        raise ValueError(f"--alpha must be >= 0, got {args.alpha}")
    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    episodes = 20 if args.quick else args.episodes
    n_train = 300 if args.quick else args.train_size
    epochs = 0.5 if args.quick else args.epochs
    per_seed, timings = [], {}
    for seed in args.seeds:
        t0 = time.perf_counter()
        data = ktd.random_trajectories(n_train, seed)
        cat = _train(data, seed, args.attribute_lambda, epochs, args.quick, consistency=args.consistency)
        ev = 10_000 + seed  # evaluation layouts differ from the training ones
        joint = None
        if args.head_refit_steps:
            joint = {"win_rate": play(cat, episodes, ev, mode="cat", alpha=args.alpha)["win_rate"],
                     "vs_exact_q": behaviour_agreement(cat)}
            cat = refit(cat, data, seed, 20 if args.quick else args.head_refit_steps, args.head_refit_block,
                        args.quick)
        if args.model_dir and seed == args.seeds[0]:
            cat.save_pretrained(args.model_dir)
        bc = _train(data, seed, 0.0, 0.5 if args.quick else args.bc_epochs, args.quick)
        pct = _train(data, seed, 0.0, epochs * 10, args.quick, successes_only=True)
        timings[str(seed)] = {"train_seconds": time.perf_counter() - t0}
        t0 = time.perf_counter()
        r = {"cat": play(cat, episodes, ev, mode="cat", alpha=args.alpha),
             "bc": play(bc, episodes, ev, mode="greedy"), "pct_bc": play(pct, episodes, ev, mode="greedy"),
             "random": play(None, episodes, ev, mode="random"),
             "bc_sampled": play(bc, episodes, ev, mode="sample"),
             "pct_bc_sampled": play(pct, episodes, ev, mode="sample")}
        timings[str(seed)]["eval_seconds"] = time.perf_counter() - t0
        r["data_success_rate"] = float(data.success.mean())
        r["cat_vs_exact_q"] = behaviour_agreement(cat)
        r["cat_joint_before_refit"] = joint
        r["exact_q_greedy"] = ktd.play_behaviour_greedy(episodes, ev)
        per_seed.append(r)
    mean = lambda k: float(np.mean([r[k]["win_rate"] for r in per_seed]))  # noqa: E731
    result = {
        "win_rate": {k: mean(k) for k in ("cat", "bc", "pct_bc", "random")},
        "episodes": episodes,
        "seeds": list(args.seeds),
        "sampled_win_rate": {"bc": mean("bc_sampled"), "pct_bc": mean("pct_bc_sampled")},
        "exact_q_greedy_win_rate": float(np.mean([r["exact_q_greedy"]["win_rate"] for r in per_seed])),
        "cat_shortest_path_share": float(np.mean([r["cat"]["shortest_path_share"] for r in per_seed])),
        "per_seed": per_seed,
        "timings": timings,
    }
    if args.json:
        print(json.dumps(result))
    else:
        w = result["win_rate"]
        print(f"Key-to-Door, {episodes} episodes x seeds {list(args.seeds)}: CAT {w['cat']:.3f}  BC {w['bc']:.3f}  "
              f"%BC {w['pct_bc']:.3f}  random {w['random']:.3f}  (sampled: BC {result['sampled_win_rate']['bc']:.3f}, "
              f"%BC {result['sampled_win_rate']['pct_bc']:.3f}); CAT shortest-path share "
              f"{result['cat_shortest_path_share']:.3f}; greedy on the exact Q^β (ceiling) "
              f"{result['exact_q_greedy_win_rate']:.3f}; CAT argmax = best action under Q^β at "
              f"{np.mean([r['cat_vs_exact_q']['argmax_agreement'] for r in per_seed]):.2f} of first decisions")
    return 0
