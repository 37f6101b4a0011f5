"""Demo section (c): CAT on Key-to-Door and on the reviews language.

Calls the benchmarks' own ``run(cfg)`` (:mod:`seqlevel.bench.key_to_door`, ``attribute_estimation``, ``steering``)
at a smaller size, then explains one review with per-token attribute estimates and credits (a PNG).
"""

from __future__ import annotations

import os

from seqlevel.demo.section import Section


def _configs(quick: bool, model_dir: str) -> dict:
    from seqlevel.bench import attribute_estimation, key_to_door, steering

    if quick:
        return {"key-to-door": key_to_door.Config(quick=True),
                "attribute-estimation": attribute_estimation.Config(quick=True, model_dir=model_dir),
                "steering": steering.Config(quick=True, model_dir=model_dir)}
    # Key-to-Door: the bench's setting (W = 1, λ = 10) on 3,000 trajectories for 6 epochs, so the whole demo stays
    # near its 10-minute budget (the acceptance setting, 10,000 trajectories x 12 epochs, is ~20 CPU-minutes alone).
    # CAT often stays on the "always North" plateau at this size: the report shows what it does (docs/results.md
    # has the full-size runs).
    return {"key-to-door": key_to_door.Config(train_size=3000, epochs=6, pct_bc_epochs=30, episodes=200, evals=3,
                                              val_episodes=50),
            "attribute-estimation": attribute_estimation.Config(train_size=3000, steps=250, eval_reviews=8,
                                                                rollouts=32, model_dir=model_dir),
            "steering": steering.Config(samples=20, model_dir=model_dir)}


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
    from seqlevel.bench import attribute_estimation, key_to_door, steering

    model_dir = os.path.join(workdir, "cat_reviews")
    cfg = _configs(quick, model_dir)
    ktd = key_to_door.run(cfg["key-to-door"])
    est = attribute_estimation.run(cfg["attribute-estimation"])
    steer = steering.run(cfg["steering"])
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
