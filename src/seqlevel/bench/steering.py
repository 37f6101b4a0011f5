"""``seqlevel bench steering``: steer the ``reviews`` language to each star; score with the exact posterior.

For each target star s* and each method, ``samples`` reviews are generated from ``<bos>`` with
:func:`seqlevel.decoding.generate` (stopping at the rating token or ``<eos>``) and judged on the words before the
rating token:

* ``accuracy``: fraction whose exact posterior ``P(star | text)`` has its mode at s* (ungrammatical text fails);
* ``mean_p_target``: mean exact ``P(s* | text)``;
* ``nll``: mean true ``−log P(text)`` in nats over grammatical texts (how far steering pushes text away from the
  language), and ``invalid``: the fraction of ungrammatical texts.

Methods: ``unsteered`` (plain sampling), ``product`` (``p·P(a*|v)^α``), ``satisficing`` (the CAT demo's rule) and
``backtrack`` (product rule + attribute-guided ``<bksp>``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from seqlevel.attributes.steering import BacktrackRule, ProductRule, SatisficingRule
from seqlevel.bench import progress
from seqlevel.bench.attribute_estimation import ReviewModelConfig, review_model
from seqlevel.decoding import generate
from seqlevel.tasks.reviews import ReviewWorld


@dataclass
class Config(ReviewModelConfig):
    """Settings of the steering bench (the CAT model's settings are shared with attribute-estimation)."""

    samples: int = 200
    """Generated reviews per target star and method."""
    alpha: float = 4.0
    """α of the product rule."""
    tau: float = 0.8
    """τ of the satisficing rule (the CAT demo's 0.8)."""
    epsilon: float = 1e-2
    """ε of the satisficing rule (the CAT demo: 0.001 for a 50k vocabulary)."""
    top_k: int = 5
    """k of the satisficing rule (the CAT demo: 20 for a 50k vocabulary)."""
    backtrack_threshold: float = 0.1
    """Credit drop that triggers <bksp>."""

    def __post_init__(self):
        super().__post_init__()
        if self.alpha < 0:
            raise ValueError(f"--alpha must be >= 0, got {self.alpha}")
        if not 0 <= self.tau <= 1:
            raise ValueError(f"--tau must be in [0, 1], got {self.tau}")
        if self.samples < 1 or self.top_k < 1:
            raise ValueError(f"--samples and --top-k must be >= 1, got {self.samples} and {self.top_k}")


def score_texts(world: ReviewWorld, sequences: list[list[int]], target: int) -> dict:
    """Exact accuracy / P(target) / NLL of generated token sequences (rating token and after are dropped)."""
    hits, p_t, nll, invalid = [], [], [], 0
    for seq in sequences:
        words = world.words(seq)
        if world.label(words) is not None:
            words = words[: next(i for i, w in enumerate(words) if w.startswith("*"))]
        post = world.posterior(words)
        lp = world.log_prob(words)
        if post is None or not np.isfinite(lp):
            invalid += 1
            hits.append(0.0)
            p_t.append(0.0)
            continue
        hits.append(float(post.argmax() == target))
        p_t.append(float(post[target]))
        nll.append(-lp)
    n = max(len(sequences), 1)
    return {"accuracy": float(np.mean(hits)), "mean_p_target": float(np.mean(p_t)),
            "nll": float(np.mean(nll)) if nll else float("nan"), "invalid": invalid / n}


def run(args: Config) -> dict:
    """Train (or load) the CAT model, then generate ``samples`` reviews per target star and method; returns the
    JSON-able result and prints nothing but a progress bar."""
    with progress.bar("steering", total=20):  # 5 stars x 4 rules, plus the training steps when it trains
        return _run(args)


def _run(args: Config) -> dict:
    world = ReviewWorld()
    model, train_s = review_model(args, world)
    lm = model.base
    n = 8 if args.quick else args.samples
    tok = world.tokenizer
    prompt = torch.full((n, 1), tok.bos_token_id, dtype=torch.long)
    stop = [*world.star_ids, tok.eos_token_id]
    bksp = tok.convert_tokens_to_ids("<bksp>")
    result: dict = {"targets": {}, "samples": n, "alpha": args.alpha, "tau": args.tau, "seed": args.seed,
                    "train_seconds": train_s}
    for star in range(1, 6):
        target = star - 1
        rules = {
            "unsteered": None,
            "product": ProductRule(model, target, alpha=args.alpha),
            "satisficing": SatisficingRule(model, target, top_k=args.top_k, epsilon=args.epsilon, tau=args.tau),
            "backtrack": BacktrackRule(model, target, threshold=args.backtrack_threshold,
                                       inner=ProductRule(model, target, alpha=args.alpha)),
        }
        row = {}
        for name, rule in rules.items():
            out = generate(lm, prompt, max_new_actions=40, max_new_tokens=24, eos_token_id=stop,
                           backspace_id=bksp if name == "backtrack" else None, do_sample=True,
                           seed=args.seed + star, steer=rule)
            row[name] = score_texts(world, out.sequences, target)
            progress.advance(1, note=f"{star}★ {name}")
            if name == "backtrack":
                row[name]["backspaces_per_text"] = float(out.num_backspaces.float().mean())
        result["targets"][str(star)] = row
    return result


def format_result(result: dict) -> str:
    """Accuracy / mean P(target) / NLL (and the share of ungrammatical texts) per target star and method; says why
    when no text was grammatical (the ``--quick`` model's 30 training steps do not teach the grammar)."""
    def cell(v: dict) -> str:
        nll = "n/a" if v["nll"] != v["nll"] else f"{v['nll']:.1f}"  # NaN: no grammatical text to score
        return f"{v['accuracy']:.2f}/{v['mean_p_target']:.2f}/{nll} ({v['invalid']:.0%} invalid)"

    lines = [f"steering on reviews: {result['samples']} samples per target and method "
             "(accuracy / mean P(target) / NLL nats, and the share of ungrammatical texts)"]
    for star, row in result["targets"].items():
        lines.append(f"  {star}★  " + "  ".join(f"{k}: {cell(v)}" for k, v in row.items()))
    cells = [v for row in result["targets"].values() for v in row.values()]
    if cells and all(v["invalid"] == 1.0 for v in cells):
        lines.append("  every generated text is ungrammatical in the reviews language, so it scores accuracy 0 and "
                     "P(target) 0 and has no NLL (n/a): the model has not learnt the grammar yet (--quick trains 30 "
                     "steps, a smoke test); run without --quick (1500 steps) for meaningful numbers")
    return "\n".join(lines)
