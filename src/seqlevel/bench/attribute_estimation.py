"""``seqlevel bench attribute-estimation``: CAT's one-pass star estimate vs Monte-Carlo rollouts, on ``reviews``.

Both estimate ``P(star | prefix)`` for every prefix of held-out reviews; the ``reviews`` task gives the exact
posterior, so the scores are computed in expectation over the true label (no label noise):

* ``brier``: ``E_{y~P}[Σ_k (q_k − 1[y=k])²] = Σ_k (q_k − P_k)² + 1 − Σ_k P_k²`` (mean over prefixes; the true
  posterior itself scores ``brier_floor``);
* ``auroc``: one-vs-rest AUROC per star with each prefix counted as positive with weight ``P_k`` and negative with
  weight ``1 − P_k``, macro-averaged;
* ``seconds``: wall time to estimate all prefixes (CAT: one batched forward; MC: N rollouts per prefix with the
  same model's LM head, batched, KV cache). ``speedup`` = MC seconds / CAT seconds.

The CAT model is trained here with :class:`~seqlevel.trainers.AttributeTrainer` (or loaded from ``model_dir``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from seqlevel.attributes import AttributeModel
from seqlevel.attributes.estimate import trace
from seqlevel.attributes.monte_carlo import monte_carlo_estimate
from seqlevel.bench import progress
from seqlevel.tasks.reviews import ReviewWorld


@dataclass
class ReviewModelConfig:
    """The CAT model of the ``reviews`` world that attribute-estimation and steering share."""

    seed: int = 0
    """Seed of the training reviews, the model and the evaluation."""
    train_size: int = 20_000
    """Training reviews."""
    steps: int = 1500
    """Optimizer steps (batch 64)."""
    attribute_lambda: float = 1.0
    """λ in CE + λ·L_attr."""
    consistency: float = 0.0
    """Weight of the NADO consistency term."""
    model_dir: str | None = None
    """Load the CAT model from here if present, else train it and save it here."""
    quick: bool = False
    """Tiny configuration for tests (no acceptance numbers)."""

    def __post_init__(self):
        if self.train_size < 1 or self.steps < 1:
            raise ValueError(f"--train-size and --steps must be >= 1, got {self.train_size} and {self.steps}")


@dataclass
class Config(ReviewModelConfig):
    """Settings of the attribute-estimation bench."""

    eval_reviews: int = 100
    """Held-out reviews; every prefix is scored."""
    rollouts: int = 64
    """Monte-Carlo rollouts per prefix."""

    def __post_init__(self):
        super().__post_init__()
        if self.rollouts < 1:
            raise ValueError(f"--rollouts must be >= 1, got {self.rollouts}")
        if self.eval_reviews < 1:
            raise ValueError(f"--eval-reviews must be >= 1, got {self.eval_reviews}")


def _tokenize(world: ReviewWorld, words_list: list[list[str]]):
    enc = world.tokenizer(["<bos> " + " ".join(w) for w in words_list], return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def review_model(args: ReviewModelConfig, world: ReviewWorld) -> tuple[AttributeModel, float]:
    """The CAT model for ``reviews`` (trained with AttributeTrainer, or loaded); returns it and training seconds."""
    import datasets
    from transformers import PrinterCallback

    from seqlevel.presets import tiny_model
    from seqlevel.trainers import AttributeConfig, AttributeTrainer

    d = getattr(args, "model_dir", None)
    if d and os.path.isfile(os.path.join(d, "attribute_head_config.json")):
        return AttributeModel.from_pretrained(d).eval(), 0.0
    quick = args.quick
    n, steps = (400, 30) if quick else (args.train_size, args.steps)
    rows = world.sample(n, seed=args.seed)
    ds = datasets.Dataset.from_dict({"text": ["<bos> " + " ".join(w) for w, _ in rows],
                                     "attribute": [s - 1 for _, s in rows]})
    base = tiny_model("tiny-gpt2", tokenizer=world.tokenizer, n_embd=64, n_layer=2, n_head=4, seed=args.seed)
    out = d or os.path.join("runs", "cat_reviews_tmp")
    cfg = AttributeConfig(output_dir=out, report_to="none", max_steps=steps, per_device_train_batch_size=64,
                          learning_rate=3e-3, lr_scheduler_type="cosine", warmup_steps=min(50, steps // 10),
                          logging_steps=max(steps // 5, 1), save_strategy="no", use_cpu=True, seed=args.seed,
                          disable_tqdm=True, attribute_kind="categorical", num_classes=5,
                          attribute_lambda=args.attribute_lambda, consistency_weight=args.consistency,
                          head_rank=16, max_length=64)
    progress.grow(steps)
    progress.note("training the CAT model")
    t0 = time.perf_counter()
    tr = AttributeTrainer(base, args=cfg, train_dataset=ds, processing_class=world.tokenizer,
                          callbacks=[progress.StepCallback()])
    tr.remove_callback(PrinterCallback)  # stdout carries only the --json result
    tr.train()
    seconds = time.perf_counter() - t0
    model = tr.model.eval()
    if d:
        model.save_pretrained(d)
        world.tokenizer.save_pretrained(d)
    return model, seconds


def expected_brier(q: np.ndarray, p: np.ndarray) -> float:
    """Mean over rows of the Brier score of ``q`` in expectation over ``y ~ p`` (both ``(N, K)``)."""
    return float((((q - p) ** 2).sum(1) + 1 - (p**2).sum(1)).mean())


def expected_auroc(q: np.ndarray, p: np.ndarray) -> float:
    """Macro one-vs-rest AUROC with soft (true-probability) labels as sample weights."""
    from sklearn.metrics import roc_auc_score

    aucs = []
    N = q.shape[0]
    for k in range(q.shape[1]):
        y = np.r_[np.ones(N), np.zeros(N)]
        w = np.r_[p[:, k], 1 - p[:, k]]
        if w[:N].sum() > 0 and w[N:].sum() > 0:
            aucs.append(roc_auc_score(y, np.r_[q[:, k], q[:, k]], sample_weight=w))
    return float(np.mean(aucs))


def run(args: Config) -> dict:
    """Train (or load) the CAT model, then estimate every held-out prefix with CAT and with Monte-Carlo rollouts;
    returns the JSON-able result and prints nothing but a progress bar."""
    with progress.bar("attribute-estimation", total=2):
        return _run(args)


def _run(args: Config) -> dict:
    torch.manual_seed(args.seed)
    world = ReviewWorld()
    model, train_s = review_model(args, world)
    progress.note("estimating: CAT, then Monte-Carlo")
    n_eval, rollouts = (6, min(args.rollouts, 8)) if args.quick else (args.eval_reviews, args.rollouts)
    rows = world.sample(n_eval, seed=args.seed + 10_000)
    words = [w for w, _ in rows]
    ids, mask = _tokenize(world, words)
    where = [(i, t) for i, w in enumerate(words) for t in range(1, len(w))]  # prefix = <bos> + w[:t], star excluded
    truth = np.stack([world.posterior(words[i][:t]) for i, t in where])

    times = []
    for _ in range(3):  # median of 3: the pass is milliseconds, so timer noise matters
        t0 = time.perf_counter()
        tc = trace(model, ids, mask, with_credit=False)
        times.append(time.perf_counter() - t0)
    cat_s = float(np.median(times))
    progress.advance(1)
    q_cat = np.stack([tc.estimate[i, t].numpy() for i, t in where])

    bos = world.tokenizer.bos_token_id
    prefixes = [[bos] + world.tokenizer.convert_tokens_to_ids(words[i][:t]) for i, t in where]
    t0 = time.perf_counter()
    q_mc = monte_carlo_estimate(model.base, prefixes, lambda x: world.label(world.words(x)), 5,
                                n_rollouts=rollouts, max_new_actions=24,
                                eos_token_id=[*world.star_ids, world.tokenizer.eos_token_id],
                                pad_token_id=world.tokenizer.pad_token_id, seed=args.seed)
    mc_s = time.perf_counter() - t0
    progress.advance(1)
    return {
        "cat": {"brier": expected_brier(q_cat, truth), "auroc": expected_auroc(q_cat, truth), "seconds": cat_s,
                "mse_to_true": float(((q_cat - truth) ** 2).sum(1).mean())},
        "mc": {"brier": expected_brier(q_mc, truth), "auroc": expected_auroc(q_mc, truth), "seconds": mc_s,
               "rollouts": rollouts, "mse_to_true": float(((q_mc - truth) ** 2).sum(1).mean())},
        "speedup": mc_s / cat_s,
        "brier_floor": expected_brier(truth, truth),
        "prefixes": len(where),
        "train_seconds": train_s,
        "seed": args.seed,
    }


def format_result(result: dict) -> str:
    """Brier, AUROC, distance to the truth and time of CAT and Monte-Carlo, and the speed-up."""
    lines = [f"attribute estimation on reviews: {result['prefixes']} prefixes of held-out reviews"]
    for name in ("cat", "mc"):
        r = result[name]
        lines.append(f"  {name:3s}: brier {r['brier']:.4f}  auroc {r['auroc']:.4f}  mse-to-true {r['mse_to_true']:.4f}"
                     f"  {r['seconds']:.4f} s")
    lines.append(f"  true posterior brier (floor): {result['brier_floor']:.4f}; speedup MC/CAT: {result['speedup']:.0f}x")
    return "\n".join(lines)
