"""Demo section (c): CAT on Key-to-Door and on the reviews language.

Reuses the benchmarks' own runners (``seqlevel bench key-to-door``, ``attribute-estimation``, ``steering``) at a
smaller size, then explains one review with per-token attribute estimates and credits (a PNG).
"""

from __future__ import annotations

import os

from seqlevel.demo.section import Section, run_bench_json


def _argv(quick: bool, model_dir: str) -> dict[str, list[str]]:
    if quick:
        return {"key-to-door": ["--quick"],
                "attribute-estimation": ["--quick", "--model-dir", model_dir],
                "steering": ["--quick", "--model-dir", model_dir]}
    # Key-to-Door: the bench's acceptance setting (10,000 trajectories, W = 1, λ = 10, 12 CAT epochs: CAT leaves the
    # always-North plateau only after ~8 epochs), BC and %BC as in the bench, with fewer evaluations and episodes.
    # About 9 CPU-minutes: most of the demo's cost.
    return {"key-to-door": ["--episodes", "300", "--evals", "4", "--val-episodes", "100"],
            "attribute-estimation": ["--train-size", "3000", "--steps", "250", "--eval-reviews", "8",
                                     "--rollouts", "32", "--model-dir", model_dir],
            "steering": ["--samples", "20", "--model-dir", model_dir]}


def _credit_png(model_dir: str, workdir: str) -> tuple[str, bytes]:
    from transformers import AutoTokenizer

    from seqlevel.attributes import AttributeModel
    from seqlevel.attributes.explain import explain
    from seqlevel.tasks.reviews import ReviewWorld

    model = AttributeModel.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    words, stars = ReviewWorld().sample(1, seed=123)[0]
    path = os.path.join(workdir, "cat_credit.png")
    ex = explain(model, tok, " ".join(words), output_png=path)
    with open(path, "rb") as f:
        return ex.table(), f.read()


def section_cat(quick: bool, workdir: str) -> Section:
    model_dir = os.path.join(workdir, "cat_reviews")
    argv = _argv(quick, model_dir)
    ktd = run_bench_json("key-to-door", argv["key-to-door"])
    est = run_bench_json("attribute-estimation", argv["attribute-estimation"])
    steer = run_bench_json("steering", argv["steering"])
    table, png = _credit_png(model_dir, workdir)
    w = ktd["win_rate"]
    ref, cfg = ktd["heldout_bce_reference"], ktd["config"]
    lines = [
        "## Conditional Attribute Transformers",
        "",
        f"**Key-to-Door** ({ktd['episodes']} episodes; {cfg['train_size']:,} random-play trajectories, about 3% of "
        f"which win; one jointly trained CAT model, trunk {cfg['n_layer']}x{cfg['n_embd']} with context window "
        f"{cfg['context_window']}, {cfg['epochs']:g} epochs, product-rule steering; BC and %BC on the same trunk): "
        f"win rate **CAT {w['cat']:.3f}**, %BC {w['pct_bc']:.3f}, BC {w['bc']:.3f}, random {w['random']:.3f}. "
        f"CAT's held-out decision BCE {ktd['heldout_bce_final']:.4f} (constant {ref['constant']:.4f}, exact state "
        f"value alone {ref['state_value']:.4f}, exact Q^β {ref['exact_q']:.4f}).",
        "",
        f"**Estimation speed** (reviews, {est['prefixes']} prefixes, true star posteriors known exactly): "
        f"CAT Brier {est['cat']['brier']:.4f} in {est['cat']['seconds'] * 1e3:.1f} ms vs Monte-Carlo with "
        f"{est['mc']['rollouts']} rollouts Brier {est['mc']['brier']:.4f} in {est['mc']['seconds']:.1f} s: "
        f"**{est['speedup']:.0f}× faster** (the true posterior's own Brier is {est['brier_floor']:.4f}).",
        "",
        f"**Steering** ({steer['samples']} reviews per target; accuracy = share whose true posterior's most likely "
        "star is the target):",
        "",
        "| target | " + " | ".join(next(iter(steer["targets"].values())).keys()) + " |",
        "|---" * (1 + len(next(iter(steer["targets"].values())))) + "|",
    ]
    for star, row in steer["targets"].items():
        lines.append(f"| {star}★ | " + " | ".join(f"{v['accuracy']:.2f}" for v in row.values()) + " |")
    mean = {k: sum(r[k]["accuracy"] for r in steer["targets"].values()) / len(steer["targets"])
            for k in next(iter(steer["targets"].values()))}
    lines += ["", "**Credit assignment** for one review (estimate of each star after each word, and the credit of "
                  "each word):", "", "```", table, "```", "", "![credit](cat_credit.png)", ""]
    headline = [("Key-to-Door win rate: CAT / %BC / BC / random",
                 f"{w['cat']:.2f} / {w['pct_bc']:.2f} / {w['bc']:.2f} / {w['random']:.2f}"),
                (f"CAT estimation speed-up over {est['mc']['rollouts']}-rollout MC", f"{est['speedup']:.0f}x (Brier {est['cat']['brier']:.3f}"
                                                                  f" vs {est['mc']['brier']:.3f})"),
                ("steering accuracy: " + " / ".join(mean), " / ".join(f"{v:.2f}" for v in mean.values()))]
    return Section(title="cat", markdown="\n".join(lines),
                   metrics={"key_to_door": ktd, "estimation": est, "steering": steer, "headline": headline},
                   figures={"cat_credit.png": png})
