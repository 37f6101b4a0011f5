"""``seqlevel bench cat-lm``: does the attribute loss help next-token prediction? (CAT's "improves next-token
prediction at sufficient model sizes", notes §3.2.)

On the ``reviews`` world (:mod:`seqlevel.tasks.reviews`), whose true text probability is exact, the same GPT-2
trunk is trained with ``λ = 0`` (plain LM) and ``λ > 0`` (CAT: ``CE + λ·L_attr``, star rating as a 5-class
attribute) at several trunk widths and seeds, with the same data, steps and schedule. On held-out reviews drawn from
the world it reports, per token of review text (words and separators; the star token and ``<eos>`` excluded):

* ``nll``: the model's ``−log Q(text)`` per token;
* ``true_nll``: the exact ``−log P(text)`` per token (:meth:`ReviewWorld.log_prob`), the floor;
* ``excess``: ``nll − true_nll``, a Monte-Carlo estimate of ``KL(P‖Q)`` per token (lower is better).

Then per width: mean ± s.e. over seeds of each λ and the paired difference ``excess(λ) − excess(0)`` (negative =
the attribute loss helped the LM).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from seqlevel.bench import progress
from seqlevel.tasks.reviews import STAR_TOKENS, ReviewWorld


@dataclass
class Config:
    """Settings of the cat-lm bench (defaults sized for 2 shared CPU cores: 18 runs of ~1-2 min)."""

    widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    """trunk widths d (n_embd) to compare; every trunk has ``n_layer`` layers and 4 heads"""
    n_layer: int = 2
    """trunk layers"""
    lambdas: list[float] = field(default_factory=lambda: [0.0, 0.15])
    """attribute weights λ; 0 = plain LM, 0.15 = the CAT paper's best on reviews"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """training seeds (each seed also draws its own training reviews)"""
    train_size: int = 2000
    """training reviews"""
    eval_size: int = 2000
    """held-out reviews (seed 50,000) for the exact NLL"""
    steps: int = 400
    """optimizer steps per run"""
    batch_size: int = 32
    """reviews per step"""
    learning_rate: float = 3e-3
    """AdamW peak learning rate (cosine)"""
    quick: bool = False
    """tiny configuration for tests (no conclusions)"""

    def __post_init__(self):
        if not self.widths or min(self.widths) < 4 or any(w % 4 for w in self.widths):
            raise ValueError(f"widths must be multiples of 4 (4 heads), got {self.widths}")
        if not self.lambdas or min(self.lambdas) < 0 or 0.0 not in self.lambdas:
            raise ValueError(f"lambdas must be >= 0 and include 0 (the plain-LM reference), got {self.lambdas}")
        if self.steps < 1 or self.train_size < 1 or self.eval_size < 1:
            raise ValueError(f"steps, train_size and eval_size must be >= 1, got {self.steps}, {self.train_size}, "
                             f"{self.eval_size}")


@torch.no_grad()
def text_nll(model, world: ReviewWorld, rows: list[tuple[list[str], int]], chunk: int = 500) -> tuple[float, float]:
    """Per-token ``(model NLL, true NLL)`` over the text tokens of ``rows`` (star and ``<eos>`` excluded).

    The model's ``−log Q(text)`` is the sum of its next-token log-losses at the text positions after ``<bos>``;
    ``Q(text)`` is then the model's marginal over whatever follows, comparable to the exact ``P(text)``."""
    texts = [w[:-1] for w, _ in rows]  # drop the star token
    enc = world.tokenizer(["<bos> " + " ".join(w) for w in texts], return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    total = 0.0
    for lo in range(0, len(ids), chunk):
        x, m = ids[lo:lo + chunk], mask[lo:lo + chunk]
        logits = model(x, m).logits[:, :-1].float()  # (B, T-1, V)
        lp = logits.log_softmax(-1).gather(-1, x[:, 1:, None]).squeeze(-1)  # log Q(x_{t+1} | x≤t)
        total -= float((lp * m[:, 1:]).sum())
    n_tokens = int(mask[:, 1:].sum())
    true = -sum(world.log_prob(w) for w in texts)
    return total / n_tokens, true / n_tokens


def train_one(cfg: Config, world: ReviewWorld, width: int, lam: float, seed: int):
    """One trunk of width ``width`` trained with ``CE + λ·L_attr`` (the same data and steps for every λ)."""
    import datasets
    from transformers import PrinterCallback

    from seqlevel.presets import tiny_model
    from seqlevel.trainers import AttributeConfig, AttributeTrainer

    rows = world.sample(cfg.train_size, seed=seed)
    ds = datasets.Dataset.from_dict({"text": ["<bos> " + " ".join(w) for w, _ in rows],
                                     "attribute": [s - 1 for _, s in rows]})
    base = tiny_model("tiny-gpt2", tokenizer=world.tokenizer, n_embd=width, n_layer=cfg.n_layer, n_head=4, seed=seed)
    args = AttributeConfig(output_dir="runs/cat_lm_tmp", report_to="none", max_steps=cfg.steps,
                           per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                           lr_scheduler_type="cosine", warmup_steps=min(50, cfg.steps // 10),
                           logging_steps=cfg.steps, save_strategy="no", use_cpu=True, seed=seed, disable_tqdm=True,
                           attribute_kind="categorical", num_classes=len(STAR_TOKENS), attribute_lambda=lam,
                           head_rank=16, max_length=64)
    tr = AttributeTrainer(base, args=args, train_dataset=ds, processing_class=world.tokenizer,
                          callbacks=[progress.StepCallback()])
    tr.remove_callback(PrinterCallback)
    tr.train()
    return tr.model.eval()


def _one_run(cfg: Config, world: ReviewWorld, held, width: int, lam: float, seed: int) -> dict:
    model = train_one(cfg, world, width, lam, seed)
    nll, true = text_nll(model, world, held)
    progress.note(f"d={width} λ={lam:g} seed {seed}: excess {nll - true:.4f}")
    return {"width": width, "lambda": lam, "seed": seed, "nll": nll, "true_nll": true, "excess": nll - true,
            "params": sum(p.numel() for p in model.base.parameters())}


def _mean_sem(x: list[float]) -> dict:
    a = np.asarray(x, dtype=float)
    return {"mean": float(a.mean()), "sem": float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0}


def run(cfg: Config) -> dict:
    """Run the grid; returns the JSON-able result and prints nothing but a progress bar."""
    if cfg.quick:
        cfg = Config(widths=[8], lambdas=[0.0, 0.15], seeds=[0], train_size=64, eval_size=64, steps=4)
    world = ReviewWorld()
    held = world.sample(cfg.eval_size, seed=50_000)
    runs = []
    with progress.bar("cat-lm", total=len(cfg.widths) * len(cfg.seeds) * len(cfg.lambdas) * cfg.steps):
        for width in cfg.widths:
            for seed in cfg.seeds:
                for lam in cfg.lambdas:
                    runs.append(_one_run(cfg, world, held, width, lam, seed))
    table = []
    for width in cfg.widths:
        ref = {r["seed"]: r["excess"] for r in runs if r["width"] == width and r["lambda"] == 0.0}
        for lam in cfg.lambdas:
            rs = [r for r in runs if r["width"] == width and r["lambda"] == lam]
            row = {"width": width, "lambda": lam, "params": rs[0]["params"], "seeds": len(rs),
                   "nll": _mean_sem([r["nll"] for r in rs]), "excess": _mean_sem([r["excess"] for r in rs])}
            if lam != 0.0:
                row["excess_minus_lm"] = _mean_sem([r["excess"] - ref[r["seed"]] for r in rs])
            table.append(row)
    return {"true_nll_per_token": runs[0]["true_nll"], "table": table, "runs": runs, "config": asdict(cfg)}


def format_result(result: dict) -> str:
    """Excess NLL per width and λ (mean ± s.e. over seeds) and the paired difference to λ = 0."""
    lines = [f"reviews world, exact true NLL {result['true_nll_per_token']:.4f} nats/token; excess = model NLL − true"]
    for row in result["table"]:
        diff = row.get("excess_minus_lm")
        lines.append(f"d={row['width']:>4} ({row['params']:>7} params) λ={row['lambda']:<5g} excess "
                     f"{row['excess']['mean']:.4f} ± {row['excess']['sem']:.4f}"
                     + (f"   vs λ=0: {diff['mean']:+.4f} ± {diff['sem']:.4f}" if diff else ""))
    return "\n".join(lines)
