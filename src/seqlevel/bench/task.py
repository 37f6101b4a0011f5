"""``seqlevel bench task``: any registered task (:data:`seqlevel.tasks.TASKS`) learned by a small LM, scored exactly.

The benchmark every :class:`~seqlevel.tasks.base.Task` gets from its registry line alone: per seed, a GPT-2 trunk
(built from a config) is trained with :class:`~seqlevel.trainers.MixCETrainer` (``objective`` mle, mixce, tailr
or dft) on ``n_train`` sequences of ``task.sample``, then ``n_samples`` sequences are sampled from it after
``<bos>`` (temperature 1) and judged by the task itself:

* ``score``: the mean of each key of ``task.score`` over the model's samples (``data_score``: over fresh data);
* where the task has an exact P (``task.exact_p``): ``impossible`` = share of samples with ``P = 0``, and on fresh
  data ``model_nll`` / ``true_nll`` per token (``excess`` = their difference, a Monte-Carlo ``KL(P‖Q)`` per token).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch

from seqlevel.bench import progress
from seqlevel.trainers.mixce import OBJECTIVES


@dataclass
class Config:
    """One run of the generic task benchmark."""

    task: str = "markov"
    """Registered task name (seqlevel.tasks.TASKS): markov, arithmetic, key-to-door, reviews, or one you added."""
    objective: str = "mle"
    """Training objective of MixCETrainer: mle, mixce, tailr or dft."""
    mixce_eta: float = 0.5
    """η of MixCE (1 = MLE)."""
    seeds: tuple[int, ...] = (0,)
    """Seeds (data, model and sampling)."""
    n_train: int = 2000
    """Training sequences from task.sample."""
    n_eval: int = 500
    """Fresh data sequences for the data-side scores and NLLs."""
    n_samples: int = 500
    """Model samples scored by the task."""
    steps: int = 500
    """Optimizer steps."""
    batch_size: int = 32
    """Sequences per optimizer step."""
    learning_rate: float = 3e-3
    """Peak learning rate (cosine; the model starts from random weights)."""
    n_layer: int = 2
    """Transformer layers."""
    n_embd: int = 64
    """Model width (4 heads)."""

    def __post_init__(self):
        from seqlevel.tasks import TASKS

        if self.task.replace("_", "-") not in TASKS:
            raise ValueError(f"--task must be one of {sorted(TASKS)}, got {self.task!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"--objective must be one of {OBJECTIVES}, got {self.objective!r}")
        for name, v in (("--n-train", self.n_train), ("--n-eval", self.n_eval), ("--n-samples", self.n_samples),
                        ("--steps", self.steps), ("--batch-size", self.batch_size)):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if self.n_embd < 4 or self.n_embd % 4:
            raise ValueError(f"--n-embd must be a positive multiple of 4 (heads), got {self.n_embd}")


QUICK = Config(n_train=64, n_eval=16, n_samples=16, steps=4, n_embd=16)


def train(cfg: Config, task, data: list[list[int]], seed: int):
    """A GPT-2 trunk trained on ``data`` with ``cfg.objective``; returns the model in eval mode."""
    import datasets
    from transformers import PrinterCallback

    from seqlevel.presets import tiny_model
    from seqlevel.trainers import MixCEConfig, MixCETrainer

    longest = max(len(s) for s in data)
    model = tiny_model("tiny-gpt2", tokenizer=task.tokenizer, n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=4,
                       seed=seed, n_positions=2 * longest + 8, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    with tempfile.TemporaryDirectory(prefix="seqlevel-bench-task-") as out:
        args = MixCEConfig(output_dir=out, report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True,
                           seed=seed, max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
                           learning_rate=cfg.learning_rate, lr_scheduler_type="cosine",
                           warmup_steps=max(1, cfg.steps // 20), logging_steps=max(cfg.steps // 5, 1),
                           objective=cfg.objective, mixce_eta=cfg.mixce_eta, append_eos=False,
                           max_length=longest)
        tr = MixCETrainer(model=model, args=args, train_dataset=datasets.Dataset.from_dict({"input_ids": data}),
                          processing_class=task.tokenizer, callbacks=[progress.StepCallback()])
        tr.remove_callback(PrinterCallback)
        tr.train()
    return tr.model.eval()


def sample_model(model, task, n: int, max_len: int, seed: int) -> list[list[int]]:
    """``n`` samples after ``<bos>`` (temperature 1), each ``<bos>`` + actions up to and including ``<eos>``."""
    from seqlevel.decoding import generate

    tok = task.tokenizer
    ids = torch.full((n, 1), int(tok.bos_token_id), dtype=torch.long)
    out = generate(model, ids, torch.ones_like(ids), max_new_actions=max_len, eos_token_id=int(tok.eos_token_id),
                   do_sample=True, seed=seed)
    return [[int(tok.bos_token_id), *map(int, a)] for a in out.actions]


def _mean_scores(task, seqs: list[list[int]]) -> dict[str, float]:
    rows = [task.score(s) for s in seqs]
    return {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}


def run_seed(cfg: Config, seed: int) -> dict:
    """Train on one seed's data, sample, and score both sides with the task."""
    from seqlevel.metrics.lm import perplexity
    from seqlevel.metrics.oracle import true_nll
    from seqlevel.tasks import get_task

    task = get_task(cfg.task)
    data = task.sample(cfg.n_train, seed=seed)
    fresh = task.sample(cfg.n_eval, seed=seed + 10_000)
    t0 = time.perf_counter()
    model = train(cfg, task, data, seed)
    seconds = time.perf_counter() - t0
    samples = sample_model(model, task, cfg.n_samples, 2 * max(len(s) for s in data), seed)
    row = {"seed": seed, "train_seconds": seconds, "score": _mean_scores(task, samples),
           "data_score": _mean_scores(task, fresh),
           "model_nll": perplexity(model, fresh, pad_id=int(task.tokenizer.pad_token_id))["nll"]}
    if task.exact_p:
        row["impossible"] = true_nll(samples, task.log_prob)["impossible_fraction"]
        row["true_nll"] = float(-sum(task.log_prob(s) for s in fresh) / sum(len(s) - 1 for s in fresh))
        row["excess"] = row["model_nll"] - row["true_nll"]
    progress.note(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in list(row["score"].items())[:2]))
    return row


def run(cfg: Config) -> dict:
    """Every seed of ``cfg``; returns ``{"task", "objective", "exact_p", "per_seed": [...], "mean": {...}}``."""
    from seqlevel.tasks import get_task

    with progress.bar(f"task {cfg.task}", total=len(cfg.seeds) * cfg.steps):
        per_seed = [run_seed(cfg, s) for s in cfg.seeds]
    keys = [k for k in ("impossible", "model_nll", "true_nll", "excess") if k in per_seed[0]]
    mean = {k: float(np.mean([r[k] for r in per_seed])) for k in keys}
    mean["score"] = {k: float(np.nanmean([r["score"][k] for r in per_seed])) for k in per_seed[0]["score"]}
    mean["data_score"] = {k: float(np.nanmean([r["data_score"][k] for r in per_seed])) for k in per_seed[0]["data_score"]}
    return {"task": cfg.task, "objective": cfg.objective, "exact_p": bool(get_task(cfg.task).exact_p),
            "per_seed": per_seed, "mean": mean}


def format_result(result: dict) -> str:
    """The task's mean scores on model samples next to fresh data, and the exact NLLs where P is known."""
    m = result["mean"]
    lines = [f"task {result['task']}, objective {result['objective']}, seeds {len(result['per_seed'])}",
             f"  {'score':<14}{'model':>10}{'data':>10}"]
    for k, v in m["score"].items():
        lines.append(f"  {k:<14}{v:>10.4f}{m['data_score'].get(k, float('nan')):>10.4f}")
    if result["exact_p"]:
        lines.append(f"  impossible samples {m['impossible']:.4f}; NLL/token on data: model {m['model_nll']:.4f}, "
                     f"true {m['true_nll']:.4f}, excess {m['excess']:.4f}")
    else:
        lines.append(f"  model NLL/token on data {m['model_nll']:.4f} (no exact P for this task)")
    return "\n".join(lines)
