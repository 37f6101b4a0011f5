"""``seqlevel bench arithmetic``: MLE vs BC vs SequenceMatch on add-or-subtract-in-base (SequenceMatch §6.1).

Three methods, small models trained from scratch on CPU, the same number of optimizer steps each:

* ``mle``: clean data, no ``<bksp>`` in the action space;
* ``bc``: MLE (behaviour cloning) on noise-augmented data with ``<bksp>`` (the paper's BC baseline, line 235);
* ``sequencematch``: BC warm-up, then ``(1 − w)·BC + w·SM`` with replay rollouts (Algorithm 1).

With ``--pretrain-steps N`` (the paper's regime: SequenceMatch fine-tunes a model pretrained with MLE), one model
per seed is first trained with MLE on clean data for ``N`` steps, and every method fine-tunes a copy of that same
checkpoint for ``--steps`` steps: ``mle`` goes on with MLE, ``bc`` (= BC continued for the same steps, SequenceMatch's
control) trains on the noise-augmented data, ``sequencematch`` runs ``bc_warmup_steps`` of BC then ``(1 − w)·BC +
w·SM``. The fine-tunes use a constant learning rate ``finetune_lr``.

Each is scored by exact match of the final answer (backspaces applied) on held-out questions, decoding with the
backtracking decoder; and by a recovery check: the first answer action is forced to a plausible wrong character,
and ``recovery_rate`` is the fraction of those prompts where the model deletes it with ``<bksp>``.

``--json`` prints ``{"results": [{"method", "noise", "noise_type", "seed", "accuracy", "backspace_rate",
"train_seconds", ...}, ...]}`` with extra keys ``accuracy_greedy``, ``recovery_rate``, ``recovery_accuracy``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import dataclass, replace

import torch

from seqlevel.decoding.steer import ForceFirst

METHODS = ("mle", "bc", "sequencematch")


@dataclass
class BenchConfig:
    """One benchmark configuration (``--quick`` and the full one are instances)."""

    n_train: int = 5000
    n_test: int = 200
    entropy: tuple[float, float] = (1.0, 2.0)
    bases: tuple[int, int] = (2, 16)
    preset: str = "tiny-gpt2"
    model_overrides: tuple = (("n_layer", 2), ("n_embd", 64), ("n_head", 4), ("n_positions", 96),
                              ("resid_pdrop", 0.0), ("embd_pdrop", 0.0), ("attn_pdrop", 0.0))
    steps: int = 1200
    batch_size: int = 32
    lr: float = 3e-3
    bc_warmup_steps: int = 800
    sm_weight: float = 0.5
    gamma: float = 0.998  # the paper's γ (it was 0.9; the tabular instrument finds no reason to deviate)
    pretrain_steps: int = 0
    finetune_lr: float = 5e-4
    sample_every: int = 16
    rollouts_per_refresh: int = 32
    replay_batch_size: int = 4
    replay_buffer_size: int = 256
    max_new_actions: int = 16
    noises: tuple[float, ...] = (0.0, 0.1, 0.25)
    noise_type: str = "task"
    seeds: tuple[int, ...] = (0, 1)
    methods: tuple[str, ...] = METHODS
    eval_temperature: float = 1.0
    threads: int = 1


FULL = BenchConfig()
QUICK = replace(FULL, n_train=1000, n_test=100, steps=150, bc_warmup_steps=100, sample_every=8,
                rollouts_per_refresh=32, noises=(0.0, 0.3), seeds=(0,),
                model_overrides=(("n_layer", 2), ("n_embd", 48), ("n_head", 4), ("n_positions", 96),
                                 ("resid_pdrop", 0.0), ("embd_pdrop", 0.0), ("attn_pdrop", 0.0)))


def _decode(trainer, prompts, *, do_sample: bool, seed: int, steer=None):
    from seqlevel.decoding import generate

    model = trainer.model
    model.eval()
    W = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), W), trainer.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, : len(p)], mask[r, : len(p)] = torch.tensor(p), 1
    bk = trainer.backspace_id if trainer.args.use_backspace else None
    return generate(model, ids, mask, max_new_actions=trainer.args.max_new_actions, eos_token_id=trainer.eos_id,
                    backspace_id=bk, do_sample=do_sample, temperature=trainer.args.rollout_temperature, seed=seed,
                    steer=steer or trainer.ban)


def evaluate(trainer, tokenizer, test, seed: int, temperature: float) -> dict[str, float]:
    """Accuracy (sampled and greedy), backspace rate, and the recovery check on ``test`` problems."""
    from seqlevel.tasks.arithmetic import (
        decode_answer,
        encode_problem,
        exact_match,
        inject_wrong_first_digit,
    )

    trainer.args.rollout_temperature = temperature  # the eval decode uses the same sampler as the rollouts
    prompts = [encode_problem(p, tokenizer)[0] for p in test]
    answers = [p.answer for p in test]
    out = _decode(trainer, prompts, do_sample=True, seed=seed)
    acc = exact_match([decode_answer(s, tokenizer) for s in out.sequences], answers)
    n_act = int(out.num_actions.sum())
    bk_rate = float(out.num_backspaces.sum()) / max(n_act, 1)
    greedy = _decode(trainer, prompts, do_sample=False, seed=seed)
    acc_greedy = exact_match([decode_answer(s, tokenizer) for s in greedy.sequences], answers)
    # recovery: the first answer action is forced to a plausible wrong character
    rng = random.Random(f"recovery-{seed}")
    wrong = torch.tensor([int(tokenizer.convert_tokens_to_ids(inject_wrong_first_digit(p, rng))) for p in test])
    rec = _decode(trainer, prompts, do_sample=True, seed=seed + 1, steer=ForceFirst(wrong, trainer.ban))
    deleted = [_deletes_first(a, trainer.backspace_id) for a in rec.actions]
    rec_acc = exact_match([decode_answer(s, tokenizer) for s in rec.sequences], answers)
    return {"accuracy": acc, "accuracy_greedy": acc_greedy, "backspace_rate": bk_rate,
            "recovery_rate": sum(deleted) / len(deleted), "recovery_accuracy": rec_acc}


def _deletes_first(actions, backspace_id: int) -> bool:
    """Whether the first action's token is deleted by a later ``<bksp>`` (live answer length drops to 0)."""
    live = 0
    for k, a in enumerate(actions):
        if a == backspace_id:
            live = max(live - 1, 0)
            if live == 0 and k > 0:
                return True
        else:
            live += 1
    return False


def run_one(cfg: BenchConfig, method: str, noise: float, seed: int, train, test, output_dir: str,
            keep: dict | None = None, init_model=None, pretrain_seconds: float = 0.0) -> dict:
    """Train one model (from scratch, or a copy of ``init_model``) and evaluate it; returns one result row
    (``keep`` receives the trainer). ``train_seconds`` includes ``pretrain_seconds`` (the shared checkpoint's)."""
    import copy

    import datasets
    from transformers import PrinterCallback

    from seqlevel.presets import tiny_model
    from seqlevel.tasks.arithmetic import arithmetic_tokenizer, task_noise, to_dataset_dict
    from seqlevel.trainers import SequenceMatchConfig, SequenceMatchTrainer

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    tok = arithmetic_tokenizer()
    ds = datasets.Dataset.from_dict(to_dataset_dict(train, tok))
    model = (tiny_model(cfg.preset, tokenizer=tok, seed=seed, **dict(cfg.model_overrides)) if init_model is None
             else copy.deepcopy(init_model))
    finetune = init_model is not None
    is_mle = method == "mle"
    args = SequenceMatchConfig(
        output_dir=output_dir, report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, seed=seed,
        max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.finetune_lr if finetune else cfg.lr,
        lr_scheduler_type="constant" if finetune else "cosine",
        warmup_steps=0 if finetune else max(1, cfg.steps // 20), weight_decay=0.0, logging_steps=50,
        use_backspace=not is_mle, p_noise=0.0 if is_mle else noise, noise_type=cfg.noise_type,
        bc_warmup_steps=cfg.bc_warmup_steps if method == "sequencematch" else cfg.steps,
        sm_weight=cfg.sm_weight if method == "sequencematch" else 0.0, gamma=cfg.gamma,
        sample_every=cfg.sample_every, rollouts_per_refresh=cfg.rollouts_per_refresh,
        replay_batch_size=cfg.replay_batch_size, replay_buffer_size=cfg.replay_buffer_size,
        max_new_actions=cfg.max_new_actions, dataloader_drop_last=True,
    )
    trainer = SequenceMatchTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                                   noise_fn=task_noise(tok))
    trainer.remove_callback(PrinterCallback)  # stdout carries only the --json result
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    ev = evaluate(trainer, tok, test, seed=1000 + seed, temperature=cfg.eval_temperature)
    if keep is not None:
        keep.update(trainer=trainer, tokenizer=tok)
    if is_mle:
        ev["recovery_rate"] = 0.0  # no <bksp> in the action space: nothing can be repaired
    seconds += pretrain_seconds
    return {"method": method, "noise": float(noise if not is_mle else 0.0), "noise_type": cfg.noise_type,
            "seed": seed, **{k: ev[k] for k in ("accuracy", "backspace_rate")}, "train_seconds": seconds,
            **{k: ev[k] for k in ("accuracy_greedy", "recovery_rate", "recovery_accuracy")}}


def pretrain(cfg: BenchConfig, seed: int, train, output_dir: str):
    """MLE on clean data for ``cfg.pretrain_steps`` steps (cosine schedule at ``cfg.lr``): the shared checkpoint.

    Returns:
        ``(model, seconds)``.
    """
    keep: dict = {}
    pre = replace(cfg, steps=cfg.pretrain_steps, n_test=1)
    t0 = time.perf_counter()
    run_one(pre, "mle", 0.0, seed, train, train[:1], output_dir, keep=keep)
    return keep["trainer"].model, time.perf_counter() - t0


def run_bench(cfg: BenchConfig, output_dir: str = "runs/bench_arithmetic", log=print) -> dict:
    """All methods × noise levels × seeds; MLE ignores noise and runs once per seed. With ``pretrain_steps``,
    every run fine-tunes a copy of one MLE-pretrained checkpoint per seed."""
    from seqlevel.tasks.arithmetic import make_splits

    torch.set_num_threads(cfg.threads)
    train, test = make_splits(cfg.n_train, cfg.n_test, seed=0, train_entropy=cfg.entropy,
                              test_entropy=cfg.entropy, bases=cfg.bases)
    rows = []
    for seed in cfg.seeds:
        init, pre_s = pretrain(cfg, seed, train, f"{output_dir}/pretrain-{seed}") if cfg.pretrain_steps else (None, 0.0)
        for method in cfg.methods:
            for noise in ((0.0,) if method == "mle" else cfg.noises):
                row = run_one(cfg, method, noise, seed, train, test, f"{output_dir}/{method}-{noise}-{seed}",
                              init_model=init, pretrain_seconds=pre_s)
                log(f"{row['method']:>13} noise={row['noise']:.2f} seed={seed} acc={row['accuracy']:.3f} "
                    f"greedy={row['accuracy_greedy']:.3f} bksp={row['backspace_rate']:.3f} "
                    f"recovery={row['recovery_rate']:.3f} train={row['train_seconds']:.0f}s")
                rows.append(row)
    return {"results": rows, "summary": summarize(rows)}


def summarize(rows: list[dict]) -> list[dict]:
    """Mean accuracy / recovery per (method, noise) over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["noise"]), []).append(r)
    def se(key, g):
        xs = [r[key] for r in g]
        return statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else 0.0

    return [{"method": m, "noise": n, "seeds": len(g),
             "accuracy": statistics.mean(r["accuracy"] for r in g), "accuracy_se": se("accuracy", g),
             "accuracy_greedy_se": se("accuracy_greedy", g), "recovery_rate_se": se("recovery_rate", g),
             "accuracy_greedy": statistics.mean(r["accuracy_greedy"] for r in g),
             "backspace_rate": statistics.mean(r["backspace_rate"] for r in g),
             "recovery_rate": statistics.mean(r["recovery_rate"] for r in g),
             "train_seconds": statistics.mean(r["train_seconds"] for r in g)} for (m, n), g in groups.items()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small configuration (< 5 min on 2 cores)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1; quick: 0)")
    p.add_argument("--noises", type=float, nargs="+", default=None, help="noise levels p_noise")
    p.add_argument("--methods", nargs="+", default=None, choices=METHODS, help="methods to run")
    p.add_argument("--noise-type", default=None, choices=("task", "random"),
                   help="ground-truth (task) noise or random tokens (default task)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    p.add_argument("--sm-weight", type=float, default=None, help="convex weight w of SM after warm-up (default 0.5)")
    p.add_argument("--replay-buffer-size", type=int, default=None, help="rollouts kept in the replay buffer (default 256)")
    p.add_argument("--bc-warmup-steps", type=int, default=None,
                   help="BC warm-up steps of sequencematch (default 800, or 2/3 of --steps when that is smaller)")
    p.add_argument("--n-layer", type=int, default=None, help="transformer layers of the model (default 2)")
    p.add_argument("--n-embd", type=int, default=None, help="model width, a multiple of 4 heads (default 64)")
    p.add_argument("--pretrain-steps", type=int, default=None,
                   help="MLE-pretrain one model per seed for this many steps, then fine-tune copies of it with each "
                        "method for --steps steps (the paper's regime; default 0: train from scratch)")
    p.add_argument("--n-test", type=int, default=None, help="held-out questions (default 200; use >= 1000: with 200 "
                                                             "one standard error is about 3.5 points)")
    p.add_argument("--output-dir", default="runs/bench_arithmetic", help="scratch directory for the runs")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    cfg = QUICK if args.quick else FULL
    over = {}
    if args.seeds:
        over["seeds"] = tuple(args.seeds)
    if args.noises:
        bad = [n for n in args.noises if not 0.0 <= n <= 1.0]
        if bad:
            raise ValueError(f"--noises must be in [0, 1], got {bad}")
        over["noises"] = tuple(args.noises)
    if args.methods:
        over["methods"] = tuple(args.methods)
    if args.noise_type:
        over["noise_type"] = args.noise_type
    if args.sm_weight is not None:
        if not 0.0 <= args.sm_weight <= 1.0:
            raise ValueError(f"--sm-weight must be in [0, 1], got {args.sm_weight}")
        over["sm_weight"] = args.sm_weight
    if args.replay_buffer_size is not None:
        if args.replay_buffer_size < cfg.replay_batch_size:
            raise ValueError(f"--replay-buffer-size must be >= {cfg.replay_batch_size} (one batch of replay rows)")
        over["replay_buffer_size"] = args.replay_buffer_size
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}")
        over["steps"] = args.steps
        over["bc_warmup_steps"] = min(cfg.bc_warmup_steps, max(0, args.steps * 2 // 3))
    if args.bc_warmup_steps is not None:
        if not 0 <= args.bc_warmup_steps <= over.get("steps", cfg.steps):
            raise ValueError(f"--bc-warmup-steps must be in [0, --steps], got {args.bc_warmup_steps}")
        over["bc_warmup_steps"] = args.bc_warmup_steps
    if args.pretrain_steps is not None:
        if args.pretrain_steps < 0:
            raise ValueError(f"--pretrain-steps must be >= 0, got {args.pretrain_steps}")
        over["pretrain_steps"] = args.pretrain_steps
    if args.n_test is not None:
        if args.n_test < 1:
            raise ValueError(f"--n-test must be >= 1, got {args.n_test}")
        over["n_test"] = args.n_test
    model = dict(cfg.model_overrides)
    if args.n_layer is not None:
        if args.n_layer < 1:
            raise ValueError(f"--n-layer must be >= 1, got {args.n_layer}")
        model["n_layer"] = args.n_layer
    if args.n_embd is not None:
        if args.n_embd < 1 or args.n_embd % model["n_head"]:
            raise ValueError(f"--n-embd must be a positive multiple of {model['n_head']} (heads), got {args.n_embd}")
        model["n_embd"] = args.n_embd
    over["model_overrides"] = tuple(model.items())
    return replace(cfg, **over)


def run(args: argparse.Namespace) -> int:
    import sys

    cfg = config_from_args(args)
    t0 = time.perf_counter()
    result = run_bench(cfg, args.output_dir, log=lambda s: print(s, file=sys.stderr if args.json else sys.stdout))
    result["seconds"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{'method':>13} {'noise':>5} {'acc':>6} {'greedy':>6} {'bksp':>6} {'recov':>6} {'train s':>7}")
        for s in result["summary"]:
            print(f"{s['method']:>13} {s['noise']:5.2f} {s['accuracy']:6.3f} {s['accuracy_greedy']:6.3f} "
                  f"{s['backspace_rate']:6.3f} {s['recovery_rate']:6.3f} {s['train_seconds']:7.0f}")
        print(f"total {result['seconds']:.0f} s")
    return 0
