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

``run(cfg)`` returns (``--json`` prints) ``{"results": [{"method", "noise", "noise_type", "seed", "accuracy", "backspace_rate",
"train_seconds", ...}, ...]}`` with extra keys ``accuracy_greedy``, ``recovery_rate``, ``recovery_accuracy``.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, replace

import torch

from seqlevel.bench import progress
from seqlevel.decoding.steer import ForceFirst

METHODS = ("mle", "bc", "sequencematch")


@dataclass
class Config:
    """One benchmark configuration (``QUICK`` for ``--quick`` and the default ``FULL`` are instances)."""

    n_train: int = 5000
    """Training questions."""
    n_test: int = 200
    """Held-out questions (use >= 1000: with 200 one standard error is about 3.5 points)."""
    entropy: tuple[float, float] = (1.0, 2.0)
    """Entropy range of the operands (train and test), as in the task's generator."""
    bases: tuple[int, int] = (2, 16)
    """Range of bases."""
    preset: str = "tiny-gpt2"
    """Model preset trained from scratch (seqlevel.presets)."""
    n_layer: int = 2
    """Transformer layers of the model."""
    n_embd: int = 64
    """Model width, a multiple of n_head."""
    n_head: int = 4
    """Attention heads."""
    steps: int = 1200
    """Optimizer steps per run."""
    batch_size: int = 32
    """Questions per optimizer step."""
    lr: float = 3e-3
    """Peak learning rate of runs from scratch (cosine)."""
    bc_warmup_steps: int | None = None
    """BC warm-up steps of sequencematch (None: 800, or 2/3 of steps when that is smaller)."""
    sm_weight: float = 0.5
    """Convex weight w of SM after warm-up."""
    gamma: float = 0.998
    """Discount γ (the paper's; the tabular instrument finds no reason to deviate)."""
    pretrain_steps: int = 0
    """MLE-pretrain one model per seed for this many steps, then fine-tune copies of it with each method for
    ``steps`` steps (the paper's regime; 0: train from scratch)."""
    finetune_lr: float = 5e-4
    """Constant learning rate of the fine-tunes (with pretrain_steps)."""
    sample_every: int = 16
    """Optimizer steps between refreshes of the rollout buffer."""
    rollouts_per_refresh: int = 32
    """Model rollouts per refresh."""
    replay_batch_size: int = 4
    """Rollouts replayed per optimizer step."""
    replay_buffer_size: int = 256
    """Rollouts kept in the replay buffer."""
    max_new_actions: int = 16
    """Cap on actions per rollout and per answer."""
    noises: tuple[float, ...] = (0.0, 0.1, 0.25)
    """Noise levels p_noise of bc and sequencematch."""
    noise_type: str = "task"
    """Ground-truth (task) noise or random tokens: task | random."""
    seeds: tuple[int, ...] = (0, 1)
    """Training seeds."""
    methods: tuple[str, ...] = METHODS
    """Subset of mle, bc, sequencematch."""
    eval_temperature: float = 1.0
    """Sampling temperature of the accuracy (greedy is reported too)."""
    threads: int = 1
    """torch CPU threads."""
    output_dir: str = "runs/bench_arithmetic"
    """Scratch directory for the runs (nothing is saved there: save_strategy='no')."""

    def __post_init__(self):
        checks = [
            (all(0.0 <= n <= 1.0 for n in self.noises), f"--noises must be in [0, 1], got {list(self.noises)}"),
            (0.0 <= self.sm_weight <= 1.0, f"--sm-weight must be in [0, 1], got {self.sm_weight}"),
            (self.steps >= 1, f"--steps must be >= 1, got {self.steps}"),
            (self.bc_warmup_steps is None or 0 <= self.bc_warmup_steps <= self.steps,
             f"--bc-warmup-steps must be in [0, --steps], got {self.bc_warmup_steps}"),
            (self.pretrain_steps >= 0, f"--pretrain-steps must be >= 0, got {self.pretrain_steps}"),
            (self.n_test >= 1, f"--n-test must be >= 1, got {self.n_test}"),
            (self.n_layer >= 1, f"--n-layer must be >= 1, got {self.n_layer}"),
            (self.n_embd >= 1 and self.n_embd % self.n_head == 0,
             f"--n-embd must be a positive multiple of {self.n_head} (heads), got {self.n_embd}"),
            (self.replay_buffer_size >= self.replay_batch_size,
             f"--replay-buffer-size must be >= {self.replay_batch_size} (one batch of replay rows)"),
            (all(m in METHODS for m in self.methods), f"--methods: choose from {','.join(METHODS)}, got "
                                                      f"{list(self.methods)}"),
            (self.noise_type in ("task", "random"), f"--noise-type must be task or random, got {self.noise_type!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    @property
    def model_overrides(self) -> tuple:
        """Keyword arguments of :func:`seqlevel.presets.tiny_model` (no dropout; 96 positions)."""
        return (("n_layer", self.n_layer), ("n_embd", self.n_embd), ("n_head", self.n_head), ("n_positions", 96),
                ("resid_pdrop", 0.0), ("embd_pdrop", 0.0), ("attn_pdrop", 0.0))

    def warmup(self) -> int:
        """The BC warm-up steps of sequencematch (``bc_warmup_steps`` resolved)."""
        return min(800, self.steps * 2 // 3) if self.bc_warmup_steps is None else self.bc_warmup_steps


BenchConfig = Config  # the name before benchmarks became Config + run(cfg)
FULL = Config()
QUICK = replace(FULL, n_train=1000, n_test=100, steps=150, sample_every=8, rollouts_per_refresh=32,
                noises=(0.0, 0.3), seeds=(0,), n_embd=48)


def decode_prompts(trainer, prompts, *, do_sample: bool, seed: int, steer=None):
    """Answers of ``trainer.model`` to the encoded ``prompts`` with the backtracking decoder (the trainer's
    ``<bksp>``, ``<eos>``, action cap, temperature and ban; ``steer`` replaces the ban)."""
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
    out = decode_prompts(trainer, prompts, do_sample=True, seed=seed)
    acc = exact_match([decode_answer(s, tokenizer) for s in out.sequences], answers)
    n_act = int(out.num_actions.sum())
    bk_rate = float(out.num_backspaces.sum()) / max(n_act, 1)
    greedy = decode_prompts(trainer, prompts, do_sample=False, seed=seed)
    acc_greedy = exact_match([decode_answer(s, tokenizer) for s in greedy.sequences], answers)
    # recovery: the first answer action is forced to a plausible wrong character
    rng = random.Random(f"recovery-{seed}")
    wrong = torch.tensor([int(tokenizer.convert_tokens_to_ids(inject_wrong_first_digit(p, rng))) for p in test])
    rec = decode_prompts(trainer, prompts, do_sample=True, seed=seed + 1, steer=ForceFirst(wrong, trainer.ban))
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


def run_one(cfg: Config, method: str, noise: float, seed: int, train, test, output_dir: str,
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
        bc_warmup_steps=cfg.warmup() if method == "sequencematch" else cfg.steps,
        sm_weight=cfg.sm_weight if method == "sequencematch" else 0.0, gamma=cfg.gamma,
        sample_every=cfg.sample_every, rollouts_per_refresh=cfg.rollouts_per_refresh,
        replay_batch_size=cfg.replay_batch_size, replay_buffer_size=cfg.replay_buffer_size,
        max_new_actions=cfg.max_new_actions, dataloader_drop_last=True,
    )
    trainer = SequenceMatchTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                                   noise_fn=task_noise(tok), callbacks=[progress.StepCallback()])
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


def pretrain(cfg: Config, seed: int, train, output_dir: str):
    """MLE on clean data for ``cfg.pretrain_steps`` steps (cosine schedule at ``cfg.lr``): the shared checkpoint.

    Returns:
        ``(model, seconds)``.
    """
    keep: dict = {}
    pre = replace(cfg, steps=cfg.pretrain_steps, n_test=1, bc_warmup_steps=None)
    t0 = time.perf_counter()
    run_one(pre, "mle", 0.0, seed, train, train[:1], output_dir, keep=keep)
    return keep["trainer"].model, time.perf_counter() - t0


def total_steps(cfg: Config) -> int:
    """Optimizer steps of all runs of ``cfg`` (the progress bar's total)."""
    runs = sum(1 if m == "mle" else len(cfg.noises) for m in cfg.methods)
    return len(cfg.seeds) * (cfg.pretrain_steps + runs * cfg.steps)


def run(cfg: Config, keep: dict | None = None) -> dict:
    """All methods × noise levels × seeds; MLE ignores noise and runs once per seed. With ``pretrain_steps``,
    every run fine-tunes a copy of one MLE-pretrained checkpoint per seed. Returns ``{"results", "summary",
    "seconds"}`` and prints nothing but a progress bar; ``keep`` (optional) receives the trainer and tokenizer of
    the last sequencematch run and the test questions, e.g. to show its repairs."""
    from seqlevel.tasks.arithmetic import make_splits

    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    train, test = make_splits(cfg.n_train, cfg.n_test, seed=0, train_entropy=cfg.entropy,
                              test_entropy=cfg.entropy, bases=cfg.bases)
    rows, out = [], cfg.output_dir
    if keep is not None:
        keep["test"] = test
    with progress.bar("arithmetic", total=total_steps(cfg)):
        for seed in cfg.seeds:
            init, pre_s = pretrain(cfg, seed, train, f"{out}/pretrain-{seed}") if cfg.pretrain_steps else (None, 0.0)
            for method in cfg.methods:
                for noise in ((0.0,) if method == "mle" else cfg.noises):
                    row = run_one(cfg, method, noise, seed, train, test, f"{out}/{method}-{noise}-{seed}",
                                  keep=keep if method == "sequencematch" else None, init_model=init,
                                  pretrain_seconds=pre_s)
                    progress.note(f"{method} noise {noise:g} seed {seed}: accuracy {row['accuracy']:.3f}")
                    rows.append(row)
    return {"results": rows, "summary": summarize(rows), "seconds": time.perf_counter() - t0}


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


def format_result(result: dict) -> str:
    """Mean accuracy, backspace and recovery rates per (method, noise) over seeds."""
    lines = [f"{'method':>13} {'noise':>5} {'acc':>6} {'greedy':>6} {'bksp':>6} {'recov':>6} {'train s':>7}"]
    for s in result["summary"]:
        lines.append(f"{s['method']:>13} {s['noise']:5.2f} {s['accuracy']:6.3f} {s['accuracy_greedy']:6.3f} "
                     f"{s['backspace_rate']:6.3f} {s['recovery_rate']:6.3f} {s['train_seconds']:7.0f}")
    lines.append(f"total {result['seconds']:.0f} s")
    return "\n".join(lines)
